//! Caravan: an LLM inference server whose heart is true batching.
//! See ARCHITECTURE.md for the map of modules and the data flow.

pub mod api;
pub mod engine;
#[cfg(feature = "test-hooks")]
pub mod fuzz_targets;
pub mod generate;
pub mod gguf;
pub mod grammar;
pub mod jobs;
pub mod kernels;
pub mod kv;
pub mod loaded;
pub mod model;
pub mod sampler;
pub mod server;
pub mod stop;
pub mod store;
mod test_hooks;
pub mod tokenizer;
