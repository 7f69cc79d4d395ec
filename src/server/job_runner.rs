//! Runs batch jobs: validates a job's input, sends its items to the engine
//! in the background class (many at once, within the engine's sequence
//! limit), appends each answer to the output or error file and commits it,
//! then lists the files and ends the job. A job found unfinished at start
//! (the server was killed) continues from its committed state: the files
//! are cut back to their committed length, and only unanswered items run.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};

use super::error::ApiError;
use super::gang::Gang;
use super::log::RequestLog;
use super::models::Loaded;
use super::openai::{answer_body, embeddings_body, API};
use super::App;
use crate::api::batch_line;
use crate::api::fields::fresh_seed;
use crate::api::openai::{self as shape, Kind};
use crate::jobs::db::{PendingItem, Sink};
use crate::jobs::{input, now, BatchRecord, Status};

/// How often a running job looks for a cancel and for its deadline.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Runs the batch `id` to its end, on its own task.
pub fn spawn(app: Arc<App>, id: String) {
    tokio::spawn(async move {
        if let Err(e) = run(&app, &id).await {
            eprintln!("batch {id}: {e:#}");
        }
    });
}

/// Continues every job left unfinished.
pub fn resume_all(app: &Arc<App>) -> Result<()> {
    for id in app.jobs.unfinished()? {
        eprintln!("batch {id}: resuming");
        spawn(app.clone(), id);
    }
    Ok(())
}

async fn run(app: &Arc<App>, id: &str) -> Result<()> {
    loop {
        let b = app.jobs.batch(id)?.context("the batch is gone")?;
        match b.status {
            Status::Validating => validate(app, &b).await?,
            Status::InProgress => work(app, &b).await?,
            Status::Finalizing => end(app, &b, Status::Finalizing, Status::Completed)?,
            Status::Cancelling => end(app, &b, Status::Cancelling, Status::Cancelled)?,
            Status::Completed | Status::Failed | Status::Cancelled | Status::Expired => return Ok(()),
        }
    }
}

/// Reads the input twice (see `jobs::input`): in progress, or failed with
/// the reasons.
async fn validate(app: &Arc<App>, b: &BatchRecord) -> Result<()> {
    let app2 = app.clone();
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || validate_now(&app2, &b2)).await?
}

fn validate_now(app: &App, b: &BatchRecord) -> Result<()> {
    let jobs = &app.jobs;
    let path = jobs.file_path(&b.input_file_id);
    let fail =
        |code: &str, message: String| jobs.invalid(&b.id, &json!([{ "code": code, "message": message, "param": null, "line": null }]));
    let model = match input::check(&path, &b.endpoint, &app.config.default_model) {
        Err(e) => return fail("invalid_file", format!("cannot read the input file: {e}")),
        Ok(Err(errors)) => return jobs.invalid(&b.id, &Value::from(errors)),
        Ok(Ok(model)) => model,
    };
    if app.registry.find_manifest(&model).ok().flatten().is_none() {
        return fail("model_not_found", format!("model '{model}' is not installed"));
    }
    let lines = input::lines(&path)?.map(|line| {
        let (number, offset, bytes) = line?;
        let (custom_id, problem) = match input::classify(&bytes, &b.endpoint) {
            input::Line::Request { custom_id, .. } => (Some(custom_id), None),
            input::Line::Unreadable(why) => (None, Some(why)),
            input::Line::Invalid { message, .. } => anyhow::bail!("line {number} changed while it was read: {message}"),
        };
        Ok((number, custom_id, offset, bytes.len() as u64, problem))
    });
    match jobs.validated(&b.id, &model, lines)? {
        Ok(_) => Ok(()),
        Err(dup) => fail("duplicate_custom_id", format!("custom_id {dup:?} is used by more than one request")),
    }
}

/// An answer file opened for appending at its committed length (cutting
/// off a line written by a run that died before committing it).
fn open_sink(app: &App, file_id: &str, committed: u64) -> Result<File> {
    let path = app.jobs.file_path(file_id);
    let file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(committed)?;
    Ok(file)
}

struct Sinks {
    output: (File, u64),
    error: (File, u64),
}

impl Sinks {
    fn open(app: &App, b: &BatchRecord) -> Result<Sinks> {
        Ok(Sinks {
            output: (open_sink(app, &b.output_id, b.output_bytes)?, b.output_bytes),
            error: (open_sink(app, &b.error_id, b.error_bytes)?, b.error_bytes),
        })
    }

    /// Writes an item's line whole, then commits it with the length.
    fn write(&mut self, app: &App, b: &BatchRecord, item: &PendingItem, line: &Value) -> Result<()> {
        let ok = line["response"]["status_code"] == 200;
        let (sink, (file, length)) = if ok { (Sink::Output, &mut self.output) } else { (Sink::Error, &mut self.error) };
        let text = format!("{line}\n");
        file.write_all(text.as_bytes())?;
        *length += text.len() as u64;
        app.jobs.answered(&b.id, item.line, sink, *length)
    }
}

fn item_id(b: &BatchRecord, item: &PendingItem) -> String {
    format!("batch_req_{}_{}", b.id.trim_start_matches("batch_"), item.line)
}

/// Runs the unanswered items until none is left (then `finalizing`), the
/// job is cancelled, or it expires.
async fn work(app: &Arc<App>, b: &BatchRecord) -> Result<()> {
    let mut sinks = Sinks::open(app, b)?;
    let model = b.model.clone().context("a batch in progress names its model")?;
    let log = RequestLog::default();
    let loaded = loop {
        match app.model(API, &model, &log, None).await {
            Ok((loaded, _)) => break loaded,
            Err(e) if e.status.as_u16() == 429 => tokio::time::sleep(Duration::from_secs(1)).await,
            Err(e) => {
                fail_the_rest(app, b, &mut sinks, |id, custom_id| batch_line::refused(id, custom_id, e.status.as_u16(), e.body()))?;
                app.jobs.advance(&b.id, &[Status::InProgress], Status::Finalizing)?;
                return Ok(());
            }
        }
    };
    let input = File::open(app.jobs.file_path(&b.input_file_id)).context("cannot open the input file")?;
    // Enough in flight to keep every sequence slot busy between steps.
    let window = loaded.engine.max_seqs() * 2;
    let (mut queue, mut cursor, mut exhausted) = (VecDeque::new(), 0, false);
    let mut running = FuturesUnordered::new();
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        while running.len() < window {
            if queue.is_empty() && !exhausted {
                let page = app.jobs.pending(&b.id, cursor, window)?;
                exhausted = page.len() < window;
                cursor = page.last().map_or(cursor, |i| i.line);
                queue.extend(page);
            }
            let Some(item) = queue.pop_front() else { break };
            if let Some(problem) = &item.problem {
                let line = batch_line::refused(&item_id(b, &item), None, 400, ApiError::bad(API, problem).body());
                sinks.write(app, b, &item, &line)?;
                continue;
            }
            let bytes = input::read_line(&input, item.offset, item.length)?;
            let (app, loaded, endpoint, name) = (app.clone(), loaded.clone(), b.endpoint.clone(), model.clone());
            running.push(async move {
                let answer = answer(&app, &loaded, &endpoint, &name, &bytes).await;
                (item, answer)
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some((item, answer)) = running.next() => {
                let (id, custom_id) = (item_id(b, &item), item.custom_id.as_deref().unwrap_or_default());
                let line = match answer {
                    Ok(body) => batch_line::answered(&id, custom_id, body),
                    Err(e) => batch_line::refused(&id, Some(custom_id), e.status.as_u16(), e.body()),
                };
                sinks.write(app, b, &item, &line)?;
            }
            _ = check.tick() => {
                // Dropping what runs cancels its sequences.
                if app.jobs.batch(&b.id)?.is_some_and(|now| now.status == Status::Cancelling) {
                    return Ok(());
                }
                if now() >= b.expires_at {
                    drop(running);
                    return expire(app, b, &mut sinks);
                }
            }
        }
    }
    app.jobs.advance(&b.id, &[Status::InProgress], Status::Finalizing)?;
    Ok(())
}

/// One request of the job, answered as its endpoint would answer it.
async fn answer(app: &App, loaded: &Loaded, endpoint: &str, name: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let line: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::bad(API, e))?;
    if line.get("method").and_then(Value::as_str) != Some("POST") {
        return Err(ApiError::bad(API, "method must be POST"));
    }
    let body = line.get("body").filter(|b| b.is_object()).ok_or_else(|| ApiError::bad(API, "body must be a JSON object"))?;
    let kind = match endpoint {
        "/v1/embeddings" => return embeddings_body(app, loaded, name, body).await,
        "/v1/completions" => Kind::Completion,
        _ => Kind::Chat,
    };
    let job = shape::parse(&loaded.model, kind, body, fresh_seed(), None, app.config.max_batch_items).map_err(|e| ApiError::bad(API, e))?;
    if job.stream {
        return Err(ApiError::bad(API, "stream is not supported in a batch"));
    }
    let gang = Gang::background(loaded, job.requests.clone(), API, &app.metrics, &RequestLog::default())?;
    answer_body(gang, &job, loaded, name).await
}

/// Past its window: every unanswered item gets a `batch_expired` error
/// line, and the job ends `expired` with what it answered.
fn expire(app: &App, b: &BatchRecord, sinks: &mut Sinks) -> Result<()> {
    fail_the_rest(app, b, sinks, |id, custom_id| {
        batch_line::failed(id, custom_id, "batch_expired", "the batch expired before this request ran")
    })?;
    let fresh = app.jobs.batch(&b.id)?.context("the batch is gone")?;
    app.jobs.publish(&fresh, &[Status::InProgress], Status::Expired)?;
    Ok(())
}

/// Writes `line` for every unanswered item.
fn fail_the_rest(app: &App, b: &BatchRecord, sinks: &mut Sinks, line: impl Fn(&str, Option<&str>) -> Value) -> Result<()> {
    loop {
        let page = app.jobs.pending(&b.id, 0, 256)?;
        if page.is_empty() {
            break;
        }
        for item in &page {
            sinks.write(app, b, item, &line(&item_id(b, item), item.custom_id.as_deref()))?;
        }
    }
    Ok(())
}

/// Ends a job from `from` in `to`: its files cut to what was committed,
/// then listed.
fn end(app: &App, b: &BatchRecord, from: Status, to: Status) -> Result<()> {
    for (id, committed) in [(&b.output_id, b.output_bytes), (&b.error_id, b.error_bytes)] {
        match committed {
            0 => drop(std::fs::remove_file(app.jobs.file_path(id))),
            n => drop(open_sink(app, id, n)?),
        }
    }
    app.jobs.publish(b, &[from], to)?;
    Ok(())
}
