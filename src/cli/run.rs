//! `caravan run [MODEL] [PROMPT]`: one generation streamed to the terminal.

use std::io::{Read, Write};

use anyhow::{bail, Result};
use caravan::engine::Priority;
use caravan::generate::{generate, GenRequest};
use caravan::sampler::SamplingParams;
use caravan::store::{Store, DEFAULT_MODEL};

use super::compute_args::ComputeArgs;

#[derive(clap::Args)]
pub struct RunArgs {
    /// [MODEL] PROMPT: with one argument, it is the prompt unless it names an
    /// installed model; with none, the prompt is read from standard input
    #[arg(num_args = 0..=2)]
    args: Vec<String>,
    /// Sampling temperature; 0 is greedy
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep only the K most likely tokens; 0 is off
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens up to this probability mass; 1 is off
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the best one; 0 is off
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalty for repeating recent tokens; 1 is off
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    /// Random seed (the same seed gives the same answer)
    #[arg(long)]
    seed: Option<u64>,
    /// Most tokens to generate; -1 runs to the end of the context
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    num_predict: i64,
    /// A system message
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as it is, without the chat template
    #[arg(long)]
    raw: bool,
    /// Print token counts and speeds when done
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

impl RunArgs {
    fn sampling(&self) -> Result<SamplingParams> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be 0 or more, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {}", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            bail!("--min-p must be in [0, 1], got {}", self.min_p);
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            bail!("--repeat-penalty must be above 0, got {}", self.repeat_penalty);
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        });
        Ok(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed,
            ..SamplingParams::default()
        })
    }
}

pub fn run(a: RunArgs) -> Result<()> {
    if a.num_predict < -1 || a.num_predict == 0 {
        bail!("--num-predict must be -1 (to the end of the context) or at least 1, got {}", a.num_predict);
    }
    if a.compute.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let params = a.sampling()?;
    let store = Store::from_env();
    let (model, prompt) = match a.args.as_slice() {
        [model, prompt] => (model.clone(), Some(prompt.clone())),
        [one] if store.find(one).ok().flatten().is_some() => (one.clone(), None),
        [prompt] => (DEFAULT_MODEL.to_string(), Some(prompt.clone())),
        _ => (DEFAULT_MODEL.to_string(), None),
    };
    let prompt = match prompt {
        Some(p) => p,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let path = store.resolve(&model)?;
    let m = a.compute.open(&path)?;
    let tokens = if a.raw { m.raw_tokens(&prompt)? } else { m.prompt_tokens(a.system.as_deref(), &prompt)? };
    let ctx = m.model.config.context_length;
    let max_tokens = if a.num_predict < 0 { ctx } else { a.num_predict as usize };
    let mut kv = m.kv_pool(ctx, 16);
    let req = GenRequest {
        prompt: tokens,
        params,
        max_tokens,
        stop: Vec::new(),
        ignore_eos: false,
        grammar: None,
        logprobs: None,
        priority: Priority::Interactive,
    };
    let mut stdout = std::io::stdout();
    let out = generate(&m, &mut kv, &[req], |_, text| {
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    })?;
    println!();
    if a.verbose {
        let o = &out[0];
        let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
        eprintln!("prompt eval count:    {} token(s)", o.prompt_tokens);
        eprintln!("prompt eval duration: {:.1} ms", o.prompt_duration.as_secs_f64() * 1e3);
        eprintln!("prompt eval rate:     {:.2} tokens/s", rate(o.prompt_tokens, o.prompt_duration));
        // The first generated token comes out of the prompt step.
        let decoded = o.tokens.len().saturating_sub(1);
        eprintln!("eval count:           {} token(s)", o.tokens.len());
        eprintln!("eval duration:        {:.1} ms", o.decode_duration.as_secs_f64() * 1e3);
        eprintln!("eval rate:            {:.2} tokens/s", rate(decoded, o.decode_duration));
        eprintln!("kernels:              {} ({} threads, {} arithmetic)", m.model.isa, m.model.pool.threads(), m.model.arithmetic);
    }
    Ok(())
}
