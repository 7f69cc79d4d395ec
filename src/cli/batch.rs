//! `caravan batch INPUT [-o OUTPUT]`: an offline job in the OpenAI batch
//! file format (one JSON request per line, answered by one JSON line per
//! request, in order), or a plain text file with one prompt per line. Every
//! request goes to the engine at once; a bad line becomes an error line and
//! the job carries on.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Duration;

use caravan::engine::{EngineHandle, Event, EventStream, FinishReason, GenRequest};
use caravan::loaded::LoadedModel;
use caravan::sampler::SamplingParams;
use caravan::store::{Store, DEFAULT_MODEL};
use caravan::tokenizer::template::Message;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::engine_args::EngineArgs;

#[derive(clap::Args)]
pub struct BatchArgs {
    /// JSONL requests ({"custom_id", "method": "POST", "url": "/v1/chat/completions"
    /// or "/v1/completions", "body": {...}}), or one prompt per line
    input: PathBuf,
    /// Where the answers go (JSONL); standard output by default
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The model to run
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Most tokens per answer where a request sets none (default: the API's,
    /// 16 for completions, to the end of the context for chat)
    #[arg(long)]
    max_tokens: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Compute threads
    #[arg(long, default_value_t = super::default_threads())]
    threads: usize,
}

/// Most choices one request may ask for.
const MAX_N: usize = 16;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

struct Item {
    custom_id: String,
    kind: Kind,
    prompt_tokens: usize,
    requests: Vec<GenRequest>,
}

fn field_f32(body: &Value, key: &str, default: f32, range: (f32, f32)) -> Result<f32> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_f64() {
            Some(x) if (range.0 as f64..=range.1 as f64).contains(&x) => Ok(x as f32),
            _ => bail!("{key} must be a number from {} to {}", range.0, range.1),
        },
    }
}

fn field_usize(body: &Value, key: &str) -> Result<Option<usize>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().filter(|&n| n >= 1).map(|n| Some(n as usize)).ok_or_else(|| anyhow::anyhow!("{key} must be a whole number of at least 1")),
    }
}

fn stop_strings(body: &Value) -> Result<Vec<String>> {
    match body.get("stop") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.len() <= 4 => a.iter().map(|s| s.as_str().map(String::from).ok_or_else(|| anyhow::anyhow!("stop must hold strings"))).collect(),
        Some(_) => bail!("stop must be a string or an array of at most 4 strings"),
    }
}

fn messages(body: &Value) -> Result<Vec<Message>> {
    let list = body.get("messages").and_then(Value::as_array).filter(|a| !a.is_empty()).ok_or_else(|| anyhow::anyhow!("messages must be a non-empty array"))?;
    list.iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if !["system", "user", "assistant"].contains(&role) {
                bail!("message role must be system, user or assistant, got {role:?}");
            }
            let content = m.get("content").and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("message content must be a string"))?;
            Ok(Message::new(role, content))
        })
        .collect()
}

/// One request line (or plain-text prompt) into engine requests.
fn parse_body(m: &LoadedModel, kind: Kind, body: &Value, seed: u64, default_max: Option<usize>) -> Result<(Vec<u32>, Vec<GenRequest>)> {
    let prompt = match kind {
        Kind::Chat => m.chat_tokens(&messages(body)?)?,
        Kind::Completion => {
            let text = body.get("prompt").and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("prompt must be a string"))?;
            // Prompt text is the caller's, never control tokens.
            m.tokenizer.with_bos(m.tokenizer.encode(text, false)?)
        }
    };
    let ctx = m.model.config.context_length;
    let asked = match kind {
        Kind::Chat => field_usize(body, "max_completion_tokens")?.or(field_usize(body, "max_tokens")?).or(default_max),
        Kind::Completion => Some(field_usize(body, "max_tokens")?.or(default_max).unwrap_or(16)),
    };
    let n = field_usize(body, "n")?.unwrap_or(1);
    if n > MAX_N {
        bail!("n must be at most {MAX_N}");
    }
    let params = SamplingParams {
        temperature: field_f32(body, "temperature", 1.0, (0.0, 2.0))?,
        top_k: 0,
        top_p: field_f32(body, "top_p", 1.0, (f32::MIN_POSITIVE, 1.0))?,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        seed: body.get("seed").and_then(Value::as_u64).unwrap_or(seed),
    };
    let stop = stop_strings(body)?;
    let max_tokens = asked.unwrap_or(ctx).min(ctx);
    let requests = (0..n as u64)
        .map(|k| GenRequest {
            prompt: prompt.clone(),
            params: SamplingParams { seed: params.seed.wrapping_add(k), ..params.clone() },
            max_tokens,
            stop: stop.clone(),
            ignore_eos: false,
        })
        .collect();
    Ok((prompt, requests))
}

/// Reads the input: JSONL if its first line is a JSON object, else prompts.
fn read_items(m: &LoadedModel, text: &str, default_max: Option<usize>) -> Vec<Result<Item, (String, String)>> {
    let lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
    let jsonl = lines.first().is_some_and(|(_, l)| l.trim_start().starts_with('{'));
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    lines
        .into_iter()
        .map(|(n, line)| {
            if !jsonl {
                let custom_id = format!("line-{}", n + 1);
                let body = json!({ "messages": [{ "role": "user", "content": line }] });
                return parse_body(m, Kind::Chat, &body, seed ^ n as u64, default_max)
                    .map(|(p, requests)| Item { custom_id: custom_id.clone(), kind: Kind::Chat, prompt_tokens: p.len(), requests })
                    .map_err(|e| (custom_id, format!("{e:#}")));
            }
            let v: Value = serde_json::from_str(line).map_err(|e| (format!("line-{}", n + 1), format!("line {} is not JSON: {e}", n + 1)))?;
            let custom_id = v.get("custom_id").and_then(Value::as_str).map(String::from).unwrap_or_else(|| format!("line-{}", n + 1));
            let parsed = (|| {
                if v.get("custom_id").and_then(Value::as_str).is_none() {
                    bail!("custom_id must be a string");
                }
                if v.get("method").and_then(Value::as_str) != Some("POST") {
                    bail!("method must be POST");
                }
                let kind = match v.get("url").and_then(Value::as_str) {
                    Some("/v1/chat/completions") => Kind::Chat,
                    Some("/v1/completions") => Kind::Completion,
                    other => bail!("url must be /v1/chat/completions or /v1/completions, got {other:?}"),
                };
                let body = v.get("body").filter(|b| b.is_object()).ok_or_else(|| anyhow::anyhow!("body must be an object"))?;
                let (p, requests) = parse_body(m, kind, body, seed ^ n as u64, default_max)?;
                Ok(Item { custom_id: custom_id.clone(), kind, prompt_tokens: p.len(), requests })
            })();
            parsed.map_err(|e| (custom_id, format!("{e:#}")))
        })
        .collect()
}

fn error_line(index: usize, custom_id: &str, message: &str) -> Value {
    json!({ "id": format!("batch_req_{index}"), "custom_id": custom_id, "response": null, "error": { "code": "invalid_request", "message": message } })
}

/// What one choice produced.
#[derive(Default, Clone)]
struct Choice {
    text: String,
    tokens: usize,
    finish: Option<FinishReason>,
}

fn response_line(index: usize, item: &Item, choices: &[Choice], model: &str, created: u64) -> Value {
    let finish = |c: &Choice| if c.finish == Some(FinishReason::Length) { "length" } else { "stop" };
    let completion_tokens: usize = choices.iter().map(|c| c.tokens).sum();
    let (object, id, list): (&str, String, Vec<Value>) = match item.kind {
        Kind::Chat => (
            "chat.completion",
            format!("chatcmpl-{index}"),
            choices.iter().enumerate().map(|(k, c)| json!({ "index": k, "message": { "role": "assistant", "content": c.text }, "finish_reason": finish(c) })).collect(),
        ),
        Kind::Completion => (
            "text_completion",
            format!("cmpl-{index}"),
            choices.iter().enumerate().map(|(k, c)| json!({ "index": k, "text": c.text, "finish_reason": finish(c) })).collect(),
        ),
    };
    let body = json!({
        "id": id, "object": object, "created": created, "model": model, "choices": list,
        "usage": { "prompt_tokens": item.prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": item.prompt_tokens + completion_tokens },
    });
    json!({ "id": format!("batch_req_{index}"), "custom_id": item.custom_id, "response": { "status_code": 200, "request_id": format!("req_{index}"), "body": body }, "error": null })
}

pub fn batch(a: BatchArgs) -> Result<()> {
    let config = a.engine.config()?;
    if a.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let text = std::fs::read_to_string(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let m = Arc::new(LoadedModel::open(&Store::from_env().resolve(&a.model)?, a.threads)?);
    let kv = a.engine.pool(&m, false)?;
    let started = Instant::now();
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if a.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    let items = read_items(&m, &text, a.max_tokens);
    let engine = EngineHandle::spawn(m.clone(), kv, config, a.engine.batch_window(), None);
    // Per item: its streams and choices, or the error line it becomes.
    let mut lines: Vec<Option<Value>> = vec![None; items.len()];
    let mut running: Vec<(usize, Vec<EventStream>, Vec<Choice>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Err((id, msg)) => lines[i] = Some(error_line(i, id, msg)),
            Ok(item) => match engine.submit(item.requests.clone()) {
                Ok(streams) => running.push((i, streams, vec![Choice::default(); item.requests.len()])),
                Err(e) => lines[i] = Some(error_line(i, &item.custom_id, &format!("{e:#}"))),
            },
        }
    }
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} items {msg}").expect("valid template"));
    bar.set_position(lines.iter().filter(|l| l.is_some()).count() as u64);
    let mut generated = 0usize;
    // The engine runs on its own thread; this one follows the streams.
    while !running.is_empty() {
        let before = generated + running.len();
        running.retain_mut(|(i, streams, choices)| {
            for (stream, choice) in streams.iter_mut().zip(choices.iter_mut()) {
                while let Ok(e) = stream.events.try_recv() {
                    match e {
                        Event::Token { text, .. } => {
                            choice.text.push_str(&text);
                            choice.tokens += 1;
                            generated += 1;
                        }
                        Event::Done(s) => choice.finish = Some(s.finish),
                        Event::Started { .. } => {}
                    }
                }
            }
            if choices.iter().all(|c| c.finish.is_some()) {
                let item = items[*i].as_ref().ok().expect("submitted items parsed");
                lines[*i] = Some(response_line(*i, item, choices, &a.model, created));
                bar.inc(1);
                return false;
            }
            true
        });
        bar.set_message(format!("{:.1} tok/s", generated as f64 / started.elapsed().as_secs_f64()));
        if generated + running.len() == before {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    bar.finish_and_clear();
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    for line in lines.iter().flatten() {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let errors = lines.iter().flatten().filter(|l| !l["error"].is_null()).count();
    let wall = started.elapsed().as_secs_f64();
    eprintln!("batch: {} items ({errors} errors), {generated} tokens generated in {wall:.1} s, {:.1} tok/s", items.len(), generated as f64 / wall);
    Ok(())
}
