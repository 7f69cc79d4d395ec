//! Ollama's /api/generate and /api/chat: `options` into sampling settings,
//! prompts into tokens, and results into Ollama's streamed lines and final
//! objects (durations in nanoseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use super::fields::{opt_bool, opt_f32, opt_i64, opt_str, opt_u64, req_str, stop_strings};
use super::tools::{self, ToolCall, Tools};
use super::{finish_name, logprobs, parse_messages, structured};
use crate::engine::{FinishReason, GenRequest, Priority};
use crate::grammar::{Constraint, GrammarSpec};
use crate::loaded::LoadedModel;
use crate::sampler::SamplingParams;

/// Generation settings from `options`.
#[derive(Debug, Clone)]
pub struct Options {
    pub params: SamplingParams,
    /// None: until the end of the context.
    pub num_predict: Option<usize>,
    pub stop: Vec<String>,
    /// A per-request cap on prompt plus answer; never a reservation.
    pub num_ctx: Option<usize>,
}

/// `shared` overlaid with `own` (the batch API's item options win).
pub fn merge_options(shared: Option<&Value>, own: Option<&Value>) -> Result<Value> {
    let mut out = Map::new();
    for o in [shared, own].into_iter().flatten() {
        match o {
            Value::Object(m) => out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Value::Null => {}
            _ => bail!("options must be an object"),
        }
    }
    Ok(Value::Object(out))
}

/// A generate or chat body with its model's system prompt (an Ollama
/// Modelfile's SYSTEM) where it gives none: as `system` of a generate, as
/// a first message of a chat without a system message.
pub fn with_model_system(body: &Value, system: Option<&str>) -> Value {
    let mut body = body.clone();
    let Some(system) = system else { return body };
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        if !messages.iter().any(|m| m["role"] == "system") {
            messages.insert(0, json!({ "role": "system", "content": system }));
        }
    } else if matches!(body.get("system"), None | Some(Value::Null)) && body.is_object() {
        body["system"] = json!(system);
    }
    body
}

/// Reads `options`; keys it does not know (GPU settings and such) are
/// ignored, as Ollama does.
pub fn parse_options(options: &Value, seed: u64) -> Result<Options> {
    let d = SamplingParams::default();
    let num_predict = match opt_i64(options, "num_predict")? {
        // Ollama's -1 is "no limit" and -2 "fill the context".
        None | Some(-1) | Some(-2) => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(n) => bail!("num_predict must be -1, -2 or at least 1, got {n}"),
    };
    let params = SamplingParams {
        temperature: opt_f32(options, "temperature", (0.0, 100.0))?.unwrap_or(d.temperature),
        top_k: opt_u64(options, "top_k", 0)?.map(|k| k as usize).unwrap_or(d.top_k),
        top_p: opt_f32(options, "top_p", (0.0, 1.0))?.map(|p| if p == 0.0 { 1.0 } else { p }).unwrap_or(d.top_p),
        min_p: opt_f32(options, "min_p", (0.0, 1.0))?.unwrap_or(d.min_p),
        repeat_penalty: opt_f32(options, "repeat_penalty", (f32::MIN_POSITIVE, 100.0))?.unwrap_or(d.repeat_penalty),
        repeat_last_n: opt_u64(options, "repeat_last_n", 0)?.map(|n| n as usize).unwrap_or(d.repeat_last_n),
        presence_penalty: opt_f32(options, "presence_penalty", (-2.0, 2.0))?.unwrap_or(0.0),
        frequency_penalty: opt_f32(options, "frequency_penalty", (-2.0, 2.0))?.unwrap_or(0.0),
        seed: match opt_i64(options, "seed")? {
            Some(s) if s >= 0 => s as u64,
            _ => seed,
        },
    };
    let num_ctx = opt_u64(options, "num_ctx", 1)?.map(|n| n as usize);
    Ok(Options { params, num_predict, stop: stop_strings(options)?, num_ctx })
}

/// Fields Ollama has that we do not implement (and `also`, fields of other
/// routes): an error, not silence.
fn reject_unsupported(body: &Value, also: &[&str]) -> Result<()> {
    for key in ["images", "suffix", "template", "context", "think"].iter().chain(also) {
        let set = match body.get(key) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        match *key {
            // No model Caravan runs thinks (Ollama's answer, the same 400).
            "think" if set => bail!("the model does not support thinking"),
            _ if set => bail!("{key} is not supported"),
            _ => {}
        }
    }
    Ok(())
}

/// A request without a prompt (generate) or without messages (chat): it
/// only loads the model, or with `keep_alive` 0 unloads it, as Ollama's.
pub fn loads_only(shape: Shape, body: &Value) -> bool {
    let key = match shape {
        Shape::Generate => "prompt",
        Shape::Chat => "messages",
    };
    match body.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// The prompt tokens of a generate request (`prompt`, `system`, `raw`).
pub fn generate_prompt(m: &LoadedModel, body: &Value) -> Result<Vec<u32>> {
    reject_unsupported(body, &["tools"])?;
    let prompt = req_str(body, "prompt")?;
    let system = opt_str(body, "system")?;
    if opt_bool(body, "raw")?.unwrap_or(false) {
        return m.raw_tokens(prompt);
    }
    m.prompt_tokens(system.filter(|s| !s.is_empty()), prompt)
}

/// The prompt tokens of a chat request, and the tools it offers.
pub fn chat_prompt(m: &LoadedModel, body: &Value) -> Result<(Vec<u32>, Option<Tools>)> {
    reject_unsupported(body, &[])?;
    let tools = tools::parse(m, body)?;
    let offered = tools.as_ref().map_or(&[][..], |t| t.list.as_slice());
    Ok((m.chat_tokens(&parse_messages(body)?, offered)?, tools))
}

/// An engine request for `prompt` under `options` and a model context,
/// its output held to `grammar` when there is one, reporting `logprobs`
/// (`logprobs::flag_and_top`) when asked.
pub fn gen_request(
    prompt: Vec<u32>,
    o: &Options,
    context: usize,
    grammar: Option<Constraint>,
    logprobs: Option<usize>,
) -> Result<GenRequest> {
    let ctx = o.num_ctx.map_or(context, |n| n.min(context));
    if prompt.len() >= ctx {
        bail!("the prompt is {} tokens; the context (num_ctx) is {ctx}", prompt.len());
    }
    if let Some(n) = o.num_predict.filter(|&n| n > context) {
        bail!("num_predict is {n}; the limit is the context, {context} tokens");
    }
    let room = ctx - prompt.len();
    let max_tokens = o.num_predict.map_or(room, |n| n.min(room));
    Ok(GenRequest {
        prompt,
        params: o.params.clone(),
        max_tokens,
        stop: o.stop.clone(),
        ignore_eos: false,
        grammar,
        logprobs,
        priority: Priority::Interactive,
    })
}

/// The grammar a request's output is held to: its `format`'s, or the
/// one that makes the model call the tools it must.
pub fn request_grammar(m: &LoadedModel, body: &Value, tools: Option<&Tools>) -> Result<Option<Constraint>> {
    structured::request_grammar(m, structured::ollama_format(body)?, tools)
}

/// What every item of a /api/batch request shares unless it sets its own:
/// `options` (merged under the item's) and `format` (replaced by the item's).
pub struct BatchShared<'a> {
    pub options: Option<&'a Value>,
    pub format: Option<GrammarSpec>,
}

/// One /api/batch item, ready for the engine.
pub struct BatchItem {
    pub shape: Shape,
    pub request: GenRequest,
    /// A chat item's tools: its answer's calls are read out of the text.
    pub tools: Option<Tools>,
}

/// One /api/batch item: a chat item (`messages`) or a generate item
/// (`prompt`), its options over the batch's shared ones.
pub fn batch_item(m: &LoadedModel, v: &Value, shared: &BatchShared, seed: u64) -> Result<BatchItem> {
    if !v.is_object() {
        bail!("must be an object");
    }
    let options = parse_options(&merge_options(shared.options, v.get("options"))?, seed)?;
    let format = match v.get("format") {
        None => shared.format.clone(),
        Some(_) => structured::ollama_format(v)?,
    };
    let (shape, prompt, tools) = if v.get("messages").is_some() {
        let (prompt, tools) = chat_prompt(m, v)?;
        (Shape::Chat, prompt, tools)
    } else {
        if loads_only(Shape::Generate, v) {
            bail!("needs a non-empty prompt or messages");
        }
        (Shape::Generate, generate_prompt(m, v)?, None)
    };
    let grammar = structured::request_grammar(m, format, tools.as_ref())?;
    let request = gen_request(prompt, &options, m.model.config.context_length, grammar, logprobs::flag_and_top(v)?)?;
    Ok(BatchItem { shape, request, tools })
}

/// /api/embed's `input` (a string or an array of strings; absent: none)
/// and `truncate` (default true), as tokens.
pub fn embed_inputs(m: &LoadedModel, body: &Value) -> Result<Vec<Vec<u32>>> {
    if !matches!(body.get("dimensions"), None | Some(Value::Null)) {
        bail!("dimensions is not supported (embeddings have the model's own size)");
    }
    let truncate = opt_bool(body, "truncate")?.unwrap_or(true);
    let texts: Vec<&str> = match body.get("input") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => {
            a.iter().map(|s| s.as_str().ok_or_else(|| anyhow::anyhow!("input must hold strings"))).collect::<Result<_>>()?
        }
        Some(_) => bail!("input must be a string or an array of strings"),
    };
    texts.into_iter().map(|t| super::embed_tokens(m, t, truncate)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Generate,
    Chat,
}

/// Timings and counts of a finished request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub total: Duration,
    pub load: Duration,
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: Duration,
    pub eval_count: usize,
    pub eval_duration: Duration,
}

/// One line of an answer: text so far (streamed) or all of it, a chat
/// answer's tool calls, and, when `done` is given, the finish and the stats.
pub fn line(shape: Shape, model: &str, text: &str, calls: &[ToolCall], done: Option<(FinishReason, &Stats)>) -> Value {
    let mut v = json!({ "model": model, "created_at": rfc3339(SystemTime::now()) });
    match shape {
        Shape::Generate => v["response"] = json!(text),
        Shape::Chat => v["message"] = json!({ "role": "assistant", "content": text }),
    }
    if !calls.is_empty() {
        let calls: Vec<Value> = calls.iter().map(|c| json!({ "function": { "name": c.name, "arguments": c.arguments } })).collect();
        v["message"]["tool_calls"] = json!(calls);
    }
    v["done"] = json!(done.is_some());
    if let Some((finish, s)) = done {
        v["done_reason"] = json!(finish_name(finish));
        v["total_duration"] = json!(s.total.as_nanos() as u64);
        v["load_duration"] = json!(s.load.as_nanos() as u64);
        v["prompt_eval_count"] = json!(s.prompt_eval_count);
        v["prompt_eval_duration"] = json!(s.prompt_eval_duration.as_nanos() as u64);
        v["eval_count"] = json!(s.eval_count);
        v["eval_duration"] = json!(s.eval_duration.as_nanos() as u64);
    }
    v
}

/// The answer to a generate request without a prompt: the model is loaded.
/// The answer to a request that only loads (`"load"`) or unloads
/// (`"unload"`) its model.
pub fn load_line(shape: Shape, model: &str, reason: &str) -> Value {
    let mut v = line(shape, model, "", &[], None);
    v["done"] = json!(true);
    v["done_reason"] = json!(reason);
    v
}

/// "2026-11-28T01:02:03.456789012Z", as Ollama writes times.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        // 2024-02-29 12:34:56.5 UTC, a leap day.
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 500_000_000);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.500000000Z");
    }

    #[test]
    fn options_follow_ollama() {
        let o = parse_options(&json!({"num_predict": -1, "temperature": 0, "seed": 7, "stop": ["x"], "num_gpu": 99}), 1).unwrap();
        assert_eq!((o.num_predict, o.params.temperature, o.params.seed, o.stop.len()), (None, 0.0, 7, 1));
        assert!(parse_options(&json!({"num_predict": -3}), 1).is_err());
        assert!(parse_options(&json!({"temperature": "hot"}), 1).is_err());
        let merged = merge_options(Some(&json!({"temperature": 1, "seed": 2})), Some(&json!({"seed": 3}))).unwrap();
        assert_eq!(merged, json!({"temperature": 1, "seed": 3}));
    }

    #[test]
    fn num_ctx_caps_without_reserving() {
        let o = parse_options(&json!({"num_ctx": 10, "num_predict": 100}), 1).unwrap();
        assert_eq!(gen_request(vec![1; 4], &o, 8192, None, None).unwrap().max_tokens, 6);
        assert!(gen_request(vec![1; 10], &o, 8192, None, None).is_err());
    }
}
