//! OpenAI's batches routes: create, retrieve, list and cancel. A created
//! batch is committed in `validating` and handed to its runner
//! (`job_runner`); every answer here is read from the job store.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::error::{Api, ApiError};
use super::files::{limit, page, query};
use super::{job_runner, read_json, App};
use crate::jobs::{new_id, now, BatchRecord, Status, COMPLETION_WINDOW, ENDPOINTS};

const API: Api = Api::OpenAi;

/// The fields a create request may hold.
const FIELDS: [&str; 4] = ["input_file_id", "endpoint", "completion_window", "metadata"];

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal(API, e)
}

fn string<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    body.get(key).and_then(Value::as_str).ok_or_else(|| ApiError::bad(API, format!("{key} is required and must be a string")))
}

/// `metadata`: up to 16 string values under keys of up to 64 characters,
/// values of up to 512, as OpenAI allows.
fn metadata(body: &Value) -> Result<Option<Value>, ApiError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m))
            if m.len() <= 16 && m.iter().all(|(k, v)| k.chars().count() <= 64 && v.as_str().is_some_and(|v| v.chars().count() <= 512)) =>
        {
            Ok(Some(Value::Object(m.clone())))
        }
        Some(_) => {
            Err(ApiError::bad(API, "metadata must be an object of at most 16 string values (keys up to 64 characters, values up to 512)"))
        }
    }
}

pub async fn create(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    if let Some(key) = body.as_object().and_then(|o| o.keys().find(|k| !FIELDS.contains(&k.as_str()))) {
        return Err(ApiError::bad(API, format!("{key} is not supported")));
    }
    let input = string(&body, "input_file_id")?;
    let file = app.jobs.file(input).map_err(internal)?.ok_or_else(|| ApiError::no_such(API, "file", input))?;
    if file.purpose != "batch" {
        return Err(ApiError::bad(API, format!("file '{input}' has purpose {:?}; a batch's input must be a \"batch\" file", file.purpose)));
    }
    let endpoint = string(&body, "endpoint")?;
    if !ENDPOINTS.contains(&endpoint) {
        return Err(ApiError::bad(API, format!("endpoint must be one of {}, got {endpoint:?}", ENDPOINTS.join(", "))));
    }
    let window = string(&body, "completion_window")?;
    if window != COMPLETION_WINDOW {
        return Err(ApiError::bad(API, format!("completion_window must be \"{COMPLETION_WINDOW}\", got {window:?}")));
    }
    let created_at = now();
    let record = BatchRecord {
        id: new_id("batch_"),
        input_file_id: input.to_string(),
        endpoint: endpoint.to_string(),
        model: None,
        metadata: metadata(&body)?,
        status: Status::Validating,
        errors: None,
        created_at,
        expires_at: created_at + crate::test_hooks::batch_window_seconds(),
        times: serde_json::Map::new(),
        output_id: new_id("file-"),
        error_id: new_id("file-"),
        output_published: false,
        error_published: false,
        total: 0,
        completed: 0,
        failed: 0,
        output_bytes: 0,
        error_bytes: 0,
    };
    app.jobs.add_batch(&record).map_err(internal)?;
    job_runner::spawn(app.clone(), record.id.clone());
    Ok(Json(record.object()).into_response())
}

fn find(app: &App, id: &str) -> Result<BatchRecord, ApiError> {
    app.jobs.batch(id).map_err(internal)?.ok_or_else(|| ApiError::no_such(API, "batch", id))
}

pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(find(&app, &id)?.object()).into_response())
}

/// Newest first, `limit` (1-100, default 20) past the batch `after`.
pub async fn list(State(app): State<Arc<App>>, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(API, e))?;
    let get = query(&q, &["limit", "after"])?;
    let (batches, more) = app.jobs.batches(get("after"), limit(get("limit"), 20, 100)?).map_err(internal)?;
    Ok(Json(page(batches.iter().map(BatchRecord::object).collect(), more)).into_response())
}

/// Moves the batch to `cancelling`; its runner stops its requests in
/// flight and ends it `cancelled`, with the answers written so far.
pub async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let before = find(&app, &id)?;
    let moved = app.jobs.advance(&id, &[Status::Validating, Status::InProgress], Status::Cancelling).map_err(internal)?;
    let after = find(&app, &id)?;
    if !moved && !matches!(after.status, Status::Cancelling | Status::Cancelled) {
        return Err(ApiError::new(API, StatusCode::CONFLICT, format!("batch '{id}' is {}: it cannot be cancelled", before.status.name())));
    }
    Ok(Json(after.object()).into_response())
}
