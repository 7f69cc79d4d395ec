//! The step's sampling: every sequence that has logits this step draws its
//! next token, in parallel over the compute pool, then takes it in order.
//! Samplers are independent (each has its own seeded RNG), so the draws
//! give the same tokens in any order; at temperature 1 a draw goes over
//! the whole vocabulary (about 0.2 ms, 0.5 ms with top-p), which one
//! sequence after another on the engine thread held the other core idle.

use std::sync::Mutex;

use super::sequence::Sequence;
use super::{faults_enabled, FAULT_SEED};
use crate::kernels::pool::ComputePool;
use crate::sampler::Sampler;
use crate::tokenizer::Tokenizer;

/// One sequence's draw: its sampler, history, logits row and the token.
struct Draw<'a> {
    sampler: &'a mut Sampler,
    history: &'a [u32],
    row: usize,
    /// An injected fault (tests) makes this draw panic.
    fault: bool,
    /// None when the draw panicked (a bug): the sequence fails alone.
    token: Option<u32>,
}

/// Draws and takes the next token of each `(sequence, logits row)` of
/// `picks` (a sequence at most once), taking them in `picks`' order.
pub(super) fn sample_all(pool: &ComputePool, running: &mut [Sequence], picks: &[(usize, usize)], logits: &[f32], vocab: usize, tok: &Tokenizer, ctx: usize) {
    let mut row_of = vec![None; running.len()];
    for &(seq, row) in picks {
        row_of[seq] = Some(row);
    }
    // Each picked sequence's place in `draws`.
    let mut draw_of = vec![None; running.len()];
    let mut draws = Vec::with_capacity(picks.len());
    for (seq, s) in running.iter_mut().enumerate() {
        if let Some(row) = row_of[seq] {
            draw_of[seq] = Some(draws.len());
            let fault = faults_enabled() && s.req.params.seed == FAULT_SEED;
            draws.push(Mutex::new(Draw { sampler: &mut s.sampler, history: &s.history, row, fault, token: None }));
        }
    }
    pool.run(draws.len(), &|i| {
        // Each task locks its own draw: never contended.
        let mut d = draws[i].lock().unwrap_or_else(|e| e.into_inner());
        let d = &mut *d;
        let row = &logits[d.row * vocab..(d.row + 1) * vocab];
        d.token = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if d.fault {
                panic!("injected fault");
            }
            d.sampler.sample(row, d.history)
        }))
        .ok();
    });
    let tokens: Vec<Option<u32>> = draws.into_iter().map(|d| d.into_inner().unwrap_or_else(|e| e.into_inner()).token).collect();
    for &(seq, _) in picks {
        let s = &mut running[seq];
        let taken = tokens[draw_of[seq].expect("every pick has a draw")]
            .map(|token| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.accept(token, tok, ctx))).is_ok());
        if taken != Some(true) {
            s.fail("internal error while sampling this sequence");
        }
    }
}
