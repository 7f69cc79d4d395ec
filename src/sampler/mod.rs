//! Choosing the next token from logits: repeat, frequency and presence
//! penalties (over the same recent tokens, as llama.cpp), then top-k, top-p,
//! min-p and temperature, then a draw from the sequence's own seeded RNG (or
//! the argmax when temperature is 0). The order follows llama.cpp's default
//! chain, so settings mean what Ollama users expect.

pub mod logprobs;
mod select;

use crate::kernels::expf::exp_in_place;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means off.
    pub top_k: usize,
    /// 1 means off.
    pub top_p: f32,
    /// 0 means off.
    pub min_p: f32,
    /// 1 means off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted once from a recent token's logit (0 means off).
    pub presence_penalty: f32,
    /// Subtracted from a recent token's logit per occurrence (0 means off).
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl SamplingParams {
    pub fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repeat_penalty: 1.0, ..SamplingParams::default() }
    }
}

impl Default for SamplingParams {
    /// Ollama's defaults.
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// SplitMix64: tiny, fast, and the same on every platform, so a seed
/// reproduces a generation exactly.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    // Buffers reused from token to token: sampling allocates nothing
    // once they have grown.
    candidates: Vec<(u32, f32)>,
    scratch: Vec<(u32, f32)>,
    recent: Vec<u32>,
    penalized: Vec<f32>,
    weights: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng(params.seed);
        Sampler { params, rng, candidates: Vec::new(), scratch: Vec::new(), recent: Vec::new(), penalized: Vec::new(), weights: Vec::new() }
    }

    /// `token`'s log-probabilities under the raw `logits`, with the `top`
    /// likeliest alternatives (the sampler's scratch holds the weights).
    pub fn log_probabilities(&mut self, logits: &[f32], token: u32, top: usize) -> logprobs::TokenLogprobs {
        logprobs::log_probabilities(logits, token, top, &mut self.weights)
    }

    /// Picks a token; `history` is the sequence so far (prompt and output).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let logits = if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            // Each distinct recent token is penalized once, by its count,
            // in a copy.
            self.recent.clear();
            self.recent.extend_from_slice(&history[history.len().saturating_sub(p.repeat_last_n)..]);
            self.recent.sort_unstable();
            self.penalized.clear();
            self.penalized.extend_from_slice(logits);
            for run in self.recent.chunk_by(|a, b| a == b) {
                if let Some(l) = self.penalized.get_mut(run[0] as usize) {
                    *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
                    *l -= run.len() as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
            &self.penalized
        } else {
            logits
        };
        if p.temperature <= 0.0 {
            return select::argmax(logits);
        }
        let top_k = p.top_k > 0 && p.top_k < logits.len();
        if !(top_k || p.top_p < 1.0 || p.min_p > 0.0) {
            // The draw goes over the vocabulary in its own order: no sort.
            return draw(&mut self.rng, logits.iter().copied(), select::max(logits), p.temperature, &mut self.weights) as u32;
        }
        let (c, weights, scratch) = (&mut self.candidates, &mut self.weights, &mut self.scratch);
        if top_k {
            // Only the k best are sorted: selecting them is one pass over
            // the vocabulary, where sorting it all cost a sort of ~50k entries.
            select::top_k(logits, p.top_k, c);
            c.sort_unstable_by_key(select::rank_key);
            cut(p, c, weights, true);
        } else {
            // Top-p and min-p look at the likeliest first, and a logit more
            // than NEGLIGIBLE below the best cannot move their sums: those
            // are sorted, and the whole vocabulary only when a cut reaches
            // past them.
            select::at_least(logits, select::max(logits) - NEGLIGIBLE, c);
            select::sort_ranked(c, scratch);
            if !cut(p, c, weights, c.len() == logits.len()) {
                c.clear();
                c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
                select::sort_ranked(c, scratch);
                cut(p, c, weights, true);
            }
        }
        // The draw goes over the kept candidates by rank.
        let max = c.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1));
        c[draw(&mut self.rng, c.iter().map(|x| x.1), max, p.temperature, weights)].0
    }
}

/// How far below the best logit top-p and min-p stop looking, unless their
/// cut goes that far: e^-20 (2e-9) weighs less than half the last place of
/// a sum of weights that is at least 1 (the best's), so adding any number
/// of them, smallest last, leaves the sum as it is.
const NEGLIGIBLE: f32 = 20.0;

/// Cuts the `candidates`, sorted most likely first (ties to the lowest id),
/// by top-p, then min-p, with probabilities at temperature 1, as llama.cpp
/// does. False, with nothing decided, when the cut would look past the
/// candidates and they are not `complete` (all the vocabulary).
fn cut(p: &SamplingParams, c: &mut Vec<(u32, f32)>, weights: &mut Vec<f32>, complete: bool) -> bool {
    let max = c[0].1;
    weights.clear();
    weights.extend(c.iter().map(|x| x.1 - max));
    exp_in_place(weights);
    let total: f32 = weights.iter().sum();
    let mut kept = c.len();
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        match weights.iter().position(|w| {
            cum += w / total;
            cum >= p.top_p
        }) {
            Some(k) => kept = k + 1,
            None if !complete => return false,
            None => {}
        }
    }
    if p.min_p > 0.0 {
        // weights[0] is the top candidate's (unnormalized) probability, 1.
        let above = weights[..kept].iter().take_while(|&&w| w >= p.min_p).count();
        if above == c.len() && !complete {
            return false;
        }
        kept = above.max(1);
    }
    c.truncate(kept);
    true
}

/// An index into `logits` (of which `max` is the largest), drawn with
/// probability e^((l - max) / temperature) over their sum, in order.
fn draw(rng: &mut Rng, logits: impl ExactSizeIterator<Item = f32>, max: f32, temperature: f32, weights: &mut Vec<f32>) -> usize {
    let n = logits.len();
    weights.clear();
    weights.extend(logits.map(|l| (l - max) / temperature));
    exp_in_place(weights);
    let total: f32 = weights.iter().sum();
    let mut r = rng.next_f32() * total;
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    n - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Temperature and seed alone: no cut, no penalty.
    fn unfiltered(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed,
            ..SamplingParams::default()
        }
    }

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.0, 2.9]
    }

    /// The sampler's chain in its plainest form: every candidate
    /// materialized, sorted whole, the C library's `expf` one at a time.
    fn reference_sample(p: &SamplingParams, rng: &mut Rng, logits: &[f32], history: &[u32]) -> u32 {
        let mut c: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        let mut recent = std::collections::BTreeMap::<u32, f32>::new();
        for &t in &history[history.len().saturating_sub(p.repeat_last_n)..] {
            *recent.entry(t).or_default() += 1.0;
        }
        for (t, count) in recent {
            let l = &mut c[t as usize].1;
            *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
            *l -= count * p.frequency_penalty + p.presence_penalty;
        }
        if p.temperature <= 0.0 {
            return c.iter().fold((0, f32::NEG_INFINITY), |best, &x| if x.1 > best.1 { x } else { best }).0;
        }
        if p.top_k > 0 && p.top_k < c.len() || p.top_p < 1.0 || p.min_p > 0.0 {
            c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if p.top_k > 0 {
                c.truncate(p.top_k);
            }
            let w: Vec<f32> = c.iter().map(|x| (x.1 - c[0].1).exp()).collect();
            let total: f32 = w.iter().sum();
            let mut cum = 0.0;
            let top_p = w.iter().position(|w| {
                cum += w / total;
                cum >= p.top_p
            });
            let min_p = w.iter().take_while(|&&w| w >= p.min_p).count().max(1);
            c.truncate(if p.top_p < 1.0 { top_p.map_or(c.len(), |k| k + 1) } else { c.len() });
            c.truncate(if p.min_p > 0.0 { min_p } else { c.len() });
        }
        let max = c.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1));
        let w: Vec<f32> = c.iter().map(|x| ((x.1 - max) / p.temperature).exp()).collect();
        let mut r = rng.next_f32() * w.iter().sum::<f32>();
        for (x, w) in c.iter().zip(&w) {
            if r < *w {
                return x.0;
            }
            r -= w;
        }
        c[c.len() - 1].0
    }

    #[test]
    fn draws_equal_the_plain_chain_on_a_full_vocabulary() {
        let base = SamplingParams { repeat_last_n: 64, ..unfiltered(1.0, 5) };
        let settings = [
            SamplingParams::default(),
            SamplingParams::greedy(),
            SamplingParams { repeat_penalty: 1.3, ..SamplingParams::greedy() },
            base.clone(),
            SamplingParams { temperature: 0.7, repeat_penalty: 0.9, ..base.clone() },
            SamplingParams { presence_penalty: 0.4, frequency_penalty: 0.3, ..base.clone() },
            SamplingParams { repeat_penalty: 1.2, frequency_penalty: -0.5, top_k: 40, ..base.clone() },
            SamplingParams { top_p: 0.8, ..base.clone() },
            SamplingParams { min_p: 0.05, top_k: 100, ..base.clone() },
            SamplingParams { top_p: 0.5, min_p: 0.1, ..base.clone() },
            // Cuts that reach past the likeliest: the whole vocabulary sorted.
            SamplingParams { min_p: 1e-12, ..base.clone() },
            SamplingParams { top_p: 0.99999999, ..base.clone() },
        ];
        let mut gen = Rng(17);
        for p in settings {
            let (mut sampler, mut rng) = (Sampler::new(p.clone()), Rng(p.seed));
            let mut history: Vec<u32> = (0..80).map(|i| i * 613 % 49152).collect();
            for _ in 0..20 {
                // Peaked like a model's logits: a few large, many small, ties.
                let logits: Vec<f32> = (0..49152).map(|_| (gen.next_f32() * 8.0).powi(3).round() / 16.0 - 4.0).collect();
                let want = reference_sample(&p, &mut rng, &logits, &history);
                assert_eq!(sampler.sample(&logits, &history), want, "{p:?}");
                history.push(want);
            }
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        assert_eq!(Sampler::new(SamplingParams::greedy()).sample(&logits(), &[]), 1);
    }

    #[test]
    fn presence_and_frequency_penalties_count_recent_tokens_as_llama_cpp() {
        // Token 1 (3.0) was seen twice, token 5 (2.9) once, token 2 (2.5)
        // long ago, out of the window of 3.
        let history = [2, 0, 1, 5, 1];
        let p = SamplingParams { presence_penalty: 0.05, frequency_penalty: 0.1, repeat_last_n: 3, ..SamplingParams::greedy() };
        // Token 1: 3.0 - 2 x 0.2 - 0.05 = 2.55; 5: 2.9 - 0.2 - 0.05 = 2.65.
        let mut s = Sampler::new(SamplingParams { frequency_penalty: 0.2, ..p.clone() });
        assert_eq!(s.sample(&logits(), &history), 5);
        // Both 3.0 - 0.2 - 0.5 and 2.9 - 0.1 - 0.5 = 2.3, under 2's 2.5.
        let mut s = Sampler::new(SamplingParams { presence_penalty: 0.5, ..p });
        assert_eq!(s.sample(&logits(), &history), 2);
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let p = SamplingParams { repeat_penalty: 1.5, ..SamplingParams::greedy() };
        // 3.0 / 1.5 = 2.0 < 2.9, so token 5 wins.
        assert_eq!(Sampler::new(p).sample(&logits(), &[1]), 5);
    }

    #[test]
    fn top_k_keeps_the_lowest_ids_among_tied_logits() {
        // Four tied best logits at the end of the vocabulary, top-k 3, a
        // temperature that makes the kept ones about equally likely: ids
        // 496-498 are all drawn, never 499 nor any other.
        let mut logits = vec![1.0f32; 500];
        logits[496..].fill(5.0);
        let p = SamplingParams { top_k: 3, ..unfiltered(100.0, 4) };
        let mut s = Sampler::new(p);
        let draws: Vec<u32> = (0..300).map(|_| s.sample(&logits, &[])).collect();
        for id in 496..499 {
            assert!(draws.contains(&id), "{id} never drawn");
        }
        assert!(draws.iter().all(|t| (496..499).contains(t)), "{draws:?}");
    }

    #[test]
    fn without_a_cut_draws_follow_the_softmax() {
        // Odds 1:3:0 at temperature 1, no top-k/top-p/min-p (drawn in the
        // vocabulary's order, unsorted).
        let logits = [0.0f32, 3f32.ln(), -200.0];
        let p = unfiltered(1.0, 21);
        let mut s = Sampler::new(p);
        let draws: Vec<u32> = (0..4000).map(|_| s.sample(&logits, &[])).collect();
        let ones = draws.iter().filter(|&&t| t == 1).count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000 drew id 1, expected ~3000");
        assert!(!draws.contains(&2));
    }

    #[test]
    fn same_seed_same_draws_and_top_k_limits_choices() {
        let p = SamplingParams { top_k: 2, ..unfiltered(1.5, 9) };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..200).map(|_| s.sample(&logits(), &[])).collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p));
        assert!(a.iter().all(|&t| t == 1 || t == 5), "top-k 2 keeps only the two best");
        assert!(a.contains(&1) && a.contains(&5));
        assert_ne!(a, draw(&SamplingParams { seed: 10, ..p.clone() }));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        let base = unfiltered(1.0, 1);
        // Probabilities: 3.0 -> .35, 2.9 -> .32, 2.5 -> .21, ...: top-p 0.5 keeps two.
        let mut s = Sampler::new(SamplingParams { top_p: 0.5, ..base.clone() });
        assert!((0..300).map(|_| s.sample(&logits(), &[])).all(|t| t == 1 || t == 5));
        // min-p 0.7: e^(2.5-3) = 0.61 falls below, 2.9 (0.90) stays.
        let mut s = Sampler::new(SamplingParams { min_p: 0.7, ..base });
        assert!((0..300).map(|_| s.sample(&logits(), &[])).all(|t| t == 1 || t == 5));
    }
}
