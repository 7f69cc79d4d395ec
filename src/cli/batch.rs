//! `caravan batch INPUT [-o OUTPUT] [--resume]`: an offline job in the
//! OpenAI batch file format (one JSON request per line, answered by one
//! JSON line per request, written as each finishes), or a plain text file
//! with one prompt per line. Every request goes to the engine at once; a
//! bad line becomes an error line and the job carries on. An interrupted
//! run resumes from its output: what it answers is not run again.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Duration;

use caravan::api::batch_line;
use caravan::api::openai::{self, Choice, Job, Kind};
use caravan::engine::{EngineHandle, Event, EventStream, Watchers};
use caravan::loaded::LoadedModel;
use caravan::store::{Store, DEFAULT_MODEL};
use caravan::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::compute_args::ComputeArgs;
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
    /// Continue an interrupted run: items OUTPUT answers already are not
    /// run again, the others' lines are added to it
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    compute: ComputeArgs,
}

struct Item {
    custom_id: String,
    job: Job,
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
                return openai::parse(m, Kind::Chat, &body, seed ^ n as u64, default_max, usize::MAX)
                    .map(|job| Item { custom_id: custom_id.clone(), job })
                    .map_err(|e| (custom_id, format!("{e:#}")));
            }
            let v: Value =
                serde_json::from_str(line).map_err(|e| (format!("line-{}", n + 1), format!("line {} is not JSON: {e}", n + 1)))?;
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
                let job = openai::parse(m, kind, body, seed ^ n as u64, default_max, usize::MAX)?;
                if job.stream {
                    bail!("stream is not supported in a batch file");
                }
                Ok(Item { custom_id: custom_id.clone(), job })
            })();
            parsed.map_err(|e| (custom_id, format!("{e:#}")))
        })
        .collect()
}

fn error_line(index: usize, custom_id: &str, message: &str) -> Value {
    batch_line::failed(&format!("batch_req_{index}"), Some(custom_id), "invalid_request", message)
}

/// An item on the engine: its index, streams, choices so far, and a
/// failure if one came.
struct Running {
    index: usize,
    streams: Vec<EventStream>,
    choices: Vec<Choice>,
    failure: Option<String>,
}

fn response_line(index: usize, item: &Item, choices: &[Choice], tok: &Tokenizer, model: &str, created: u64) -> Value {
    let prefix = if item.job.kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    let body = openai::response_body(&item.job, tok, &format!("{prefix}-{index}"), created, model, choices);
    batch_line::answered(&format!("batch_req_{index}"), &item.custom_id, body)
}

/// Where the answers go, and what it answers already: with `resume`, the
/// `custom_id`s of the output's whole lines (a last line cut short, by a
/// run killed while writing it, is cut off) and how many are errors.
fn open_output(path: Option<&Path>, resume: bool) -> Result<(Box<dyn Write>, HashSet<String>, usize)> {
    let Some(path) = path else {
        return Ok((Box::new(std::io::stdout().lock()), HashSet::new(), 0));
    };
    let (mut answered, mut errors) = (HashSet::new(), 0);
    if resume && path.exists() {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for (n, line) in bytes[..whole].split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let v: Value = serde_json::from_slice(line)
                .ok()
                .filter(|v: &Value| v["custom_id"].is_string())
                .with_context(|| format!("{} line {} is not an answer with a custom_id: not resuming into it", path.display(), n + 1))?;
            errors += usize::from(!v["error"].is_null());
            answered.insert(v["custom_id"].as_str().unwrap_or_default().to_string());
        }
        let file = std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot write {}", path.display()))?;
        file.set_len(whole as u64)?;
        return Ok((Box::new(file), answered, errors));
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((Box::new(file), answered, errors))
}

/// Writes one answer line whole, so that an interrupted run leaves at
/// most one line cut short.
fn write_line(out: &mut dyn Write, line: &Value) -> Result<()> {
    out.write_all(format!("{line}\n").as_bytes())?;
    out.flush()?;
    Ok(())
}

pub fn batch(a: BatchArgs) -> Result<()> {
    let config = a.engine.config()?;
    if a.compute.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if a.resume && a.output.is_none() {
        bail!("--resume needs -o OUTPUT: the answers so far are read from it");
    }
    let text = std::fs::read_to_string(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let m = Arc::new(a.compute.open(&Store::from_env().resolve(&a.model)?)?);
    let kv = a.engine.pool(&m, false)?;
    let started = Instant::now();
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if a.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    let items = read_items(&m, &text, a.max_tokens);
    let (mut out, answered, mut errors) = open_output(a.output.as_deref(), a.resume)?;
    let engine = EngineHandle::spawn(m.clone(), kv, config, a.engine.batch_window(), Watchers::default());
    let custom_id = |item: &Result<Item, (String, String)>| match item {
        Ok(item) => item.custom_id.clone(),
        Err((id, _)) => id.clone(),
    };
    let resumed = items.iter().filter(|item| answered.contains(&custom_id(item))).count();
    let mut running: Vec<Running> = Vec::new();
    for (i, item) in items.iter().enumerate().filter(|(_, item)| !answered.contains(&custom_id(item))) {
        let failed = match item {
            Err((id, msg)) => Some(error_line(i, id, msg)),
            Ok(item) => match engine.submit(item.job.requests.clone()) {
                Ok(streams) => {
                    let choices = vec![Choice::default(); item.job.requests.len()];
                    running.push(Running { index: i, streams, choices, failure: None });
                    None
                }
                Err(e) => Some(error_line(i, &item.custom_id, &format!("{e:#}"))),
            },
        };
        if let Some(line) = failed {
            write_line(&mut out, &line)?;
            errors += 1;
        }
    }
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} items {msg}, {eta} left").expect("valid template"));
    bar.set_position((items.len() - running.len()) as u64);
    bar.reset_eta();
    let mut generated = 0usize;
    // The engine runs on its own thread; this one follows the streams and
    // writes each item's line as soon as it is whole.
    while !running.is_empty() {
        let before = generated + running.len();
        let mut finished = Vec::new();
        running.retain_mut(|Running { index: i, streams, choices, failure }| {
            for (stream, choice) in streams.iter_mut().zip(choices.iter_mut()) {
                while let Ok(e) = stream.events.try_recv() {
                    match e {
                        Event::Token { text, logprobs, .. } => {
                            choice.text.push_str(&text);
                            choice.tokens += 1;
                            choice.logprobs.extend(logprobs);
                            generated += 1;
                        }
                        Event::Done(s) => choice.finish = Some(s.finish),
                        Event::Failed(message) => *failure = Some(message),
                        Event::Started { .. } => {}
                    }
                }
            }
            let Ok(item) = &items[*i] else { unreachable!("only parsed items are submitted") };
            let line = match failure.as_deref() {
                // Dropping the item's streams cancels its other choices.
                Some(message) => error_line(*i, &item.custom_id, message),
                None if choices.iter().all(|c| c.finish.is_some()) => response_line(*i, item, choices, &m.tokenizer, &a.model, created),
                None => return true,
            };
            finished.push(line);
            false
        });
        for line in &finished {
            write_line(&mut out, line)?;
            errors += usize::from(!line["error"].is_null());
            bar.inc(1);
        }
        bar.set_message(format!("{:.1} tok/s", generated as f64 / started.elapsed().as_secs_f64()));
        if generated + running.len() == before {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let resumed = if resumed > 0 { format!(", {resumed} answered before") } else { String::new() };
    eprintln!(
        "batch: {} items ({errors} errors{resumed}), {generated} tokens generated in {wall:.1} s, {:.1} tok/s",
        items.len(),
        generated as f64 / wall
    );
    Ok(())
}
