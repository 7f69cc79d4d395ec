//! Ollama's routes: /api/generate, /api/chat, /api/embed, /api/embeddings,
//! /api/tags, /api/show and /api/ps.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::error::{Api, ApiError};
use super::log::RequestLog;
use super::models::Loaded;
use super::{ndjson, read_json, App};
use crate::api::fields::{fresh_seed, keep_alive, opt_bool, req_str, KeepAlive};
use crate::api::ollama::{self as shape, Shape, Stats};
use crate::api::tools::{CallSplitter, Tools};
use crate::api::{embed_tokens, logprobs};
use crate::engine::{EngineError, Event, Summary};
use crate::sampler::logprobs::TokenLogprobs;
use crate::store::{human_count, Manifest};

const API: Api = Api::Ollama;

pub async fn generate(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    answer(app, log, body, Shape::Generate).await
}

pub async fn chat(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    answer(app, log, body, Shape::Chat).await
}

/// Timings of a finished sequence, as Ollama reports them.
pub(super) fn stats(s: &Summary, arrived: Instant, load: Duration) -> Stats {
    Stats {
        total: arrived.elapsed(),
        load,
        prompt_eval_count: s.prompt_tokens,
        prompt_eval_duration: s.prompt_duration,
        eval_count: s.generated,
        eval_duration: s.decode_duration,
    }
}

async fn answer(app: Arc<App>, log: RequestLog, body: Body, shape_of: Shape) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = read_json(&app, API, body).await?;
    let name = req_str(&body, "model").map_err(|e| ApiError::bad(API, e))?.to_string();
    let stream = opt_bool(&body, "stream").map_err(|e| ApiError::bad(API, e))?.unwrap_or(true);
    let keep_alive = keep_alive(&body).map_err(|e| ApiError::bad(API, e))?;
    if shape::loads_only(shape_of, &body) {
        if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
            app.registry.find_manifest(&name).map_err(|e| ApiError::store(API, e))?.ok_or_else(|| ApiError::not_found(API, &name))?;
            app.registry.expire(&name).await;
            return Ok(Json(shape::load_line(shape_of, &name, "unload")).into_response());
        }
        app.model(API, &name, &log, keep_alive).await?;
        return Ok(Json(shape::load_line(shape_of, &name, "load")).into_response());
    }
    let (loaded, load) = app.model(API, &name, &log, keep_alive).await?;
    // The model's own defaults (an Ollama Modelfile's) under the request's.
    let body = shape::with_model_system(&body, loaded.manifest.system.as_deref());
    let options = shape::merge_options(loaded.manifest.options.as_ref(), body.get("options"))
        .and_then(|o| shape::parse_options(&o, fresh_seed()))
        .map_err(|e| ApiError::bad(API, e))?;
    let (prompt, tools) = match shape_of {
        Shape::Generate => shape::generate_prompt(&loaded.model, &body).map(|p| (p, None)),
        Shape::Chat => shape::chat_prompt(&loaded.model, &body),
    }
    .map_err(|e| ApiError::bad(API, e))?;
    let grammar = shape::request_grammar(&loaded.model, &body, tools.as_ref()).map_err(|e| ApiError::bad(API, e))?;
    let logprobs = logprobs::flag_and_top(&body).map_err(|e| ApiError::bad(API, e))?;
    let context = loaded.engine.context_length();
    let request = shape::gen_request(prompt, &options, context, grammar, logprobs).map_err(|e| ApiError::bad(API, e))?;
    let gang = app.submit(API, &loaded, vec![request], arrived, &log)?;
    let model = loaded.model.clone();
    // A line's log-probabilities: those of the tokens it brings.
    let with_logprobs = move |mut line: Value, tokens: &[TokenLogprobs]| {
        if logprobs.is_some() && !tokens.is_empty() {
            line["logprobs"] = crate::api::logprobs::entries(&model.tokenizer, tokens);
        }
        line
    };
    if !stream {
        let out = gang.collect(API).await?.remove(0);
        let s = stats(&out.summary, arrived, load);
        let (text, calls) = match &tools {
            Some(t) => t.split(&out.text),
            None => (out.text, Vec::new()),
        };
        let line = shape::line(shape_of, &name, &text, &calls, Some((out.finish, &s)));
        return Ok(Json(with_logprobs(line, &out.logprobs)).into_response());
    }
    // With tools, a call's text is held back and sent as the call once
    // whole; log-probabilities wait for the line that shows their tokens.
    let splitter = tools.as_ref().map(Tools::splitter);
    let lines = futures_util::stream::unfold(Some((gang, splitter, Vec::new())), move |state| {
        let (name, with_logprobs) = (name.clone(), with_logprobs.clone());
        async move {
            let (mut gang, mut splitter, mut unsent) = state?;
            loop {
                match gang.next().await {
                    Some((_, Event::Token { text, logprobs, .. })) => {
                        unsent.extend(logprobs);
                        let (text, calls) = match &mut splitter {
                            Some(s) if !text.is_empty() => s.push(&text),
                            _ => (text, Vec::new()),
                        };
                        if text.is_empty() && calls.is_empty() {
                            continue;
                        }
                        let line = with_logprobs(shape::line(shape_of, &name, &text, &calls, None), &std::mem::take(&mut unsent));
                        return Some((line, Some((gang, splitter, unsent))));
                    }
                    // Ollama reports a failure mid-stream as an error line.
                    Some((_, Event::Failed(message))) => return Some((json!({ "error": message }), None)),
                    Some((_, Event::Done(s))) => {
                        let st = stats(&s, gang.arrived, load);
                        let (rest, calls) = splitter.as_mut().map(CallSplitter::finish).unwrap_or_default();
                        return Some((with_logprobs(shape::line(shape_of, &name, &rest, &calls, Some((s.finish, &st))), &unsent), None));
                    }
                    Some(_) => continue,
                    None => return None,
                }
            }
        }
    });
    // Keep the gang alive with the stream: dropping it cancels.
    Ok(ndjson(lines))
}

/// /api/embed: `input` is a string or an array of strings.
pub async fn embed(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = read_json(&app, API, body).await?;
    let name = req_str(&body, "model").map_err(|e| ApiError::bad(API, e))?.to_string();
    let keep_alive = keep_alive(&body).map_err(|e| ApiError::bad(API, e))?;
    let (loaded, load) = app.model(API, &name, &log, keep_alive).await?;
    let texts = shape::embed_inputs(&loaded.model, &body).map_err(|e| ApiError::bad(API, e))?;
    let count: usize = texts.iter().map(Vec::len).sum();
    let embeddings = embed_all(&app, &loaded, texts, API).await?;
    Ok(Json(json!({
        "model": name, "embeddings": embeddings,
        "total_duration": arrived.elapsed().as_nanos() as u64, "load_duration": load.as_nanos() as u64, "prompt_eval_count": count,
    }))
    .into_response())
}

/// The legacy /api/embeddings: one `prompt`, one `embedding`.
pub async fn embeddings(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    let name = req_str(&body, "model").map_err(|e| ApiError::bad(API, e))?.to_string();
    let prompt = req_str(&body, "prompt").map_err(|e| ApiError::bad(API, e))?.to_string();
    let (loaded, _) = app.model(API, &name, &log, None).await?;
    let tokens = embed_tokens(&loaded.model, &prompt, true).map_err(|e| ApiError::bad(API, e))?;
    let mut v = embed_all(&app, &loaded, vec![tokens], API).await?;
    Ok(Json(json!({ "embedding": v.remove(0) })).into_response())
}

/// A 400 where one request asks for more embeddings than `--max-batch-items`.
pub(super) fn check_embedding_count(app: &App, inputs: usize, api: Api) -> Result<(), ApiError> {
    let limit = app.config.max_batch_items;
    if inputs > limit {
        return Err(ApiError::bad(api, format!("{inputs} inputs; the limit is {limit} (--max-batch-items)")));
    }
    Ok(())
}

/// Embeds each input on the model's engine, in order.
pub(super) async fn embed_all(app: &App, loaded: &Loaded, inputs: Vec<Vec<u32>>, api: Api) -> Result<Vec<Vec<f32>>, ApiError> {
    check_embedding_count(app, inputs.len(), api)?;
    let pending: Vec<_> =
        inputs.into_iter().map(|t| loaded.engine.embed(t).map_err(|e| ApiError::engine(api, e))).collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for rx in pending {
        let answer = rx.await.unwrap_or(Err(EngineError::Stopped));
        out.push(answer.map_err(|e| ApiError::engine(api, e))?);
    }
    Ok(out)
}

/// Ollama's `details` of a model.
pub(super) fn details(m: &Manifest) -> Value {
    json!({
        "parent_model": "", "format": "gguf", "family": m.architecture, "families": [m.architecture],
        "parameter_size": human_count(m.parameters), "quantization_level": m.quantization,
    })
}

fn modified_at(app: &App, m: &Manifest) -> String {
    let t = std::fs::metadata(app.registry.store().blob_path(m)).and_then(|md| md.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    shape::rfc3339(t)
}

pub async fn tags(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let list = app.registry.store().list().map_err(|e| ApiError::store(API, e))?;
    let models: Vec<Value> = list
        .iter()
        .map(|m| json!({ "name": m.name, "model": m.name, "modified_at": modified_at(&app, m), "size": m.size, "digest": m.sha256, "details": details(m) }))
        .collect();
    Ok(Json(json!({ "models": models })).into_response())
}

/// A model's default options as a Modelfile's PARAMETER lines say them
/// (`temperature 0.7`, a `stop "..."` line per stop string).
fn parameters_text(options: Option<&Value>) -> String {
    let Some(Value::Object(options)) = options else { return String::new() };
    let mut lines = Vec::new();
    for (key, value) in options {
        match value {
            Value::Array(list) => lines.extend(list.iter().map(|v| format!("{key} {v}"))),
            v => lines.push(format!("{key} {v}")),
        }
    }
    lines.join("\n")
}

/// The model as a Modelfile: its file, PARAMETERs and SYSTEM.
fn modelfile(path: &std::path::Path, m: &Manifest) -> String {
    let mut text = format!("FROM {}\n", path.display());
    for line in parameters_text(m.options.as_ref()).lines() {
        text += &format!("PARAMETER {line}\n");
    }
    if let Some(system) = &m.system {
        text += &format!("SYSTEM \"\"\"{system}\"\"\"\n");
    }
    text
}

pub async fn show(State(app): State<Arc<App>>, Extension(log): Extension<RequestLog>, body: Body) -> Result<Response, ApiError> {
    let body = read_json(&app, API, body).await?;
    // "name" is the older spelling.
    let name =
        req_str(&body, "model").or_else(|_| req_str(&body, "name")).map_err(|_| ApiError::bad(API, "model is required"))?.to_string();
    log.set_model(&name);
    let m = app.registry.find_manifest(&name).map_err(|e| ApiError::store(API, e))?.ok_or_else(|| ApiError::not_found(API, &name))?;
    let path = app.registry.store().blob_path(&m);
    let reader = app.clone();
    let manifest = m.clone();
    let model_info = tokio::task::spawn_blocking(move || reader.registry.store().info(&manifest))
        .await
        .map_err(|e| ApiError::internal(API, e))?
        .map_err(|e| ApiError::store(API, e))?;
    let mut info = serde_json::Map::new();
    info.insert("general.architecture".into(), json!(m.architecture));
    info.insert("general.parameter_count".into(), json!(m.parameters));
    for (key, n) in model_info.hyper_parameters {
        info.insert(key, json!(n));
    }
    Ok(Json(json!({
        "license": model_info.license,
        "modelfile": modelfile(&path, &m),
        "parameters": parameters_text(m.options.as_ref()),
        "system": m.system.clone().unwrap_or_default(),
        "template": model_info.chat_template,
        "details": details(&m),
        "model_info": info,
        "capabilities": model_info.capabilities,
        "modified_at": modified_at(&app, &m),
    }))
    .into_response())
}

/// Loaded models, and when each will be unloaded if no request comes (a
/// far date for a keep-alive of forever).
pub async fn ps(State(app): State<Arc<App>>) -> Response {
    let loaded = app.registry.loaded_with_expiry().await;
    let models: Vec<Value> = loaded
        .iter()
        .map(|(l, expires)| {
            let m = &l.manifest;
            let expires_at = expires.map_or_else(|| "9999-12-31T23:59:59Z".to_string(), shape::rfc3339);
            json!({
                "name": m.name, "model": m.name, "size": m.size, "digest": m.sha256, "details": details(m),
                "expires_at": expires_at, "size_vram": 0, "context_length": l.engine.context_length(),
                "loaded_at": shape::rfc3339(l.loaded_at),
            })
        })
        .collect();
    Json(json!({ "models": models })).into_response()
}
