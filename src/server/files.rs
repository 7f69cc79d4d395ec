//! OpenAI's files routes, for batch jobs: upload (multipart, streamed to
//! disk under --max-file-size), list, retrieve, content and delete. Only
//! `purpose: "batch"` uploads are taken; a batch's output and error files
//! (`batch_output`) appear here once it ends.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{Api, ApiError};
use super::App;
use crate::jobs::{new_id, now, FileRecord};

const API: Api = Api::OpenAi;

/// The query parameters a route takes, parsed: unknown ones are refused.
pub(super) fn query<'a>(q: &'a HashMap<String, String>, known: &[&str]) -> Result<impl Fn(&str) -> Option<&'a str>, ApiError> {
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad(API, format!("the query parameter {k:?} is not supported")));
    }
    Ok(move |k: &str| q.get(k).map(String::as_str))
}

/// `limit` within 1..=max, `default` when absent.
pub(super) fn limit(text: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => t.parse().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| ApiError::bad(API, format!("limit must be 1 to {max}"))),
    }
}

/// OpenAI's page of a list.
pub(super) fn page(data: Vec<Value>, more: bool) -> Value {
    let (first, last) = (data.first().map(|v| v["id"].clone()), data.last().map(|v| v["id"].clone()));
    json!({ "object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more })
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal(API, e)
}

pub async fn upload(State(app): State<Arc<App>>, form: Result<Multipart, MultipartRejection>) -> Result<Response, ApiError> {
    let mut form = form.map_err(|e| ApiError::bad(API, format!("the body must be multipart/form-data: {e}")))?;
    let jobs = &app.jobs;
    let staging = jobs.upload_path();
    let result = receive(&app, &mut form, &staging).await;
    let (purpose, filename, bytes) = match result {
        Ok(found) => found,
        Err(e) => {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(e);
        }
    };
    let record = FileRecord { id: new_id("file-"), purpose, filename, bytes, created_at: now() };
    tokio::fs::rename(&staging, jobs.file_path(&record.id)).await.map_err(|e| ApiError::internal(API, e))?;
    jobs.add_file(&record).map_err(internal)?;
    Ok(Json(record.object()).into_response())
}

/// Reads the form: `purpose` and `file` (streamed to `staging`).
async fn receive(app: &App, form: &mut Multipart, staging: &std::path::Path) -> Result<(String, String, u64), ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::bad(API, format!("cannot read the form: {e}"));
    let (mut purpose, mut file) = (None, None);
    let max = app.config.max_file_size;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "purpose" => purpose = Some(field.text().await.map_err(bad)?),
            "file" => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                let mut out = tokio::fs::File::create(staging).await.map_err(|e| ApiError::internal(API, e))?;
                let mut bytes = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    bytes += chunk.len() as u64;
                    if bytes > max {
                        return Err(ApiError::new(
                            API,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("the file is over the limit of {max} bytes (--max-file-size)"),
                        ));
                    }
                    out.write_all(&chunk).await.map_err(|e| ApiError::internal(API, e))?;
                }
                out.flush().await.map_err(|e| ApiError::internal(API, e))?;
                file = Some((filename, bytes));
            }
            other => return Err(ApiError::bad(API, format!("the form field {other:?} is not supported"))),
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::bad(API, "purpose is required"))?;
    if purpose != "batch" {
        return Err(ApiError::bad(API, format!("purpose must be \"batch\", got {purpose:?}: files here feed batch jobs")));
    }
    let (filename, bytes) = file.ok_or_else(|| ApiError::bad(API, "file is required"))?;
    Ok((purpose, filename, bytes))
}

pub async fn list(
    State(app): State<Arc<App>>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(API, e))?;
    let get = query(&q, &["purpose", "limit", "after", "order"])?;
    let ascending = match get("order") {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => return Err(ApiError::bad(API, format!("order must be asc or desc, got {o:?}"))),
    };
    let limit = limit(get("limit"), 10_000, 10_000)?;
    let (files, more) = app.jobs.files(get("purpose"), get("after"), limit, ascending).map_err(internal)?;
    Ok(Json(page(files.iter().map(FileRecord::object).collect(), more)).into_response())
}

fn find(app: &App, id: &str) -> Result<FileRecord, ApiError> {
    app.jobs.file(id).map_err(internal)?.ok_or_else(|| ApiError::no_such(API, "file", id))
}

pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(find(&app, &id)?.object()).into_response())
}

/// The file's bytes, streamed.
pub async fn content(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let record = find(&app, &id)?;
    let file = tokio::fs::File::open(app.jobs.file_path(&id)).await.map_err(|e| ApiError::internal(API, e))?;
    // An output file may run on past what was committed when it was listed.
    let chunks = futures_util::stream::unfold((file, record.bytes), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0; left.min(1 << 16) as usize];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (file, left - n as u64)))
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(chunks)).into_response())
}

pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    find(&app, &id)?;
    if let Some(batch) = app.jobs.reader_of(&id).map_err(internal)? {
        return Err(ApiError::new(API, StatusCode::CONFLICT, format!("file '{id}' is the input of batch '{batch}', which has not ended")));
    }
    if !app.jobs.delete_file(&id).map_err(internal)? {
        return Err(ApiError::no_such(API, "file", &id));
    }
    Ok(Json(json!({ "id": id, "object": "file", "deleted": true })).into_response())
}
