//! `caravan bench`: the engine's speed and memory in the style of
//! llama.cpp's batched-bench: B sequences with their own prompts run
//! together (prefill, decode and total tokens/s), B completions of one
//! shared prompt (work and blocks), and what the KV pool holds. With
//! `--json-schema`, every row runs again with each sequence under the
//! schema, to set the grammar's cost against the same run without.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caravan::engine::{Engine, EngineConfig, Event, GenRequest, Priority};
use caravan::grammar::{Constraint, GrammarSpec};
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
    /// Also decode with every sequence under this JSON Schema (a file, or
    /// `suggestions` for a built-in one: an array of objects with a title,
    /// an enum and a bounded integer)
    #[arg(long)]
    json_schema: Option<String>,
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
    /// Tokens generated after each sequence's first.
    decoded: usize,
    /// Blocks in use and tokens held when the pool was fullest.
    blocks: usize,
    held: usize,
}

/// Runs the sequences to completion on a fresh engine.
fn run(m: &LoadedModel, kv: &mut KvPool, config: EngineConfig, gangs: Vec<Vec<GenRequest>>) -> Result<Run> {
    let mut engine = Engine::new(m, kv, config);
    let mut streams: Vec<_> = gangs.into_iter().map(|g| engine.submit(g)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    let mut firsts = vec![false; streams.len()];
    let mut generated = 0;
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
            let tokens = s.ready().filter(|e| matches!(e, Event::Token { .. })).count();
            *first |= tokens > 0;
            generated += tokens;
        }
        if prefill.is_none() && firsts.iter().all(|&f| f) {
            prefill = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let prefill = prefill.unwrap_or(total);
    Ok(Run { prefill, decode: total - prefill, decoded: generated.saturating_sub(firsts.len()), blocks, held })
}

/// The built-in schema: long enough that a sequence under it decodes
/// every token asked for.
fn suggestions_schema() -> serde_json::Value {
    let suggestion = serde_json::json!({
        "type": "object",
        "properties": {
            "title": { "type": "string" },
            "action": { "enum": ["open", "archive", "reply", "delete"] },
            "priority": { "type": "integer", "minimum": 1, "maximum": 5 },
        },
        "required": ["title", "action", "priority"],
    });
    serde_json::json!({
        "type": "object",
        "properties": { "suggestions": { "type": "array", "items": suggestion, "minItems": 100 } },
        "required": ["suggestions"],
    })
}

fn read_schema(arg: &str) -> Result<serde_json::Value> {
    if arg == "suggestions" {
        return Ok(suggestions_schema());
    }
    let text = std::fs::read_to_string(arg).with_context(|| format!("reading --json-schema {arg}"))?;
    serde_json::from_str(&text).with_context(|| format!("--json-schema {arg} is not JSON"))
}

/// The schema's matcher, after timing its compiles: the first (with the
/// vocabulary's setup), one on its own (the same schema under another key)
/// and a cached one.
fn compile_timed(m: &LoadedModel, schema: serde_json::Value) -> Result<Constraint> {
    let mut again = schema.clone();
    again["description"] = "compiled again".into();
    let (spec, again) = (GrammarSpec::JsonSchema(schema), GrammarSpec::JsonSchema(again));
    let first = Instant::now();
    let grammar = m.constraint(&spec)?;
    let first = first.elapsed();
    let compile = Instant::now();
    m.constraint(&again)?;
    let compile = compile.elapsed();
    let cached = Instant::now();
    m.constraint(&spec)?;
    println!(
        "grammar: first compile {:.1} ms (with the vocabulary's setup), compiled again {:.2} ms, cached {:.1} us",
        first.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3,
        cached.elapsed().as_secs_f64() * 1e6
    );
    Ok(grammar)
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
    let grammar = a.json_schema.as_deref().map(|arg| read_schema(arg).and_then(|schema| compile_timed(&m, schema))).transpose()?;
    let request = |prompt: Vec<u32>, grammar: Option<Constraint>| GenRequest {
        prompt,
        params: SamplingParams::greedy(),
        max_tokens: a.gen,
        stop: vec![],
        ignore_eos: true,
        grammar,
        logprobs: None,
        priority: Priority::Interactive,
    };
    let greedy = |prompt: Vec<u32>| request(prompt, None);
    println!(
        "model {} | kernels {} | arithmetic {} | {} threads | prompt {} | gen {} | median of {}",
        a.model, m.model.isa, m.model.arithmetic, a.compute.threads, a.prompt, a.gen, a.repeat
    );
    let schema_header = if grammar.is_some() { format!(" {:>14} {:>9}", "schema tok/s", "of free") } else { String::new() };
    println!(
        "{:>4} {:>14} {:>14} {:>14} {:>16} {:>12}{schema_header}",
        "B", "prefill tok/s", "decode tok/s", "total tok/s", "KV bytes/token", "KV peak"
    );
    for &b in &a.batch {
        // All prompts in one step, then decoding together, as llama.cpp's
        // batched-bench measures: the phases stay apart.
        let config = EngineConfig::new(b * a.prompt, b);
        let mut kv = m.kv_pool(b * (a.prompt + a.gen), block);
        let (mut prefill, mut decode, mut total, mut last, mut constrained) = (vec![], vec![], vec![], None, vec![]);
        for r in 0..a.repeat {
            // The same prompts with and without the schema, in turn, so
            // that the machine's drift falls on both alike.
            if let Some(g) = &grammar {
                let gangs = (0..b).map(|i| vec![request(prompt_of(a.prompt, i + r * b), Some(g.clone()))]).collect();
                let run = run(&m, &mut kv, config, gangs)?;
                constrained.push(run.decoded as f64 / run.decode.as_secs_f64());
            }
            let gangs = (0..b).map(|i| vec![greedy(prompt_of(a.prompt, i + r * b))]).collect();
            let run = run(&m, &mut kv, config, gangs)?;
            let (p, d) = (run.prefill.as_secs_f64(), run.decode.as_secs_f64());
            prefill.push((b * a.prompt) as f64 / p);
            decode.push(run.decoded as f64 / d);
            total.push((b * (a.prompt + a.gen - 1)) as f64 / (p + d));
            last = Some(run);
        }
        let last = last.expect("repeat >= 1");
        let per_token = (last.blocks * per_block) as f64 / last.held as f64;
        let free = median(decode);
        let schema_cells = match grammar {
            Some(_) => {
                let under = median(constrained);
                format!(" {under:>14.1} {:>8.0}%", 100.0 * under / free)
            }
            None => String::new(),
        };
        println!(
            "{b:>4} {:>14.1} {free:>14.1} {:>14.1} {per_token:>16.0} {:>12}{schema_cells}",
            median(prefill),
            median(total),
            human_bytes((last.blocks * per_block) as u64)
        );
    }
    if a.shared_prompt > 0 {
        let b = *a.batch.iter().max().expect("at least one batch size");
        let shared = prompt_of(a.shared_prompt, 99_999);
        let mut kv = m.kv_pool(b * (a.shared_prompt + a.gen), block);
        let config = EngineConfig::new(a.shared_prompt, b);
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
