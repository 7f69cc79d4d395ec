//! Models: configuration read from GGUF metadata, weights, and the forward
//! pass over a ragged batch.

pub mod attention;
pub mod llama;
mod load;

pub use llama::{Model, ModelConfig, Scratch, SeqChunk, TokenSlot};
