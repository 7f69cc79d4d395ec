//! The route table, and the routes that only report: /, /health,
//! /metrics, /openapi.json, /api/version.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::{access, batch, batch_jobs, files, manage, ollama, openai, tokenize, App};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(root).head(root))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/api/version", get(version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/batch", post(batch::batch))
        .route("/api/pull", post(manage::pull))
        .route("/api/delete", delete(manage::delete))
        .route("/api/copy", post(manage::copy))
        .route("/api/create", post(manage::create))
        .route("/api/push", post(manage::push))
        .route("/api/blobs/{digest}", post(manage::upload_blob).head(manage::has_blob))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*id}", get(openai::model))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/files", post(files::upload).get(files::list).layer(DefaultBodyLimit::disable()))
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(batch_jobs::create).get(batch_jobs::list))
        .route("/v1/batches/{id}", get(batch_jobs::retrieve))
        .route("/v1/batches/{id}/cancel", post(batch_jobs::cancel))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::new(app.config.api_key.clone()), access::require_key))
        .layer(axum::middleware::from_fn(access::catch_panics))
        .layer(axum::middleware::from_fn(super::log::log_requests))
        .with_state(app)
}

async fn root() -> &'static str {
    "Caravan is running"
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

/// 200 once the default model is loaded, 503 before.
async fn health(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "loading" }))).into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let snapshots: Vec<_> = app.registry.loaded().await.iter().map(|l| (l.manifest.name.clone(), l.engine.snapshot())).collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render(&snapshots)).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(access::api_of(uri.path()), StatusCode::NOT_FOUND, format!("no route for {}", uri.path()))
}
