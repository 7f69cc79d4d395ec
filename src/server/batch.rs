//! POST /api/batch: many generate or chat items in one request, admitted
//! to the engine together (one gang, so they start in the same step);
//! embedding items go to `batch_embed`.
//! Answered as Ollama-shaped results in order, or streamed as NDJSON lines
//! that carry each item's `index`, ending with a summary line.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::batch_embed;
use super::error::{Api, ApiError};
use super::log::RequestLog;
use super::ollama::stats;
use super::{ndjson, read_json, App};
use crate::api::fields::{fresh_seed, keep_alive, opt_bool, req_str};
use crate::api::ollama::{self as shape, rfc3339, BatchItem, Shape};
use crate::api::tools::{CallSplitter, Tools};
use crate::api::{logprobs, structured};
use crate::engine::Event;
use crate::sampler::logprobs::TokenLogprobs;

const API: Api = Api::Ollama;

/// The summary line: the step the items started at, and whether all
/// started in that same step.
fn summary(name: &str, n: usize, steps: &[Option<u64>], arrived: Instant, load: std::time::Duration) -> Value {
    let first = steps.iter().flatten().min().copied();
    let together = steps.iter().all(|s| s.is_some() && *s == first);
    json!({
        "model": name, "created_at": rfc3339(std::time::SystemTime::now()), "done": true, "items": n,
        "admitted_step": first, "admitted_together": together,
        "total_duration": arrived.elapsed().as_nanos() as u64, "load_duration": load.as_nanos() as u64,
    })
}

pub async fn batch(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = read_json(&app, API, body).await?;
    let name = req_str(&body, "model").map_err(|e| ApiError::bad(API, e))?.to_string();
    let stream = opt_bool(&body, "stream").map_err(|e| ApiError::bad(API, e))?.unwrap_or(false);
    let list = match body.get("requests") {
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::bad(API, "requests must not be empty")),
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(ApiError::bad(API, "requests is required")),
        Some(_) => return Err(ApiError::bad(API, "requests must be an array")),
    };
    let limit = app.config.max_batch_items;
    if list.len() > limit {
        return Err(ApiError::bad(API, format!("{} requests; the limit is {limit} (--max-batch-items)", list.len())));
    }
    let embeds = batch_embed::is_embedding_batch(list)?;
    let (loaded, load) = app.model(API, &name, &log, keep_alive(&body).map_err(|e| ApiError::bad(API, e))?).await?;
    if embeds {
        return batch_embed::embed_batch(app.clone(), loaded, (&body, list, stream), arrived, load).await;
    }
    let seed = fresh_seed();
    let format = structured::ollama_format(&body).map_err(|e| ApiError::bad(API, e))?;
    // The model's own options (an Ollama Modelfile's), under the batch's.
    let options = shape::merge_options(loaded.manifest.options.as_ref(), body.get("options")).map_err(|e| ApiError::bad(API, e))?;
    let shared = shape::BatchShared { options: Some(&options), format };
    let system = loaded.manifest.system.as_deref();
    let items: Vec<BatchItem> = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            shape::batch_item(&loaded.model, &shape::with_model_system(v, system), &shared, seed.wrapping_add(i as u64))
                .map_err(|e| ApiError::bad(API, format!("requests[{i}]: {e:#}")))
        })
        .collect::<Result<_, _>>()?;
    let shapes: Vec<Shape> = items.iter().map(|item| item.shape).collect();
    let tools: Vec<Option<Tools>> = items.iter().map(|item| item.tools.clone()).collect();
    // A line of item i with the log-probabilities of the tokens it brings.
    let asked: Vec<bool> = items.iter().map(|item| item.request.logprobs.is_some()).collect();
    let model = loaded.model.clone();
    let with_logprobs = move |i: usize, mut line: Value, tokens: &[TokenLogprobs]| {
        if asked[i] && !tokens.is_empty() {
            line["logprobs"] = logprobs::entries(&model.tokenizer, tokens);
        }
        line
    };
    let gang = app.submit(API, &loaded, items.into_iter().map(|item| item.request).collect(), arrived, &log)?;
    let n = gang.len();
    if !stream {
        let outputs = gang.collect(API).await?;
        let steps: Vec<Option<u64>> = outputs.iter().map(|o| Some(o.started_step)).collect();
        let responses: Vec<Value> = outputs
            .iter()
            .zip(&shapes)
            .enumerate()
            .map(|(i, (o, &sh))| {
                let (text, calls) = match &tools[i] {
                    Some(t) => t.split(&o.text),
                    None => (o.text.clone(), Vec::new()),
                };
                let line = shape::line(sh, &name, &text, &calls, Some((o.finish, &stats(&o.summary, arrived, load))));
                let mut v = with_logprobs(i, line, &o.logprobs);
                v["index"] = json!(i);
                v["started_step"] = json!(o.started_step);
                v
            })
            .collect();
        let mut out = summary(&name, n, &steps, arrived, load);
        out["responses"] = json!(responses);
        return Ok(Json(out).into_response());
    }
    // An item with tools holds a call's text back and sends the call whole.
    let splitters: Vec<Option<CallSplitter>> = tools.iter().map(|t| t.as_ref().map(Tools::splitter)).collect();
    let unsent: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); n];
    let lines = futures_util::stream::unfold(Some((gang, splitters, unsent)), move |state| {
        let (name, shapes, with_logprobs) = (name.clone(), shapes.clone(), with_logprobs.clone());
        async move {
            let (mut gang, mut splitters, mut unsent) = state?;
            loop {
                let (i, mut v) = match gang.next().await {
                    Some((i, Event::Token { text, logprobs, .. })) => {
                        unsent[i].extend(logprobs);
                        let (text, calls) = match &mut splitters[i] {
                            Some(s) if !text.is_empty() => s.push(&text),
                            _ => (text, Vec::new()),
                        };
                        if text.is_empty() && calls.is_empty() {
                            continue;
                        }
                        (i, with_logprobs(i, shape::line(shapes[i], &name, &text, &calls, None), &std::mem::take(&mut unsent[i])))
                    }
                    Some((i, Event::Failed(message))) => (i, json!({ "error": message, "done": true })),
                    Some((i, Event::Done(s))) => {
                        let (rest, calls) = splitters[i].as_mut().map(CallSplitter::finish).unwrap_or_default();
                        let line = shape::line(shapes[i], &name, &rest, &calls, Some((s.finish, &stats(&s, gang.arrived, load))));
                        let mut v = with_logprobs(i, line, &std::mem::take(&mut unsent[i]));
                        v["started_step"] = json!(gang.started_steps[i]);
                        (i, v)
                    }
                    Some(_) => continue,
                    None => return Some((summary(&name, gang.len(), &gang.started_steps, gang.arrived, load), None)),
                };
                v["index"] = json!(i);
                return Some((v, Some((gang, splitters, unsent))));
            }
        }
    });
    Ok(ndjson(lines))
}
