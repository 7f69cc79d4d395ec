//! Log-probabilities of a drawn token as the APIs report them: the model's
//! own distribution, the log-softmax of the raw logits, before penalties,
//! a grammar's mask, temperature and cuts shape the draw (what llama.cpp's
//! server and vLLM report by default), with the likeliest alternatives.

use super::select;
use crate::kernels::expf::exp_in_place;

/// Most alternatives one token may list (OpenAI's and Ollama's limit).
pub const MAX_TOP: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    /// The drawn token's log-probability.
    pub logprob: f32,
    /// The likeliest tokens and theirs, likeliest first (ties to the lower id).
    pub top: Vec<(u32, f32)>,
}

/// `token`'s log-probability under `logits` and the `top` likeliest
/// tokens'; `weights` is scratch. The sum is taken in f64: in f32 a large
/// vocabulary's smallest terms would be lost once the sum is large.
pub fn log_probabilities(logits: &[f32], token: u32, top: usize, weights: &mut Vec<f32>) -> TokenLogprobs {
    let max = select::max(logits);
    weights.clear();
    weights.extend(logits.iter().map(|&l| l - max));
    exp_in_place(weights);
    let log_sum = weights.iter().map(|&w| f64::from(w)).sum::<f64>().ln() as f32;
    let of = |id: u32| logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| (l - max) - log_sum);
    let mut best = Vec::new();
    if top >= logits.len() {
        best.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
    } else if top > 0 {
        select::top_k(logits, top, &mut best);
    }
    best.sort_unstable_by_key(select::rank_key);
    TokenLogprobs { token, logprob: of(token), top: best.into_iter().map(|(id, _)| (id, of(id))).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Rng;

    /// The log-softmax computed plainly in f64.
    fn exact(logits: &[f32]) -> Vec<f64> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        logits.iter().map(|&l| l as f64 - max - sum.ln()).collect()
    }

    #[test]
    fn equal_the_exact_log_softmax_and_rank_the_top() {
        let mut rng = Rng(11);
        let mut weights = Vec::new();
        for len in [1usize, 5, 17, 49_152, 151_936] {
            let logits: Vec<f32> = (0..len).map(|_| rng.next_f32() * 30.0 - 10.0).collect();
            let want = exact(&logits);
            let token = (len / 3) as u32;
            let got = log_probabilities(&logits, token, 5, &mut weights);
            assert!((got.logprob as f64 - want[token as usize]).abs() < 1e-5, "len {len}");
            let mut order: Vec<usize> = (0..len).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let ids: Vec<u32> = got.top.iter().map(|&(id, _)| id).collect();
            assert_eq!(ids, order.iter().take(5).map(|&i| i as u32).collect::<Vec<_>>(), "len {len}");
            for &(id, lp) in &got.top {
                assert!((lp as f64 - want[id as usize]).abs() < 1e-5, "len {len} id {id}");
            }
        }
    }

    #[test]
    fn ties_go_to_the_lower_id_and_none_is_empty() {
        let logits = [1.0, 3.0, 3.0, 2.0, 3.0];
        let mut weights = Vec::new();
        let got = log_probabilities(&logits, 0, 2, &mut weights);
        assert_eq!(got.top.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [1, 2]);
        let all = log_probabilities(&logits, 3, 9, &mut weights);
        assert_eq!(all.top.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [1, 2, 4, 3, 0]);
        let total: f64 = all.top.iter().map(|&(_, lp)| (lp as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(log_probabilities(&logits, 3, 0, &mut weights).top.is_empty());
    }
}
