//! OpenAI's /v1/completions and /v1/chat/completions: request bodies into
//! engine requests, and results into `text_completion` / `chat.completion`
//! objects and their streamed chunks.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::fields::{fresh_seed, opt_bool, opt_f32, opt_str, opt_u64, stop_strings};
use super::tools::{self, ToolCall, Tools};
use super::{finish_name, logprobs, parse_messages, structured};
use crate::engine::{FinishReason, GenRequest, Priority};
use crate::loaded::LoadedModel;
use crate::sampler::logprobs::TokenLogprobs;
use crate::sampler::SamplingParams;
use crate::tokenizer::Tokenizer;

/// Most choices (`n`) one request may ask for.
pub const MAX_N: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// A request ready for the engine: one gang of `prompts x n` sequences,
/// prompt-major (choice `p * n + k` is the k-th answer to prompt p).
pub struct Job {
    pub kind: Kind,
    pub prompt_tokens: Vec<usize>,
    pub n: usize,
    pub requests: Vec<GenRequest>,
    pub stream: bool,
    pub include_usage: bool,
    /// The tools offered: the answers' calls are read out of their text.
    pub tools: Option<Tools>,
    /// Whether the answers carry their tokens' log-probabilities.
    pub logprobs: bool,
}

/// Fields we do not implement: asking for them is an error, not silence.
/// (`user`, `safety_identifier` and `prompt_cache_key` only identify the
/// caller or hint at caching, which is automatic here: accepted.)
const UNSUPPORTED: [&str; 12] = [
    "echo",
    "suffix",
    "functions",
    "function_call",
    "logit_bias",
    "store",
    "metadata",
    "audio",
    "prediction",
    "web_search_options",
    "reasoning_effort",
    "verbosity",
];

/// A field holding token lists as OpenAI spells them: a string, an array
/// of strings, an array of token ids, or an array of such arrays; `text`
/// and `ids` turn one string or one id array into tokens.
fn token_lists(
    body: &Value,
    key: &str,
    text: impl Fn(&str) -> Result<Vec<u32>>,
    ids: impl Fn(&[Value]) -> Result<Vec<u32>>,
) -> Result<Vec<Vec<u32>>> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(vec![text(s)?]),
        Some(Value::Array(a)) if a.is_empty() => bail!("{key} must not be empty"),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.iter().map(|s| text(s.as_str().unwrap_or_default())).collect(),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => Ok(vec![ids(a)?]),
        Some(Value::Array(a)) if a.iter().all(Value::is_array) => {
            a.iter().map(|p| ids(p.as_array().map(Vec::as_slice).unwrap_or_default())).collect()
        }
        None | Some(Value::Null) => bail!("{key} is required"),
        Some(_) => bail!("{key} must be a string, an array of strings, an array of token ids or an array of such arrays"),
    }
}

/// `prompt` of /v1/completions, as tokens: the caller's whole input, so
/// control tokens written in it count (as vLLM and llama.cpp read it).
fn completion_prompts(m: &LoadedModel, body: &Value) -> Result<Vec<Vec<u32>>> {
    let vocab = m.tokenizer.vocab_size() as u64;
    let text = |s: &str| m.raw_tokens(s);
    let ids = |a: &[Value]| -> Result<Vec<u32>> {
        a.iter()
            .map(|t| {
                t.as_u64()
                    .filter(|&t| t < vocab)
                    .map(|t| t as u32)
                    .ok_or_else(|| anyhow!("prompt token ids must be whole numbers below {vocab}"))
            })
            .collect()
    };
    token_lists(body, "prompt", text, ids)
}

/// Reads a request body. `default_max` is the max_tokens of requests that
/// set none (else: 16 for completions, the context for chat, as OpenAI);
/// `max_sequences` bounds `prompts x n`.
pub fn parse(m: &LoadedModel, kind: Kind, body: &Value, seed: u64, default_max: Option<usize>, max_sequences: usize) -> Result<Job> {
    if !body.is_object() {
        bail!("the request body must be a JSON object");
    }
    if let Some(key) = UNSUPPORTED.iter().find(|k| !matches!(body.get(**k), None | Some(Value::Null) | Some(Value::Bool(false)))) {
        bail!("{key} is not supported");
    }
    if !matches!(body.get("modalities"), None | Some(Value::Null)) && body["modalities"] != serde_json::json!(["text"]) {
        bail!("modalities is not supported beyond [\"text\"]");
    }
    if !matches!(opt_str(body, "service_tier")?, None | Some("auto" | "default")) {
        bail!("service_tier is not supported beyond \"auto\" and \"default\"");
    }
    if opt_u64(body, "best_of", 1)?.is_some_and(|b| b != 1) {
        bail!("best_of is not supported (only 1; n gives several choices)");
    }
    let tools = match kind {
        Kind::Chat => tools::parse(m, body)?,
        Kind::Completion if body.get("tools").is_some_and(|t| !t.is_null()) => bail!("tools are for chat completions"),
        Kind::Completion => None,
    };
    let prompts = match kind {
        Kind::Chat => vec![m.chat_tokens(&parse_messages(body)?, tools.as_ref().map_or(&[][..], |t| t.list.as_slice()))?],
        Kind::Completion => completion_prompts(m, body)?,
    };
    let ctx = m.model.config.context_length;
    let asked = match kind {
        Kind::Chat => opt_u64(body, "max_completion_tokens", 1)?.or(opt_u64(body, "max_tokens", 1)?).map(|n| n as usize).or(default_max),
        Kind::Completion => Some(opt_u64(body, "max_tokens", 1)?.map(|n| n as usize).or(default_max).unwrap_or(16)),
    };
    let n = opt_u64(body, "n", 1)?.unwrap_or(1) as usize;
    if n > MAX_N {
        bail!("n must be at most {MAX_N}");
    }
    if prompts.len() * n > max_sequences {
        bail!("{} prompts x n = {} sequences; the limit is {max_sequences}", prompts.len(), prompts.len() * n);
    }
    let params = SamplingParams {
        temperature: opt_f32(body, "temperature", (0.0, 2.0))?.unwrap_or(1.0),
        top_k: 0,
        top_p: opt_f32(body, "top_p", (f32::MIN_POSITIVE, 1.0))?.unwrap_or(1.0),
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        presence_penalty: opt_f32(body, "presence_penalty", (-2.0, 2.0))?.unwrap_or(0.0),
        frequency_penalty: opt_f32(body, "frequency_penalty", (-2.0, 2.0))?.unwrap_or(0.0),
        seed: opt_u64(body, "seed", 0)?.unwrap_or(seed),
    };
    let stop = stop_strings(body)?;
    let ignore_eos = opt_bool(body, "ignore_eos")?.unwrap_or(false);
    if let Some(n) = asked.filter(|&n| n > ctx) {
        bail!("max_tokens is {n}; the limit is the context, {ctx} tokens");
    }
    let max_tokens = asked.unwrap_or(ctx);
    let grammar = structured::request_grammar(m, structured::openai_response_format(body)?, tools.as_ref())?;
    let logprobs = match kind {
        Kind::Chat => logprobs::flag_and_top(body)?,
        Kind::Completion => logprobs::completion_count(body)?,
    };
    let requests = prompts
        .iter()
        .flat_map(|p| (0..n as u64).map(move |k| (p, k)))
        .map(|(p, k)| GenRequest {
            prompt: p.clone(),
            params: SamplingParams { seed: params.seed.wrapping_add(k), ..params.clone() },
            max_tokens,
            stop: stop.clone(),
            ignore_eos,
            grammar: grammar.clone(),
            logprobs,
            priority: Priority::Interactive,
        })
        .collect();
    let stream = opt_bool(body, "stream")?.unwrap_or(false);
    let include_usage = body.get("stream_options").map(|o| opt_bool(o, "include_usage")).transpose()?.flatten().unwrap_or(false);
    let prompt_tokens = prompts.iter().map(Vec::len).collect();
    Ok(Job { kind, prompt_tokens, n, requests, stream, include_usage, tools, logprobs: logprobs.is_some() })
}

/// /v1/embeddings' `input` as tokens; too long is an error.
pub fn embedding_inputs(m: &LoadedModel, body: &Value) -> Result<Vec<Vec<u32>>> {
    let (vocab, ctx) = (m.tokenizer.vocab_size() as u64, m.model.config.context_length);
    let ids = |a: &[Value]| -> Result<Vec<u32>> {
        let t: Option<Vec<u32>> = a.iter().map(|t| t.as_u64().filter(|&t| t < vocab).map(|t| t as u32)).collect();
        match t {
            Some(t) if !t.is_empty() && t.len() <= ctx => Ok(t),
            _ => bail!("input token arrays must be non-empty, fit the context of {ctx}, and hold ids below {vocab}"),
        }
    };
    token_lists(body, "input", |s| super::embed_tokens(m, s, false), ids)
}

/// What one choice produced.
#[derive(Debug, Default, Clone)]
pub struct Choice {
    pub text: String,
    pub tokens: usize,
    pub finish: Option<FinishReason>,
    /// Each token's, when the request asked for them.
    pub logprobs: Vec<TokenLogprobs>,
}

fn object(kind: Kind, chunk: bool) -> &'static str {
    match (kind, chunk) {
        (Kind::Chat, false) => "chat.completion",
        (Kind::Chat, true) => "chat.completion.chunk",
        (Kind::Completion, _) => "text_completion",
    }
}

pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens })
}

/// One call as OpenAI writes it: a fresh id, the arguments as a JSON
/// string; `index` places it within a streamed choice.
fn call_value(call: &ToolCall, index: Option<usize>) -> Value {
    let mut v = json!({
        "id": format!("call_{:016x}", fresh_seed()),
        "type": "function",
        "function": { "name": call.name, "arguments": call.arguments.to_string() },
    });
    if let Some(i) = index {
        v["index"] = json!(i);
    }
    v
}

/// An answer that made calls finished to hand them over, whatever ended it.
fn finish_with_calls(finish: Option<FinishReason>, calls: bool) -> Option<&'static str> {
    match (finish, calls) {
        (Some(FinishReason::Stop), true) => Some("tool_calls"),
        (f, _) => f.map(finish_name),
    }
}

/// A choice's (or a streamed chunk's) `logprobs` for `tokens`; `offset`
/// is where a completion choice's text stands so far.
pub fn choice_logprobs(kind: Kind, tok: &Tokenizer, tokens: &[TokenLogprobs], offset: &mut usize) -> Value {
    match kind {
        Kind::Chat => logprobs::chat(tok, tokens),
        Kind::Completion => {
            let (v, next) = logprobs::completion(tok, tokens, *offset);
            *offset = next;
            v
        }
    }
}

/// The whole answer: every choice, and usage.
pub fn response_body(job: &Job, tok: &Tokenizer, id: &str, created: u64, model: &str, choices: &[Choice]) -> Value {
    let list: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(k, c)| (k, c, if job.logprobs { choice_logprobs(job.kind, tok, &c.logprobs, &mut 0) } else { Value::Null }))
        .map(|(k, c, logprobs)| match (job.kind, &job.tools) {
            (Kind::Chat, Some(tools)) => {
                let (text, calls) = tools.split(&c.text);
                let mut message = json!({ "role": "assistant", "content": text });
                if !calls.is_empty() {
                    if text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = calls.iter().map(|call| call_value(call, None)).collect();
                }
                json!({ "index": k, "message": message, "finish_reason": finish_with_calls(c.finish, !calls.is_empty()), "logprobs": logprobs })
            }
            (Kind::Chat, None) => json!({
                "index": k,
                "message": { "role": "assistant", "content": c.text },
                "finish_reason": c.finish.map(finish_name),
                "logprobs": logprobs,
            }),
            (Kind::Completion, _) => json!({ "index": k, "text": c.text, "finish_reason": c.finish.map(finish_name), "logprobs": logprobs }),
        })
        .collect();
    let completion: usize = choices.iter().map(|c| c.tokens).sum();
    // Every prompt counts once, however many choices it has.
    let prompt: usize = job.prompt_tokens.iter().sum();
    json!({ "id": id, "object": object(job.kind, false), "created": created, "model": model, "choices": list, "usage": usage(prompt, completion) })
}

/// What one streamed piece of a choice adds when tools are offered.
pub struct ToolStep {
    pub text: String,
    pub calls: Vec<ToolCall>,
    /// How many calls the choice made before these.
    pub first_call: usize,
}

/// What every chunk of one streamed answer carries.
pub struct StreamHead<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

impl StreamHead<'_> {
    fn wrap(&self, choices: Value) -> Value {
        json!({ "id": self.id, "object": object(self.kind, true), "created": self.created, "model": self.model, "choices": choices })
    }

    /// One chunk for choice `index`: new text, or (with `finish`) its end.
    /// A chat stream's first chunk for a choice carries the role.
    pub fn chunk(&self, index: usize, text: &str, first: bool, finish: Option<FinishReason>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = match (first, finish) {
                    (_, Some(_)) => json!({}),
                    (true, None) => json!({ "role": "assistant", "content": text }),
                    (false, None) => json!({ "content": text }),
                };
                json!({ "index": index, "delta": delta, "finish_reason": finish.map(finish_name), "logprobs": null })
            }
            Kind::Completion => json!({ "index": index, "text": text, "finish_reason": finish.map(finish_name), "logprobs": null }),
        };
        self.wrap(json!([choice]))
    }

    /// A chat chunk when tools are offered: the text shown so far and the
    /// calls completed (numbered from `first_call` within the choice);
    /// with `finish`, the choice's end, `tool_calls` if it made any.
    pub fn tool_chunk(&self, index: usize, step: &ToolStep, finish: Option<FinishReason>) -> Value {
        let mut delta = json!({});
        if !step.text.is_empty() {
            delta["content"] = json!(step.text);
        }
        if !step.calls.is_empty() {
            delta["tool_calls"] = step.calls.iter().enumerate().map(|(k, c)| call_value(c, Some(step.first_call + k))).collect();
        }
        let finish = finish_with_calls(finish, step.first_call + step.calls.len() > 0);
        self.wrap(json!([{ "index": index, "delta": delta, "finish_reason": finish, "logprobs": null }]))
    }

    /// The last chunk when the client asked for usage: no choices.
    pub fn usage(&self, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let mut v = self.wrap(json!([]));
        v["usage"] = usage(prompt_tokens, completion_tokens);
        v
    }
}
