//! /tokenize and /detokenize, as llama.cpp's and vLLM's servers answer
//! them (OpenAI's error shape, `model` optional).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

use super::error::{Api, ApiError};
use super::log::RequestLog;
use super::openai::model_name;
use super::{read_json, App};
use crate::api::tokenize;
use crate::loaded::LoadedModel;

const API: Api = Api::OpenAi;

async fn answer(
    app: Arc<App>,
    log: RequestLog,
    body: Body,
    f: fn(&LoadedModel, &Value) -> anyhow::Result<Value>,
) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let name = model_name(&app, &body)?;
    let (loaded, _) = app.model(API, &name, &log, None).await?;
    Ok(Json(f(&loaded.model, &body).map_err(|e| ApiError::bad(API, e))?).into_response())
}

pub async fn tokenize(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    answer(app, log, body, tokenize::tokenize).await
}

pub async fn detokenize(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    answer(app, log, body, tokenize::detokenize).await
}
