//! How a command runs its model: compute threads and the order of the float
//! arithmetic, flags with matching CARAVAN_* environment variables.

use std::path::Path;

use anyhow::Result;
use caravan::kernels::Arithmetic;
use caravan::loaded::LoadedModel;

#[derive(clap::Args, Clone)]
pub struct ComputeArgs {
    /// Compute threads (per loaded model)
    #[arg(long, env = "CARAVAN_THREADS", default_value_t = default_threads())]
    pub threads: usize,
    /// Float arithmetic: fast (whole-block integer sums and f32 attention
    /// sums) or ggml (llama.cpp's order: greedy output equals llama.cpp's
    /// bit for bit; slower, most of all on long prompts)
    #[arg(long, env = "CARAVAN_ARITHMETIC", default_value_t = Arithmetic::Fast)]
    pub arithmetic: Arithmetic,
}

impl ComputeArgs {
    pub fn open(&self, path: &Path) -> Result<LoadedModel> {
        LoadedModel::open(path, self.threads, self.arithmetic)
    }
}

/// Worker threads for the compute pool: one per core.
fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
