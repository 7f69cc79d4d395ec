//! A ragged batch as the forward pass and attention see it: each
//! sequence's chunk of tokens, and where each token of the batch sits.

/// One sequence's part of a ragged batch: `tokens` at positions
/// `start_pos..`, KV blocks in `blocks` (already covering those positions),
/// and whether the last token's logits are wanted.
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub blocks: &'a [u32],
    pub logits: bool,
}

/// Where each batch token sits: its sequence chunk and position.
#[derive(Clone, Copy)]
pub struct TokenSlot {
    pub chunk: usize,
    pub pos: usize,
}
