//! OpenAI's routes: /v1/completions, /v1/chat/completions, /v1/models and
//! /v1/embeddings. Every prompt of a request and every one of its `n`
//! choices run as one gang, sharing the prompt's KV.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde_json::{json, Value};

use super::error::{Api, ApiError};
use super::log::RequestLog;
use super::models::Loaded;
use super::ollama::embed_all;
use super::{read_json, sse, App};
use crate::api::fields::{fresh_seed, opt_str};
use crate::api::openai::{self as shape, Choice, Kind};
use crate::api::tools::{CallSplitter, ToolCall};
use crate::engine::Event;
use crate::sampler::logprobs::TokenLogprobs;
use crate::store::Manifest;

pub(super) const API: Api = Api::OpenAi;

/// `model`, or the server's default model when absent (as llama.cpp's
/// and vLLM's servers allow).
pub(super) fn model_name(app: &App, body: &Value) -> Result<String, ApiError> {
    Ok(opt_str(body, "model").map_err(|e| ApiError::bad(API, e))?.unwrap_or(&app.config.default_model).to_string())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub async fn completions(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    complete(app, log, body, Kind::Completion).await
}

pub async fn chat(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    complete(app, log, body, Kind::Chat).await
}

async fn complete(app: Arc<App>, log: RequestLog, body: Body, kind: Kind) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = read_json(&app, API, body).await?;
    let name = model_name(&app, &body)?;
    let (loaded, _) = app.model(API, &name, &log, None).await?;
    let job =
        shape::parse(&loaded.model, kind, &body, fresh_seed(), None, app.config.max_batch_items).map_err(|e| ApiError::bad(API, e))?;
    let gang = app.submit(API, &loaded, job.requests.clone(), arrived, &log)?;
    if !job.stream {
        return Ok(Json(answer_body(gang, &job, &loaded, &name).await?).into_response());
    }
    let id = answer_id(kind);
    let created = now_secs();
    let model = loaded.model.clone();
    let prompt_tokens: usize = job.prompt_tokens.iter().sum();
    let (include_usage, with_logprobs) = (job.include_usage, job.logprobs);
    let n = job.requests.len();
    // With tools offered, each choice's text runs through a splitter that
    // holds back call blocks until they close; the count is its calls so far.
    let splitters: Option<Vec<(CallSplitter, usize)>> =
        job.tools.as_ref().map(|t| job.requests.iter().map(|_| (t.splitter(), 0)).collect());
    let state = Streaming { gang, generated: 0, splitters, unsent: vec![Vec::new(); n], offsets: vec![0; n] };
    let chunks = futures_util::stream::unfold(Some(state), move |state| {
        let (id, name, model) = (id.clone(), name.clone(), model.clone());
        async move {
            let head = shape::StreamHead { kind, id: &id, created, model: &name };
            let mut st = state?;
            loop {
                let (i, chunk) = match st.gang.next().await {
                    Some((i, Event::Started { .. })) if kind == Kind::Chat => (i, head.chunk(i, "", true, None)),
                    Some((i, Event::Token { text, logprobs, .. })) => {
                        st.generated += 1;
                        st.unsent[i].extend(logprobs);
                        if text.is_empty() {
                            continue;
                        }
                        match st.splitters.as_mut() {
                            Some(s) => match split_step(&mut s[i], |sp| sp.push(&text)) {
                                Some(step) => (i, head.tool_chunk(i, &step, None)),
                                None => continue,
                            },
                            None => (i, head.chunk(i, &text, false, None)),
                        }
                    }
                    Some((i, Event::Done(s))) => match st.splitters.as_mut() {
                        Some(sp) => {
                            let step = split_step(&mut sp[i], CallSplitter::finish);
                            let none = shape::ToolStep { text: String::new(), calls: Vec::new(), first_call: sp[i].1 };
                            (i, head.tool_chunk(i, &step.unwrap_or(none), Some(s.finish)))
                        }
                        None => (i, head.chunk(i, "", false, Some(s.finish))),
                    },
                    Some((_, Event::Failed(message))) => {
                        let error = ApiError::internal(API, message).body();
                        return Some((error, None));
                    }
                    Some(_) => continue,
                    None if include_usage => return Some((head.usage(prompt_tokens, st.generated), None)),
                    None => return None,
                };
                let mut chunk = chunk;
                let tokens = std::mem::take(&mut st.unsent[i]);
                if with_logprobs && !tokens.is_empty() {
                    chunk["choices"][0]["logprobs"] = shape::choice_logprobs(kind, &model.tokenizer, &tokens, &mut st.offsets[i]);
                }
                return Some((chunk, Some(st)));
            }
        }
    });
    Ok(sse(chunks))
}

fn answer_id(kind: Kind) -> String {
    let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    format!("{prefix}-{:016x}", fresh_seed())
}

/// The answer to `job` once `gang` has run it: a completion or chat
/// completion object.
pub(super) async fn answer_body(gang: super::gang::Gang, job: &shape::Job, loaded: &Loaded, name: &str) -> Result<Value, ApiError> {
    let outputs = gang.collect(API).await?;
    let choices: Vec<Choice> =
        outputs.into_iter().map(|o| Choice { text: o.text, tokens: o.tokens, finish: Some(o.finish), logprobs: o.logprobs }).collect();
    Ok(shape::response_body(job, &loaded.model.tokenizer, &answer_id(job.kind), now_secs(), name, &choices))
}

/// A streamed answer in flight: the gang (dropping it cancels), the tokens
/// generated so far, the choices' call splitters, and per choice the
/// log-probabilities not yet sent (they go with its next chunk) and where
/// its text stands in characters.
struct Streaming {
    gang: super::gang::Gang,
    generated: usize,
    splitters: Option<Vec<(CallSplitter, usize)>>,
    unsent: Vec<Vec<TokenLogprobs>>,
    offsets: Vec<usize>,
}

/// One splitter step for a streamed choice: None when it shows nothing yet.
fn split_step(
    (splitter, made): &mut (CallSplitter, usize),
    step: impl FnOnce(&mut CallSplitter) -> (String, Vec<ToolCall>),
) -> Option<shape::ToolStep> {
    let (text, calls) = step(splitter);
    let first_call = *made;
    *made += calls.len();
    (!text.is_empty() || !calls.is_empty()).then_some(shape::ToolStep { text, calls, first_call })
}

fn model_object(app: &App, m: &Manifest) -> Value {
    let created = std::fs::metadata(app.registry.store().blob_path(m))
        .and_then(|md| md.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({ "id": m.name, "object": "model", "created": created, "owned_by": "caravan" })
}

pub async fn models(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let list = app.registry.store().list().map_err(|e| ApiError::store(API, e))?;
    Ok(Json(json!({ "object": "list", "data": list.iter().map(|m| model_object(&app, m)).collect::<Vec<_>>() })).into_response())
}

pub async fn model(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let m = app.registry.find_manifest(&id).map_err(|e| ApiError::store(API, e))?.ok_or_else(|| ApiError::not_found(API, &id))?;
    Ok(Json(model_object(&app, &m)).into_response())
}

/// `input`: a string, an array of strings, an array of token ids or an
/// array of such arrays; `encoding_format` float or base64 (what the
/// official client asks for by default).
pub async fn embeddings(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let name = model_name(&app, &body)?;
    let (loaded, _) = app.model(API, &name, &log, None).await?;
    Ok(Json(embeddings_body(&app, &loaded, &name, &body).await?).into_response())
}

/// The embeddings list answering `body`.
pub(super) async fn embeddings_body(app: &App, loaded: &Loaded, name: &str, body: &Value) -> Result<Value, ApiError> {
    let base64 = match opt_str(body, "encoding_format").map_err(|e| ApiError::bad(API, e))? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => return Err(ApiError::bad(API, format!("encoding_format must be float or base64, got {f:?}"))),
    };
    if !matches!(body.get("dimensions"), None | Some(Value::Null)) {
        return Err(ApiError::bad(API, "dimensions is not supported"));
    }
    let inputs = shape::embedding_inputs(&loaded.model, body).map_err(|e| ApiError::bad(API, e))?;
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    let vectors = embed_all(app, loaded, inputs, API).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(json!({ "object": "list", "data": data, "model": name, "usage": { "prompt_tokens": tokens, "total_tokens": tokens } }))
}
