//! `caravan bench`: the engine's speed and memory in the style of
//! llama.cpp's batched-bench: B sequences with their own prompts run
//! together (prefill, decode and total tokens/s), B completions of one
//! shared prompt (work and blocks), and what the KV pool holds.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use caravan::engine::{Engine, EngineConfig, Event, GenRequest};
use caravan::kv::KvPool;
use caravan::loaded::LoadedModel;
use caravan::sampler::SamplingParams;
use caravan::store::{human_bytes, Store, DEFAULT_MODEL};

use super::compute_args::ComputeArgs;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The model to measure
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Prompt tokens per sequence
    #[arg(long, default_value_t = 128)]
    prompt: usize,
    /// Generated tokens per sequence
    #[arg(long, default_value_t = 128)]
    gen: usize,
    /// Comma-separated numbers of sequences run together
    #[arg(long, default_value = "1,2,4,8,16,32,64", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Tokens of the prompt the shared-prompt row's sequences all start from (0: skip)
    #[arg(long, default_value_t = 512)]
    shared_prompt: usize,
    /// Runs per batch size; the median is reported
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[command(flatten)]
    compute: ComputeArgs,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Distinct token ids so that no two sequences share work.
fn prompt_of(len: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|j| ((1000 + 7919 * salt + 13 * j) % 40000 + 100) as u32).collect()
}

struct Run {
    prefill: Duration,
    decode: Duration,
    /// Blocks in use and tokens held when the pool was fullest.
    blocks: usize,
    held: usize,
}

/// Runs the sequences to completion on a fresh engine.
fn run(m: &LoadedModel, kv: &mut KvPool, config: EngineConfig, gangs: Vec<Vec<GenRequest>>) -> Result<Run> {
    let mut engine = Engine::new(m, kv, config);
    let mut streams: Vec<_> = gangs.into_iter().map(|g| engine.submit(g)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    let mut firsts = vec![false; streams.len()];
    let started = Instant::now();
    let mut prefill = None;
    let (mut blocks, mut held) = (0, 0);
    loop {
        let in_use = engine.kv.total_blocks() - engine.kv.free_blocks();
        if in_use > blocks {
            (blocks, held) = (in_use, engine.held_tokens());
        }
        if !engine.step() {
            break;
        }
        for (s, first) in streams.iter_mut().zip(firsts.iter_mut()) {
            *first |= s.ready().any(|e| matches!(e, Event::Token { .. }));
        }
        if prefill.is_none() && firsts.iter().all(|&f| f) {
            prefill = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let prefill = prefill.unwrap_or(total);
    Ok(Run { prefill, decode: total - prefill, blocks, held })
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if a.prompt == 0 || a.gen < 2 || a.repeat == 0 || a.compute.threads == 0 || a.batch.contains(&0) {
        bail!("--prompt, --repeat, --threads and every --batch must be at least 1, --gen at least 2");
    }
    let m = a.compute.open(&Store::from_env().resolve(&a.model)?)?;
    let c = &m.model.config;
    if a.prompt + a.gen > c.context_length || a.shared_prompt + a.gen > c.context_length {
        bail!("prompt + gen exceeds the context of {}", c.context_length);
    }
    let block = 16;
    let per_block = KvPool::bytes_per_block(c.layers, c.kv_dim(), block);
    let greedy = |prompt: Vec<u32>| GenRequest {
        prompt,
        params: SamplingParams::greedy(),
        max_tokens: a.gen,
        stop: vec![],
        ignore_eos: true,
        grammar: None,
    };
    println!(
        "model {} | kernels {} | arithmetic {} | {} threads | prompt {} | gen {} | median of {}",
        a.model, m.model.isa, m.model.arithmetic, a.compute.threads, a.prompt, a.gen, a.repeat
    );
    println!("{:>4} {:>14} {:>14} {:>14} {:>16} {:>12}", "B", "prefill tok/s", "decode tok/s", "total tok/s", "KV bytes/token", "KV peak");
    for &b in &a.batch {
        // All prompts in one step, then decoding together, as llama.cpp's
        // batched-bench measures: the phases stay apart.
        let config = EngineConfig { max_batch_tokens: b * a.prompt, max_seqs: b };
        let mut kv = m.kv_pool(b * (a.prompt + a.gen), block);
        let (mut prefill, mut decode, mut total, mut last) = (vec![], vec![], vec![], None);
        for r in 0..a.repeat {
            let gangs = (0..b).map(|i| vec![greedy(prompt_of(a.prompt, i + r * b))]).collect();
            let run = run(&m, &mut kv, config, gangs)?;
            let (p, d) = (run.prefill.as_secs_f64(), run.decode.as_secs_f64());
            prefill.push((b * a.prompt) as f64 / p);
            decode.push((b * (a.gen - 1)) as f64 / d);
            total.push((b * (a.prompt + a.gen - 1)) as f64 / (p + d));
            last = Some(run);
        }
        let last = last.expect("repeat >= 1");
        let per_token = (last.blocks * per_block) as f64 / last.held as f64;
        println!(
            "{b:>4} {:>14.1} {:>14.1} {:>14.1} {per_token:>16.0} {:>12}",
            median(prefill),
            median(decode),
            median(total),
            human_bytes((last.blocks * per_block) as u64)
        );
    }
    if a.shared_prompt > 0 {
        let b = *a.batch.iter().max().expect("at least one batch size");
        let shared = prompt_of(a.shared_prompt, 99_999);
        let mut kv = m.kv_pool(b * (a.shared_prompt + a.gen), block);
        let config = EngineConfig { max_batch_tokens: a.shared_prompt, max_seqs: b };
        let mut engine = Engine::new(&m, &mut kv, config);
        let _streams = engine.submit((0..b).map(|_| greedy(shared.clone())).collect())?;
        engine.step();
        let blocks = engine.kv.total_blocks() - engine.kv.free_blocks();
        println!(
            "shared prompt: {b} completions of one {}-token prompt: prefill computed {} tokens (unshared: {}), {blocks} KV blocks held (unshared: {})",
            a.shared_prompt,
            engine.stats().computed_tokens,
            b * a.shared_prompt,
            b * a.shared_prompt.div_ceil(block)
        );
    }
    println!(
        "memory: KV {} per token ({} per block of {block}); peak RSS {}",
        human_bytes((per_block / block) as u64),
        human_bytes(per_block as u64),
        peak_rss().map(human_bytes).unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}
