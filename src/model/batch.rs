//! A ragged batch as the forward pass and attention see it: each
//! sequence's chunk of tokens, and where each token of the batch sits.

use crate::kernels::matmul::RowBatch;

/// llama.cpp's default batches: its server hands a prompt to the model
/// this many tokens at a time, and the model takes each in physical batches
/// of `LLAMA_UBATCH`.
const LLAMA_BATCH: usize = 2048;
const LLAMA_UBATCH: usize = 512;
/// How far before a prompt's end llama.cpp's server cuts it, for a model
/// with sliding-window layers, to checkpoint the window's cache there.
const LLAMA_CHECKPOINTS: [usize; 2] = [4 + LLAMA_UBATCH, 4];

/// One sequence's part of a ragged batch: `tokens` at positions
/// `start_pos..`, KV blocks in `blocks` (already covering those positions),
/// whether the last token's logits are wanted, and how long the sequence's
/// prompt is (llama.cpp's K-quant kernels depend on the batch a prompt's
/// tokens go in, and sum differently; see `RowBatch`).
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub blocks: &'a [u32],
    pub logits: bool,
    pub prompt_len: usize,
}

impl SeqChunk<'_> {
    /// The batch llama.cpp's server multiplies the token at `pos` in: a
    /// prompt's tokens in its batches (cut at `LLAMA_CHECKPOINTS` too with
    /// `checkpoints`, for a sliding-window model), each generated token
    /// alone. A sequence's results so depend on its own prompt alone, not
    /// on how Caravan's steps split it or what runs beside it.
    pub fn row_batch(&self, pos: usize, checkpoints: bool) -> RowBatch {
        let n = self.prompt_len;
        if pos >= n {
            return RowBatch::ALONE;
        }
        let (mut start, mut end) = (0, n);
        for cut in LLAMA_CHECKPOINTS.iter().filter(|_| checkpoints).map(|&before| n.saturating_sub(before)).filter(|&cut| cut > 0) {
            if pos >= cut {
                start = start.max(cut);
            } else {
                end = end.min(cut);
            }
        }
        let batch = start + (pos - start) / LLAMA_BATCH * LLAMA_BATCH;
        let ubatch = batch + (pos - batch) / LLAMA_UBATCH * LLAMA_UBATCH;
        RowBatch { rows: (end.min(batch + LLAMA_BATCH) - ubatch).min(LLAMA_UBATCH), index: pos - ubatch }
    }
}

/// Where each batch token sits: its sequence chunk and position.
#[derive(Clone, Copy)]
pub struct TokenSlot {
    pub chunk: usize,
    pub pos: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(prompt_len: usize, pos: usize, checkpoints: bool) -> (usize, usize) {
        let b = SeqChunk { tokens: &[], start_pos: 0, blocks: &[], logits: true, prompt_len }.row_batch(pos, checkpoints);
        (b.rows, b.index)
    }

    #[test]
    fn a_token_s_batch_is_the_one_llama_cpp_s_server_puts_it_in() {
        // Physical batches of 512 within batches of 2048.
        assert_eq!(at(600, 0, false), (512, 0));
        assert_eq!(at(600, 520, false), (88, 8));
        assert_eq!(at(2100, 2050, false), (52, 2));
        assert_eq!(at(2100, 1540, false), (512, 4));
        // A sliding-window model's prompt cut 516 and 4 tokens before its end.
        assert_eq!(at(600, 0, true), (84, 0));
        assert_eq!(at(600, 100, true), (512, 16));
        assert_eq!(at(600, 597, true), (4, 1));
        assert_eq!(at(5, 0, true), (1, 0));
        assert_eq!(at(5, 3, true), (4, 2));
        assert_eq!(at(4, 3, true), (4, 3));
        // Generated tokens go one at a time.
        assert_eq!(at(600, 600, true), (1, 0));
        assert_eq!(at(7, 9, false), (1, 0));
    }
}
