//! Generation for a fixed set of sequences run together: every step is one
//! ragged forward pass over all unfinished sequences (whole prompts on the
//! first step, then one token each). Prompts start from the pool's prefix
//! cache, and full blocks are offered to it as they fill. The command line's `run` and `bench`
//! and the tests use it directly.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::kv::KvPool;
use crate::loaded::LoadedModel;
use crate::model::{Scratch, SeqChunk};
use crate::sampler::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use crate::tokenizer::stream::StreamDecoder;

#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// max_tokens or the context window.
    Length,
}

#[derive(Debug, Clone)]
pub struct GenOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache, not computed.
    pub cached_tokens: usize,
    /// Time of the step that read the prompt, and of the steps after it.
    pub prompt_duration: Duration,
    pub decode_duration: Duration,
}

struct Seq<'a> {
    req: &'a GenRequest,
    sampler: Sampler,
    blocks: Vec<u32>,
    history: Vec<u32>,
    /// Tokens of `history` whose K/V are in the cache.
    cached: usize,
    /// Whether the step that finishes the prompt has run.
    prompt_done: bool,
    /// Full blocks of `history` registered in the prefix cache.
    registered: usize,
    decoder: StreamDecoder,
    stops: StopMatcher,
    out: GenOutput,
    done: bool,
}

/// Runs `reqs` together to completion; `on_text(i, piece)` receives each
/// sequence's text as it is produced.
pub fn generate(m: &LoadedModel, kv: &mut KvPool, reqs: &[GenRequest], mut on_text: impl FnMut(usize, &str)) -> Result<Vec<GenOutput>> {
    let ctx = m.model.config.context_length;
    for (i, r) in reqs.iter().enumerate() {
        if r.prompt.is_empty() {
            bail!("request {i}: the prompt is empty");
        }
        if r.prompt.len() >= ctx {
            bail!("request {i}: prompt of {} tokens does not fit the context of {ctx}", r.prompt.len());
        }
    }
    let ends = m.tokenizer.end_tokens();
    let mut seqs: Vec<Seq> = reqs
        .iter()
        .map(|r| Seq {
            req: r,
            sampler: Sampler::new(r.params.clone()),
            blocks: Vec::new(),
            history: r.prompt.clone(),
            cached: 0,
            prompt_done: false,
            registered: 0,
            decoder: StreamDecoder::default(),
            stops: StopMatcher::new(r.stop.clone()),
            out: GenOutput {
                tokens: Vec::new(),
                text: String::new(),
                finish: FinishReason::Length,
                prompt_tokens: r.prompt.len(),
                cached_tokens: 0,
                prompt_duration: Duration::ZERO,
                decode_duration: Duration::ZERO,
            },
            done: r.max_tokens == 0,
        })
        .collect();
    for s in seqs.iter_mut().filter(|s| !s.done) {
        s.cached = kv.match_prefix(&s.history, &mut s.blocks);
        s.out.cached_tokens = s.cached;
    }
    let mut scratch = Scratch::default();
    let result = run_steps(m, kv, &mut seqs, &ends, ctx, &mut scratch, &mut on_text);
    for s in seqs.iter_mut() {
        kv.release(&mut s.blocks);
    }
    result?;
    Ok(seqs.into_iter().map(|s| s.out).collect())
}

fn run_steps(
    m: &LoadedModel,
    kv: &mut KvPool,
    seqs: &mut [Seq],
    ends: &[u32],
    ctx: usize,
    scratch: &mut Scratch,
    on_text: &mut impl FnMut(usize, &str),
) -> Result<()> {
    loop {
        let active: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].done).collect();
        if active.is_empty() {
            return Ok(());
        }
        for &i in &active {
            let s = &mut seqs[i];
            kv.reserve(&mut s.blocks, s.history.len())?;
        }
        let started = Instant::now();
        let chunks: Vec<SeqChunk> = active
            .iter()
            .map(|&i| {
                let s = &seqs[i];
                SeqChunk { tokens: &s.history[s.cached..], start_pos: s.cached, blocks: &s.blocks, logits: true }
            })
            .collect();
        let logits = m.model.forward(&chunks, kv, scratch);
        let vocab = m.model.config.vocab;
        let elapsed = started.elapsed();
        for (row, &i) in active.iter().enumerate() {
            let s = &mut seqs[i];
            if s.prompt_done {
                s.out.decode_duration += elapsed;
            } else {
                s.out.prompt_duration = elapsed;
                s.prompt_done = true;
            }
            s.cached = s.history.len();
            let full = s.cached / kv.block_size();
            if full > s.registered {
                kv.register_prefix(&s.history[..full * kv.block_size()], &s.blocks);
                s.registered = full;
            }
            let token = s.sampler.sample(&logits[row * vocab..(row + 1) * vocab], &s.history);
            s.history.push(token);
            s.out.tokens.push(token);
            let mut cut_by_stop_string = false;
            if !s.req.ignore_eos && ends.contains(&token) {
                s.out.finish = FinishReason::Stop;
                s.done = true;
            } else {
                let piece = s.decoder.push(m.tokenizer.token_bytes(token));
                let (shown, stopped) = s.stops.push(&piece);
                emit(s, i, &shown, on_text);
                if stopped {
                    s.out.finish = FinishReason::Stop;
                    s.done = true;
                    cut_by_stop_string = true;
                }
            }
            if s.out.tokens.len() >= s.req.max_tokens || s.history.len() >= ctx {
                s.done = true;
            }
            if s.done && !cut_by_stop_string {
                // Text held back for a possible stop string or an unfinished
                // character is the sequence's own: show it.
                let (tail, _) = s.stops.push(&s.decoder.flush());
                let rest = tail + &s.stops.finish();
                emit(s, i, &rest, on_text);
            }
        }
    }
}

fn emit(s: &mut Seq, i: usize, text: &str, on_text: &mut impl FnMut(usize, &str)) {
    if !text.is_empty() {
        s.out.text.push_str(text);
        on_text(i, text);
    }
}
