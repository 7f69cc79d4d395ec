//! Faithfulness against reference outputs from an independent implementation
//! (llama.cpp) on the same GGUF: tokenization, chat rendering, greedy tokens;
//! and batch invariance of the ragged forward pass.

mod common;

use caravan::generate::{generate, GenRequest};
use caravan::sampler::SamplingParams;
use caravan::tokenizer::template::Message;
use common::{golden, model};

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenRequest {
    GenRequest { prompt, params: SamplingParams::greedy(), max_tokens, stop: vec![], ignore_eos: false }
}

#[test]
fn tokenization_matches_the_reference_for_every_row() {
    let m = model();
    for row in golden() {
        assert_eq!(m.tokenizer.encode(&row.prompt, true).unwrap(), row.prompt_tokens, "row {}", row.id);
        assert_eq!(m.raw_tokens(&row.prompt).unwrap(), row.prompt_tokens, "row {}: no BOS for this model", row.id);
    }
}

#[test]
fn chat_template_renders_and_tokenizes_like_the_reference() {
    let m = model();
    let chats: Vec<_> = golden().into_iter().filter(|r| r.kind == "chat").collect();
    assert_eq!(chats.len(), 7);
    for row in chats {
        let messages: Vec<Message> = row.messages.iter().map(|(r, c)| Message::new(r, c)).collect();
        assert_eq!(m.template.render(&messages, true).unwrap(), row.prompt, "row {}", row.id);
        assert_eq!(m.chat_tokens(&messages).unwrap(), row.prompt_tokens, "row {}", row.id);
    }
}

/// All golden prompts run together in one ragged batch, 16 greedy tokens each.
fn run_all_together() -> Vec<Vec<u32>> {
    let m = model();
    let rows = golden();
    let reqs: Vec<GenRequest> = rows.iter().map(|r| greedy(r.prompt_tokens.clone(), 16)).collect();
    let mut kv = m.kv_pool(rows.len() * 128, 16);
    let out = generate(m, &mut kv, &reqs, |_, _| {}).unwrap();
    assert_eq!(kv.free_blocks(), kv.total_blocks(), "every block returns to the pool");
    out.into_iter().map(|o| o.tokens).collect()
}

#[test]
fn greedy_tokens_agree_with_the_reference() {
    let rows = golden();
    let outputs = run_all_together();
    let mut prefix16 = 0;
    for (row, got) in rows.iter().zip(&outputs) {
        let top = &row.top_logprobs[0];
        let gap = top[0].1 - top[1].1;
        if gap >= 0.1 {
            assert_eq!(got[0], top[0].0, "row {}: first token (reference gap {gap:.3})", row.id);
        } else {
            assert!(got[0] == top[0].0 || got[0] == top[1].0, "row {}: first token not in the reference's top two", row.id);
        }
        let n = 16.min(row.completion_tokens.len());
        if got[..n] == row.completion_tokens[..n] {
            prefix16 += 1;
        }
    }
    let share = prefix16 as f64 / rows.len() as f64;
    println!("first 16 tokens equal the reference for {prefix16}/{} rows ({:.0}%)", rows.len(), share * 100.0);
    assert!(share >= MIN_PREFIX16_SHARE, "only {prefix16}/{} rows agree on 16 tokens", rows.len());
}

/// Measured 25/36 (69%): see README "Faithfulness" for why the remainder
/// differs (int8 activation rounding flips near-ties; the reference is no
/// closer to exact arithmetic than Caravan is).
const MIN_PREFIX16_SHARE: f64 = 0.65;

#[test]
fn a_sequence_gets_the_same_tokens_alone_and_in_a_batch() {
    let m = model();
    let rows = golden();
    let together = run_all_together();
    for i in [0usize, 5, 17, 30, 35] {
        let mut kv = m.kv_pool(256, 16);
        let alone = generate(m, &mut kv, &[greedy(rows[i].prompt_tokens.clone(), 16)], |_, _| {}).unwrap();
        assert_eq!(alone[0].tokens, together[i], "row {}", rows[i].id);
    }
}
