//! Models: configuration read from GGUF metadata, weights, and the forward
//! pass over a ragged batch.

mod attention;
pub mod llama;
mod load;

pub use llama::{Model, ModelConfig, Scratch, SeqChunk};
