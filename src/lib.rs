//! Caravan: an LLM inference server whose heart is true batching.
//! See ARCHITECTURE.md for the map of modules and the data flow.

pub mod gguf;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod tokenizer;
pub mod store;
pub mod sampler;
pub mod stop;
pub mod generate;
pub mod loaded;
pub mod engine;
pub mod api;
pub mod server;
pub mod fuzz_targets;
