//! Checks of a model against llama.cpp's reference rows (../data), shared
//! by the faithfulness tests of every model.

use caravan::engine::Priority;
use caravan::generate::{generate, GenRequest};
use caravan::loaded::LoadedModel;
use caravan::sampler::SamplingParams;
use caravan::tokenizer::template::Message;

use super::GoldenRow;

pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenRequest {
    GenRequest {
        prompt,
        params: SamplingParams::greedy(),
        max_tokens,
        stop: vec![],
        ignore_eos: false,
        grammar: None,
        logprobs: None,
        priority: Priority::Interactive,
    }
}

/// Every row's text tokenizes to the reference's tokens (with BOS where
/// the model adds it), and every chat row renders and tokenizes as the
/// reference did; the number of chat rows.
pub fn assert_prompts_match(m: &LoadedModel, rows: &[GoldenRow]) -> usize {
    for row in rows.iter().filter(|r| r.kind == "text") {
        assert_eq!(m.raw_tokens(&row.prompt).unwrap(), row.prompt_tokens, "row {}", row.id);
    }
    let chats: Vec<_> = rows.iter().filter(|r| r.kind == "chat").collect();
    for row in &chats {
        let messages: Vec<Message> = row.messages.iter().map(|(r, c)| Message::new(r, c)).collect();
        assert_eq!(m.template.as_ref().expect("a chat template").render(&messages, &[], true).unwrap(), row.prompt, "row {}", row.id);
        assert_eq!(m.chat_tokens(&messages, &[]).unwrap(), row.prompt_tokens, "row {}", row.id);
    }
    chats.len()
}

/// All rows' prompts run together in one ragged batch, 16 greedy tokens each.
pub fn run_all_together(m: &LoadedModel, rows: &[GoldenRow]) -> Vec<Vec<u32>> {
    let reqs: Vec<GenRequest> = rows.iter().map(|r| greedy(r.prompt_tokens.clone(), 16)).collect();
    let longest = rows.iter().map(|r| (r.prompt_tokens.len() + 16).div_ceil(16) * 16).max().unwrap_or(0);
    let mut kv = m.kv_pool(rows.len() * longest, 16);
    let out = generate(m, &mut kv, &reqs, |_, _| {}).unwrap();
    assert_eq!(kv.free_blocks(), kv.total_blocks(), "every block returns to the pool");
    out.into_iter().map(|o| o.tokens).collect()
}

/// Checks every row's first token against the reference (the same where
/// its top two are `clear_gap` or more apart, one of them otherwise) and
/// returns how many rows' first 16 tokens equal it.
pub fn agreeing_rows(rows: &[GoldenRow], outputs: &[Vec<u32>], clear_gap: f64) -> usize {
    let mut prefix16 = 0;
    for (row, got) in rows.iter().zip(outputs) {
        let top = &row.top_logprobs[0];
        let gap = top[0].1 - top[1].1;
        if gap >= clear_gap {
            assert_eq!(got[0], top[0].0, "row {}: first token (reference gap {gap:.3})", row.id);
        } else {
            assert!(got[0] == top[0].0 || got[0] == top[1].0, "row {}: first token not in the reference's top two", row.id);
        }
        let n = 16.min(row.completion_tokens.len());
        if got.get(..n) == Some(&row.completion_tokens[..n]) {
            prefix16 += 1;
        }
    }
    println!("first 16 tokens equal the reference for {prefix16}/{} rows", rows.len());
    prefix16
}

/// Log-probabilities of `ids` from `logits` as llama.cpp's server
/// computes the reference's: a softmax in f32, its sum taken over the five
/// most likely tokens first and then the rest in token order. In f32 the
/// sum drops the smallest terms once it is large (a 150k-token vocabulary
/// loses about 5e-4 of its mass), so an exact softmax would differ from
/// the reference by that much on the very same logits.
fn llama_server_log_probabilities(logits: &[f32], ids: impl Iterator<Item = u32>) -> Vec<f64> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.select_nth_unstable_by(4, |&a, &b| logits[b].total_cmp(&logits[a]));
    let mut top = order[..5].to_vec();
    top.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let max = logits[top[0]];
    let rest = (0..logits.len()).filter(|i| !top.contains(i));
    let sum = top.iter().copied().chain(rest).fold(0f32, |sum, i| sum + (logits[i] - max).exp());
    ids.map(|id| ((logits[id as usize] - max).exp() / sum).ln() as f64).collect()
}

/// Teacher-forced: the reference's own tokens fed back, the differences of
/// our log-probs of its five candidates at each of the recorded positions
/// from its own.
pub fn log_probability_differences(m: &LoadedModel, rows: &[GoldenRow]) -> Vec<f64> {
    let mut differences = Vec::new();
    for row in rows {
        let mut kv = m.kv_pool(row.prompt_tokens.len() + row.top_logprobs.len(), 16);
        let mut blocks = Vec::new();
        let mut scratch = caravan::model::Scratch::default();
        let mut seq = row.prompt_tokens.clone();
        for (step, candidates) in row.top_logprobs.iter().enumerate() {
            kv.reserve(&mut blocks, seq.len()).unwrap();
            let prompt_len = row.prompt_tokens.len();
            let chunk = caravan::model::SeqChunk { tokens: &seq, start_pos: 0, blocks: &blocks, logits: true, prompt_len };
            let logits = m.model.forward(&[chunk], &mut kv, &mut scratch);
            let ours = llama_server_log_probabilities(logits, candidates.iter().map(|&(id, _)| id));
            differences.extend(ours.iter().zip(candidates).map(|(got, &(_, want))| (got - want).abs()));
            seq.push(row.completion_tokens[step]);
        }
        kv.release(&mut blocks);
    }
    differences
}

/// Rows `which` run alone give the tokens they had in the batch of all.
pub fn assert_alone_equals_together(m: &LoadedModel, rows: &[GoldenRow], together: &[Vec<u32>], which: &[usize]) {
    for &i in which {
        let mut kv = m.kv_pool(rows[i].prompt_tokens.len() + 16, 16);
        let alone = generate(m, &mut kv, &[greedy(rows[i].prompt_tokens.clone(), 16)], |_, _| {}).unwrap();
        assert_eq!(alone[0].tokens, together[i], "row {}", rows[i].id);
    }
}

/// ggml's order on a file against llama.cpp's rows: the first token on
/// every row whose reference top two are 0.1 apart (one of the two on the
/// rest), at least 90% of the rows' first 16 tokens, log-probabilities
/// within 1e-3 (the reference rounds to 4 decimals), and rows `alone` run
/// alone as in the batch of all.
pub fn assert_equal_in_ggml_order(m: &LoadedModel, rows: &[GoldenRow], alone: &[usize]) {
    let together = run_all_together(m, rows);
    let prefix16 = agreeing_rows(rows, &together, 0.1);
    assert!(prefix16 * 10 >= rows.len() * 9, "only {prefix16} of {} rows keep their first 16 tokens", rows.len());
    let worst = log_probability_differences(m, rows).into_iter().fold(0f64, f64::max);
    assert!(worst < 1e-3, "largest log-probability difference {worst}");
    assert_alone_equals_together(m, rows, &together, alone);
}

/// The fast order, another order of ggml's arithmetic: every first token
/// among the reference's top two, at least `prefix16_at_least` rows' first
/// 16 tokens, log-probabilities under 0.12 off on average, and rows `alone`
/// run alone as in the batch of all.
pub fn assert_close_in_fast_order(m: &LoadedModel, rows: &[GoldenRow], prefix16_at_least: usize, alone: &[usize]) {
    let together = run_all_together(m, rows);
    let prefix16 = agreeing_rows(rows, &together, f64::INFINITY);
    assert!(prefix16 >= prefix16_at_least, "only {prefix16} of {} rows keep their first 16 tokens", rows.len());
    let differences = log_probability_differences(m, rows);
    let mean = differences.iter().sum::<f64>() / differences.len() as f64;
    assert!(mean < 0.12, "log-probabilities {mean:.4} off on average");
    assert_alone_equals_together(m, rows, &together, alone);
}
