//! Running a fixed set of requests to completion on the engine, in the
//! calling thread, all admitted together: the command line's `run` and
//! `bench` and the tests use it.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::engine::{Engine, EngineConfig, Event};
pub use crate::engine::{FinishReason, GenRequest};
use crate::kv::KvPool;
use crate::loaded::LoadedModel;
use crate::sampler::logprobs::TokenLogprobs;

#[derive(Debug, Clone)]
pub struct GenOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    /// Each token's log-probabilities, when the request asked for them.
    pub logprobs: Vec<TokenLogprobs>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache, not computed.
    pub cached_tokens: usize,
    /// Time of the steps until the first token, and of the steps after.
    pub prompt_duration: Duration,
    pub decode_duration: Duration,
}

/// Runs `reqs` together to completion; `on_text(i, piece)` receives each
/// sequence's text as it is produced.
pub fn generate(m: &LoadedModel, kv: &mut KvPool, reqs: &[GenRequest], mut on_text: impl FnMut(usize, &str)) -> Result<Vec<GenOutput>> {
    let config = EngineConfig::new(usize::MAX, reqs.len().max(1));
    let mut engine = Engine::new(m, kv, config);
    let mut streams = engine.submit(reqs.to_vec())?;
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); reqs.len()];
    let mut texts: Vec<String> = vec![String::new(); reqs.len()];
    let mut logprobs_of: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); reqs.len()];
    let mut outputs: Vec<Option<GenOutput>> = vec![None; reqs.len()];
    loop {
        let busy = engine.step();
        for (i, stream) in streams.iter_mut().enumerate() {
            while let Ok(event) = stream.events.try_recv() {
                match event {
                    Event::Started { .. } => {}
                    Event::Token { id, text, logprobs } => {
                        tokens[i].push(id);
                        logprobs_of[i].extend(logprobs);
                        if !text.is_empty() {
                            on_text(i, &text);
                            texts[i].push_str(&text);
                        }
                    }
                    Event::Failed(message) => bail!("request {i} failed: {message}"),
                    Event::Done(s) => {
                        outputs[i] = Some(GenOutput {
                            tokens: std::mem::take(&mut tokens[i]),
                            text: std::mem::take(&mut texts[i]),
                            finish: s.finish,
                            logprobs: std::mem::take(&mut logprobs_of[i]),
                            prompt_tokens: s.prompt_tokens,
                            cached_tokens: s.cached_tokens,
                            prompt_duration: s.prompt_duration,
                            decode_duration: s.decode_duration,
                        })
                    }
                }
            }
        }
        if !busy {
            break;
        }
    }
    if !engine.is_idle() {
        bail!("generation stalled: the KV pool cannot hold these sequences");
    }
    outputs.into_iter().enumerate().map(|(i, o)| o.ok_or_else(|| anyhow::anyhow!("request {i} ended without a result"))).collect()
}
