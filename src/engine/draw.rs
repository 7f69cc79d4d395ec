//! The step's sampling: every sequence that has logits this step draws its
//! next token, in parallel over the compute pool, then takes it in order.
//! Samplers are independent (each has its own seeded RNG), so the draws
//! give the same tokens in any order; at temperature 1 a draw goes over
//! the whole vocabulary (about 0.2 ms, 0.5 ms with top-p), which one
//! sequence after another on the engine thread held the other core idle.

use std::sync::Mutex;

use super::sequence::Sequence;
use crate::grammar::Constraint;
use crate::kernels::pool::ComputePool;
use crate::sampler::logprobs::TokenLogprobs;
use crate::sampler::Sampler;
use crate::tokenizer::Tokenizer;

/// One sequence's draw: its sampler, history, logits row and the token.
struct Draw<'a> {
    sampler: &'a mut Sampler,
    /// The sequence's grammar: the draw takes only what it allows.
    grammar: Option<&'a mut Constraint>,
    history: &'a [u32],
    row: usize,
    /// Alternatives to report with the token's log-probability, if asked.
    logprobs: Option<usize>,
    /// An injected fault (tests) makes this draw panic.
    fault: bool,
    /// An error when the grammar failed or the draw panicked (a bug): the
    /// sequence fails alone.
    token: Result<(u32, Option<TokenLogprobs>), String>,
}

/// Draws and takes the next token of each `(sequence, logits row)` of
/// `picks` (a sequence at most once), taking them in `picks`' order.
pub(super) fn sample_all(
    pool: &ComputePool,
    running: &mut [Sequence],
    picks: &[(usize, usize)],
    logits: &[f32],
    vocab: usize,
    tok: &Tokenizer,
    ctx: usize,
) {
    // Each sequence's place in `picks`; draws are made in sequence order
    // (one mutable borrow of `running` hands out every sampler).
    let mut pick_of = vec![None; running.len()];
    for (i, &(seq, _)) in picks.iter().enumerate() {
        pick_of[seq] = Some(i);
    }
    let mut draws = Vec::with_capacity(picks.len());
    for (s, pick) in running.iter_mut().zip(&pick_of) {
        if let &Some(i) = pick {
            let fault = crate::test_hooks::sequence_fails(s.req.params.seed);
            let (sampler, grammar, history, logprobs) = (&mut s.sampler, s.req.grammar.as_mut(), &s.history, s.req.logprobs);
            let token = Err(String::new());
            draws.push((i, Mutex::new(Draw { sampler, grammar, history, row: picks[i].1, logprobs, fault, token })));
        }
    }
    pool.run(draws.len(), &|d| {
        // Each task locks its own draw: never contended.
        let mut d = draws[d].1.lock().unwrap_or_else(|e| e.into_inner());
        let d = &mut *d;
        let row = &logits[d.row * vocab..(d.row + 1) * vocab];
        d.token = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if d.fault {
                panic!("injected fault");
            }
            let token = match d.grammar.as_deref_mut() {
                Some(g) => g.mask(row).map(|allowed| d.sampler.sample(allowed, d.history)).map_err(|e| e.to_string())?,
                None => d.sampler.sample(row, d.history),
            };
            // Of the raw row: what the model said, whatever shaped the draw.
            Ok((token, d.logprobs.map(|top| d.sampler.log_probabilities(row, token, top))))
        }))
        .unwrap_or_else(|_| Err("internal error while sampling this sequence".into()));
    });
    // The tokens in `picks`' order.
    let mut tokens = vec![Err(String::new()); picks.len()];
    for (i, draw) in draws {
        tokens[i] = draw.into_inner().unwrap_or_else(|e| e.into_inner()).token;
    }
    for (&(seq, _), token) in picks.iter().zip(tokens) {
        let s = &mut running[seq];
        match token {
            Ok((token, logprobs)) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.accept(token, logprobs, tok, ctx))).is_err() {
                    s.fail("internal error while sampling this sequence");
                }
            }
            Err(why) => s.fail(&why),
        }
    }
}
