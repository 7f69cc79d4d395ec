//! Models: configuration read from GGUF metadata, weights, and the forward
//! pass over a ragged batch.

pub mod attention;
mod batch;
pub mod bert;
pub mod llama;
mod load;

pub use batch::{SeqChunk, TokenSlot};
pub use llama::{Model, ModelConfig, Scratch};
pub use load::ENCODER;
