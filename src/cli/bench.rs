//! `caravan bench`: prefill and decode speed for B sequences run together.

use anyhow::{bail, Result};
use caravan::generate::{generate, GenRequest};
use caravan::loaded::LoadedModel;
use caravan::sampler::SamplingParams;
use caravan::store::{Store, DEFAULT_MODEL};

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
    #[arg(long, default_value = "1", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Runs per batch size; the median is reported
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Compute threads
    #[arg(long, default_value_t = super::default_threads())]
    threads: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if a.prompt == 0 || a.gen < 2 || a.repeat == 0 || a.threads == 0 || a.batch.contains(&0) {
        bail!("--prompt, --repeat, --threads and every --batch must be at least 1, --gen at least 2");
    }
    let m = LoadedModel::open(&Store::from_env().resolve(&a.model)?, a.threads)?;
    if a.prompt + a.gen > m.model.config.context_length {
        bail!("--prompt + --gen exceeds the context of {}", m.model.config.context_length);
    }
    println!("model {} | kernels {} | {} threads | prompt {} | gen {} | median of {}", a.model, m.model.isa, a.threads, a.prompt, a.gen, a.repeat);
    println!("{:>4} {:>14} {:>14} {:>14}", "B", "prefill tok/s", "decode tok/s", "total tok/s");
    for &b in &a.batch {
        let mut kv = m.kv_pool(b * (a.prompt + a.gen), 16);
        let (mut prefill, mut decode, mut total) = (vec![], vec![], vec![]);
        for run in 0..a.repeat {
            // Distinct prompts so no two sequences are the same work.
            let reqs: Vec<GenRequest> = (0..b)
                .map(|i| GenRequest {
                    prompt: (0..a.prompt).map(|j| (1000 + 7 * (i + run * b) + 13 * j) as u32 % 40000 + 100).collect(),
                    params: SamplingParams::greedy(),
                    max_tokens: a.gen,
                    stop: vec![],
                    ignore_eos: true,
                })
                .collect();
            let out = generate(&m, &mut kv, &reqs, |_, _| {})?;
            let (p, d) = (out[0].prompt_duration.as_secs_f64(), out[0].decode_duration.as_secs_f64());
            prefill.push((b * a.prompt) as f64 / p);
            decode.push((b * (a.gen - 1)) as f64 / d);
            total.push((b * (a.prompt + a.gen - 1)) as f64 / (p + d));
        }
        println!("{b:>4} {:>14.1} {:>14.1} {:>14.1}", median(prefill), median(decode), median(total));
    }
    Ok(())
}
