//! Engine settings shared by the commands that run one: flags with
//! matching CARAVAN_* environment variables.

use anyhow::{bail, Result};
use caravan::engine::EngineConfig;
use caravan::kv::KvPool;
use caravan::loaded::LoadedModel;
use caravan::store::human_bytes;

#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    /// KV pool size in bytes (e.g. 2GiB, 512MiB); default: a quarter of RAM,
    /// at most what max-seqs full contexts would use
    #[arg(long, env = "CARAVAN_KV_MEMORY", value_parser = parse_bytes)]
    pub kv_memory: Option<u64>,
    /// Tokens per KV block
    #[arg(long, env = "CARAVAN_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Most sequences running at once
    #[arg(long, env = "CARAVAN_MAX_SEQS", default_value_t = 256)]
    pub max_seqs: usize,
    /// Most tokens in one step's batch (decodes and prompt chunks)
    #[arg(long, env = "CARAVAN_MAX_BATCH_TOKENS", default_value_t = 256)]
    pub max_batch_tokens: usize,
    /// When idle, how long a new request waits for others to start with it
    #[arg(long, env = "CARAVAN_BATCH_WINDOW_MS", default_value_t = 0)]
    pub batch_window_ms: u64,
}

/// "2GiB", "512MiB", "1.5GB", "1000000" -> bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 2GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    Ok((n * mult) as u64)
}

fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl EngineArgs {
    pub fn config(&self) -> Result<EngineConfig> {
        if self.block_size == 0 || self.max_seqs == 0 || self.max_batch_tokens == 0 {
            bail!("--block-size, --max-seqs and --max-batch-tokens must be at least 1");
        }
        Ok(EngineConfig::new(self.max_batch_tokens, self.max_seqs))
    }

    pub fn batch_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.batch_window_ms)
    }

    /// The KV pool: sized from memory, not from sequences x context.
    /// `quiet` skips the line saying what it holds.
    pub fn pool(&self, m: &LoadedModel, quiet: bool) -> Result<KvPool> {
        let c = &m.model.config;
        let per_block = KvPool::bytes_per_block(c.layers, c.kv_dim(), self.block_size) as u64;
        let bytes = match self.kv_memory {
            Some(b) => b,
            None => {
                (total_ram().unwrap_or(8 << 30) / 4).min(per_block * (self.max_seqs * c.context_length).div_ceil(self.block_size) as u64)
            }
        };
        let blocks = (bytes / per_block) as usize;
        if blocks == 0 {
            bail!("--kv-memory {} holds no block (one is {})", human_bytes(bytes), human_bytes(per_block));
        }
        if !quiet {
            eprintln!(
                "KV pool: {} for {} tokens ({blocks} blocks of {})",
                human_bytes(blocks as u64 * per_block),
                blocks * self.block_size,
                self.block_size
            );
        }
        Ok(KvPool::new(c.layers, c.kv_dim(), self.block_size, blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3parsecs").is_err());
    }
}
