//! POST /api/batch whose items are embedding requests (`input`, as
//! /api/embed takes it): every item's inputs are queued on the engine at
//! once, so that they share forward passes. Answered as /api/embed-shaped
//! results in order, or streamed as NDJSON lines that carry each item's
//! `index`, ending with a summary line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::error::{Api, ApiError};
use super::models::Loaded;
use super::ollama::check_embedding_count;
use super::{ndjson, App};
use crate::api::ollama::{embed_inputs, rfc3339};
use crate::engine::EngineError;

const API: Api = Api::Ollama;

/// The fields an embedding item may have.
const ITEM_FIELDS: [&str; 2] = ["input", "truncate"];

/// Whether `list` holds embedding items: all of them, none, or a 400.
pub fn is_embedding_batch(list: &[Value]) -> Result<bool, ApiError> {
    let embeds = list.iter().filter(|v| v.get("input").is_some()).count();
    if embeds > 0 && embeds < list.len() {
        return Err(ApiError::bad(API, "a batch's requests are all embeddings (input) or all generations (prompt or messages), not both"));
    }
    Ok(embeds > 0)
}

/// Each item's answers as they will come from the engine.
type Pending = Vec<oneshot::Receiver<Result<Vec<f32>, EngineError>>>;

pub async fn embed_batch(
    app: Arc<App>,
    loaded: Arc<Loaded>,
    (body, list, stream): (&Value, &[Value], bool),
    arrived: Instant,
    load: Duration,
) -> Result<Response, ApiError> {
    for key in ["options", "format"] {
        if !matches!(body.get(key), None | Some(Value::Null)) {
            return Err(ApiError::bad(API, format!("{key} does not apply to embedding requests")));
        }
    }
    let mut items: Vec<Vec<Vec<u32>>> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let bad = |e: String| ApiError::bad(API, format!("requests[{i}]: {e}"));
        let Some(fields) = v.as_object() else { return Err(bad("must be an object".into())) };
        if let Some(key) = fields.keys().find(|k| !ITEM_FIELDS.contains(&k.as_str())) {
            return Err(bad(format!("{key} is not supported in an embedding request (input, truncate)")));
        }
        let texts = embed_inputs(&loaded.model, v).map_err(|e| bad(format!("{e:#}")))?;
        if texts.is_empty() {
            return Err(bad("input must not be empty".into()));
        }
        items.push(texts);
    }
    check_embedding_count(&app, items.iter().map(Vec::len).sum(), API)?;
    let counts: Vec<usize> = items.iter().map(|texts| texts.iter().map(Vec::len).sum()).collect();
    // Every input queued before any is awaited: they share passes.
    let mut pending: Vec<Pending> = Vec::with_capacity(items.len());
    for texts in items {
        pending.push(texts.into_iter().map(|t| loaded.engine.embed(t).map_err(|e| ApiError::engine(API, e))).collect::<Result<_, _>>()?);
    }
    let name = loaded.manifest.name.clone();
    let line = move |i: usize, embeddings: Vec<Vec<f32>>, count: usize| {
        json!({
            "index": i, "model": name, "embeddings": embeddings, "prompt_eval_count": count,
            "total_duration": arrived.elapsed().as_nanos() as u64,
        })
    };
    let summary = {
        let (name, total) = (loaded.manifest.name.clone(), counts.iter().sum::<usize>());
        move |n: usize| {
            json!({
                "model": name, "created_at": rfc3339(std::time::SystemTime::now()), "done": true, "items": n,
                "prompt_eval_count": total, "total_duration": arrived.elapsed().as_nanos() as u64, "load_duration": load.as_nanos() as u64,
            })
        }
    };
    let n = pending.len();
    if !stream {
        let mut responses = Vec::with_capacity(n);
        for (i, item) in pending.into_iter().enumerate() {
            responses.push(line(i, answers(item).await?, counts[i]));
        }
        let mut out = summary(n);
        out["responses"] = json!(responses);
        return Ok(Json(out).into_response());
    }
    let lines = futures_util::stream::unfold(Some((pending.into_iter().enumerate(), loaded)), move |state| {
        let (line, summary, counts) = (line.clone(), summary.clone(), counts.clone());
        async move {
            // The model stays loaded while the stream runs.
            let (mut items, loaded) = state?;
            match items.next() {
                Some((i, item)) => {
                    let v = match answers(item).await {
                        Ok(embeddings) => line(i, embeddings, counts[i]),
                        Err(e) => json!({ "index": i, "error": e.message, "done": true }),
                    };
                    Some((v, Some((items, loaded))))
                }
                None => Some((summary(n), None)),
            }
        }
    });
    Ok(ndjson(lines))
}

/// An item's embeddings, in order, once the engine has answered them all.
async fn answers(item: Pending) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut out = Vec::with_capacity(item.len());
    for rx in item {
        out.push(rx.await.unwrap_or(Err(EngineError::Stopped)).map_err(|e| ApiError::engine(API, e))?);
    }
    Ok(out)
}
