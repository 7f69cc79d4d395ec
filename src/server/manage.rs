//! Models managed over HTTP, as Ollama's API has it: /api/pull (catalog
//! names, NDJSON progress), /api/delete, /api/copy, /api/create (from an
//! installed model or an uploaded GGUF blob, with a system prompt and
//! options), /api/blobs/{digest} (HEAD,
//! POST with the digest checked), and /api/push (refused: there is no
//! registry to push to).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::error::{Api, ApiError};
use super::{ndjson, read_json, App};
use crate::api::fields::{opt_bool, opt_str, req_str};
use crate::api::ollama;
use crate::store::{catalog_sha256, Manifest};

const API: Api = Api::Ollama;

/// `model`, or the older `name`.
fn model_field(body: &Value) -> Result<String, ApiError> {
    match opt_str(body, "model").and_then(|m| Ok(m.or(opt_str(body, "name")?))) {
        Ok(Some(m)) if !m.is_empty() => Ok(m.to_string()),
        Ok(_) => Err(ApiError::bad(API, "model is required")),
        Err(e) => Err(ApiError::bad(API, e)),
    }
}

/// Ollama's names: "smollm2" means "smollm2:latest".
fn full_name(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The answer to a request that streams status lines unless `stream` is
/// false: all of them, or the last alone.
fn statuses(stream: bool, lines: Vec<Value>) -> Response {
    if stream {
        ndjson(futures_util::stream::iter(lines))
    } else {
        Json(lines.last().cloned().unwrap_or_else(|| json!({ "status": "success" }))).into_response()
    }
}

pub async fn pull(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let name = model_field(&body)?;
    let stream = opt_bool(&body, "stream").map_err(|e| ApiError::bad(API, e))?.unwrap_or(true);
    let sha = catalog_sha256(&name)
        .ok_or_else(|| ApiError::new(API, StatusCode::NOT_FOUND, format!("model '{name}' is not in the catalog: pull one of its names")))?;
    let digest = format!("sha256:{sha}");
    let installed = app.registry.store().find(&name).map_err(|e| ApiError::store(API, e))?.is_some_and(|m| m.sha256 == sha);
    let mut lines = vec![json!({ "status": "pulling manifest" })];
    if !installed {
        let registry = app.registry.clone();
        let fetch = name.clone();
        let pulled = tokio::task::spawn_blocking(move || registry.store().pull(&fetch, None))
            .await
            .map_err(|e| ApiError::internal(API, format!("pulling panicked: {e}")))?;
        match pulled {
            Ok(m) => {
                lines.push(json!({ "status": format!("pulling {}", &sha[..12]), "digest": digest, "total": m.size, "completed": m.size }))
            }
            // Streaming, the failure is the last line, as Ollama sends it.
            Err(e) if stream => {
                lines.push(json!({ "error": format!("{e:#}") }));
                return Ok(statuses(true, lines));
            }
            Err(e) => return Err(ApiError::internal(API, e)),
        }
    }
    lines.extend([json!({ "status": "verifying sha256 digest" }), json!({ "status": "writing manifest" }), json!({ "status": "success" })]);
    Ok(statuses(stream, lines))
}

/// Unloads the model once its running requests end, then removes it.
pub async fn delete(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let name = model_field(&body)?;
    let m = app.registry.find_manifest(&name).map_err(|e| ApiError::store(API, e))?.ok_or_else(|| ApiError::not_found(API, &name))?;
    if !app.registry.store().is_own(&m.name) {
        return Err(ApiError::bad(API, format!("model '{}' is in the Ollama store, which Caravan does not modify", m.name)));
    }
    app.registry.expire(&m.name).await;
    app.registry.store().remove(&m.name).map_err(|e| ApiError::internal(API, e))?;
    Ok(StatusCode::OK.into_response())
}

pub async fn copy(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let source = req_str(&body, "source").map_err(|e| ApiError::bad(API, e))?;
    let destination = full_name(req_str(&body, "destination").map_err(|e| ApiError::bad(API, e))?);
    let m = app.registry.find_manifest(source).map_err(|e| ApiError::store(API, e))?.ok_or_else(|| ApiError::not_found(API, source))?;
    app.registry.store().copy(&m.name, &destination).map_err(|e| ApiError::bad(API, e))?;
    Ok(StatusCode::OK.into_response())
}

pub async fn push() -> ApiError {
    ApiError::bad(API, "push is not supported: Caravan has no registry to push to")
}

/// `sha256:<hex>` out of a blob's address.
fn blob_digest(digest: &str) -> Result<&str, ApiError> {
    digest.strip_prefix("sha256:").ok_or_else(|| ApiError::bad(API, format!("blob digest {digest:?} must be sha256:<64 hex digits>")))
}

pub async fn has_blob(State(app): State<Arc<App>>, Path(digest): Path<String>) -> Result<Response, ApiError> {
    let sha = blob_digest(&digest)?;
    let status = if app.registry.store().has_blob(sha) { StatusCode::OK } else { StatusCode::NOT_FOUND };
    Ok(status.into_response())
}

/// Streams the body to the store, hashing it; kept only if the hash is the
/// one in the address.
pub async fn upload_blob(State(app): State<Arc<App>>, Path(digest): Path<String>, body: Body) -> Result<Response, ApiError> {
    let sha = blob_digest(&digest)?;
    if app.registry.store().has_blob(sha) {
        return Ok(StatusCode::OK.into_response());
    }
    let mut writer = app.registry.store().blob_writer(sha).map_err(|e| ApiError::bad(API, e))?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(API, format!("reading the upload: {e}")))?;
        writer.write(&chunk).map_err(|e| ApiError::internal(API, e))?;
    }
    writer.finish().map_err(|e| ApiError::bad(API, e))?;
    Ok(StatusCode::CREATED.into_response())
}

/// Fields of Ollama's create Caravan does not take: a Go template (the
/// file's own chat template is used), and what changes the weights or
/// their metadata. Refused by name.
const CREATE_UNSUPPORTED: [&str; 5] = ["template", "messages", "adapters", "quantize", "license"];

/// A model from an installed one (`from`) or from one uploaded GGUF blob
/// (`files: {"name.gguf": "sha256:..."}`), with a default `system` prompt
/// and default options (`parameters`) over those it had.
pub async fn create(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let name = full_name(&model_field(&body)?);
    let stream = opt_bool(&body, "stream").map_err(|e| ApiError::bad(API, e))?.unwrap_or(true);
    if let Some(key) = CREATE_UNSUPPORTED.iter().find(|k| !matches!(body.get(**k), None | Some(Value::Null))) {
        return Err(ApiError::bad(API, format!("{key} is not supported: a model here is its GGUF file, a system prompt and options")));
    }
    let store = app.registry.store();
    let files = body.get("files").filter(|f| !f.is_null());
    let from = opt_str(&body, "from").map_err(|e| ApiError::bad(API, e))?;
    let base = match (from, files) {
        (Some(_), Some(_)) => return Err(ApiError::bad(API, "give from or files, not both")),
        (Some(from), None) => {
            app.registry.find_manifest(from).map_err(|e| ApiError::store(API, e))?.ok_or_else(|| ApiError::not_found(API, from))?
        }
        (None, Some(Value::Object(files))) if files.len() == 1 => {
            let (file, digest) = files.iter().next().expect("one entry");
            let digest = digest.as_str().ok_or_else(|| ApiError::bad(API, format!("files[{file:?}] must be a digest string")))?;
            if !file.ends_with(".gguf") {
                return Err(ApiError::bad(API, format!("files[{file:?}]: only one GGUF file makes a model here")));
            }
            store.blob_manifest(&name, blob_digest(digest)?).map_err(|e| ApiError::bad(API, e))?
        }
        (None, Some(_)) => return Err(ApiError::bad(API, "files must be {\"<name>.gguf\": \"sha256:<hex>\"}, one GGUF file")),
        (None, None) => return Err(ApiError::bad(API, "from or files is required")),
    };
    let system = opt_str(&body, "system").map_err(|e| ApiError::bad(API, e))?.map(str::to_string).or(base.system.clone());
    let options = match body.get("parameters").filter(|p| !p.is_null()) {
        Some(p @ Value::Object(_)) => {
            let merged = ollama::merge_options(base.options.as_ref(), Some(p)).map_err(|e| ApiError::bad(API, e))?;
            // Checked as a request's options would be, so that a bad one
            // fails here rather than in every request.
            ollama::parse_options(&merged, 0).map_err(|e| ApiError::bad(API, format!("parameters: {e:#}")))?;
            Some(merged)
        }
        Some(_) => return Err(ApiError::bad(API, "parameters must be an object of options")),
        None => base.options.clone(),
    };
    store.save(&Manifest { name, system, options, ..base }).map_err(|e| ApiError::bad(API, e))?;
    let lines = vec![json!({ "status": "parsing GGUF" }), json!({ "status": "writing manifest" }), json!({ "status": "success" })];
    Ok(statuses(stream, lines))
}
