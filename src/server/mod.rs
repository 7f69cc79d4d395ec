//! `caravan serve`: the Ollama and OpenAI HTTP APIs and the batch API over
//! the batching engine. Handlers parse a request into engine requests (see
//! `api`), submit them as one gang and stream or collect the events.

mod access;
mod batch;
mod batch_embed;
mod batch_jobs;
mod error;
mod files;
mod gang;
mod job_runner;
pub mod kv_events;
mod log;
mod manage;
pub mod metrics;
pub mod models;
mod ollama;
mod openai;
mod routes;
mod tokenize;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use futures_util::Stream;
use serde_json::Value;

use crate::api::fields::KeepAlive;
use crate::jobs::db::JobStore;
use error::{Api, ApiError};
use log::RequestLog;
use metrics::Metrics;
use models::{LoadError, Loaded, Registry};

pub struct ServerConfig {
    /// host:port to listen on.
    pub addr: String,
    /// Loaded at start; /health answers 200 once it is.
    pub default_model: String,
    /// Requests that may wait for admission before new ones are refused.
    pub max_queue: usize,
    /// Items one /api/batch request (or prompts x n) may hold.
    pub max_batch_items: usize,
    pub max_body_bytes: usize,
    /// Required as `Authorization: Bearer KEY` on every route but /health.
    pub api_key: Option<String>,
    /// Origins allowed by CORS ("*": any); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// On SIGINT/SIGTERM, how long requests in flight may take to finish
    /// before they are ended (with a final message).
    pub shutdown_grace: Duration,
    /// Largest file /v1/files takes.
    pub max_file_size: u64,
}

pub struct App {
    pub config: ServerConfig,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Batch jobs' files and state.
    pub jobs: JobStore,
    ready: AtomicBool,
}

impl App {
    /// The model a request names, loaded.
    async fn model(
        &self,
        api: Api,
        name: &str,
        log: &RequestLog,
        keep_alive: Option<KeepAlive>,
    ) -> Result<(Arc<Loaded>, Duration), ApiError> {
        log.set_model(name);
        match self.registry.get(name, keep_alive).await {
            Ok(found) => Ok(found),
            Err(LoadError::NotFound) => Err(ApiError::not_found(api, name)),
            Err(LoadError::Busy) => {
                Err(ApiError::overloaded(api, "every loaded model is busy and --max-loaded-models is reached; retry later"))
            }
            Err(LoadError::Store(e)) => Err(ApiError::store(api, e)),
            Err(LoadError::Failed(e)) => Err(ApiError::internal(api, format!("cannot load model '{name}': {e:#}"))),
        }
    }

    /// Submits a gang behind the queue limit.
    fn submit(
        &self,
        api: Api,
        loaded: &Loaded,
        requests: Vec<crate::engine::GenRequest>,
        arrived: Instant,
        log: &RequestLog,
    ) -> Result<gang::Gang, ApiError> {
        gang::Gang::submit(loaded, requests, api, &self.metrics, self.config.max_queue, arrived, log)
    }
}

/// Reads a JSON body within the size limit.
async fn read_json(app: &App, api: Api, body: Body) -> Result<Value, ApiError> {
    let limit = app.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            api,
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {limit} bytes (--max-body)"),
        )
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(api, format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad(api, "the body must be a JSON object"));
    }
    if crate::test_hooks::handler_panics(&v) {
        panic!("injected fault while handling a request");
    }
    Ok(v)
}

fn streamed(content_type: &'static str, stream: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    Response::builder().header(CONTENT_TYPE, content_type).body(body).expect("valid response")
}

/// Newline-delimited JSON, as Ollama streams.
fn ndjson(lines: impl Stream<Item = Value> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    streamed("application/x-ndjson", lines.map(|v| Bytes::from(format!("{v}\n"))))
}

/// Server-sent events, as OpenAI streams; ends with `data: [DONE]`.
fn sse(events: impl Stream<Item = Value> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    let done = futures_util::stream::once(async { Bytes::from_static(b"data: [DONE]\n\n") });
    streamed("text/event-stream", events.map(|v| Bytes::from(format!("data: {v}\n\n"))).chain(done))
}

/// "host", "host:port" or "http://host:port" -> "host:port" (port 11434 by
/// default, as Ollama).
pub fn listen_addr(host: &str) -> String {
    let h = host.trim().trim_start_matches("http://").trim_end_matches('/');
    let has_port = h.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(']'));
    if has_port {
        h.to_string()
    } else {
        format!("{h}:11434")
    }
}

/// Runs the server until SIGINT or SIGTERM, then stops accepting, gives
/// requests in flight the grace period, ends the rest with a final message,
/// and returns. Batch jobs left unfinished in `jobs` continue at start;
/// those running at the end continue at the next.
pub fn serve(config: ServerConfig, registry: Registry, metrics: Arc<Metrics>, jobs: JobStore) -> Result<()> {
    let cors = access::cors(&config.cors_origins)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.addr).await.with_context(|| format!("cannot listen on {}", config.addr))?;
        eprintln!("caravan listening on http://{}", listener.local_addr()?);
        let app = Arc::new(App { config, registry: Arc::new(registry), metrics, jobs, ready: AtomicBool::new(false) });
        job_runner::resume_all(&app)?;
        let loading = app.clone();
        tokio::spawn(async move {
            let name = loading.config.default_model.clone();
            match loading.registry.get(&name, None).await {
                Ok(_) => loading.ready.store(true, Ordering::Release),
                Err(e) => {
                    let why = match e {
                        LoadError::NotFound => format!("model '{name}' is not installed"),
                        LoadError::Busy => "no room to load it".into(),
                        LoadError::Store(e) => e.to_string(),
                        LoadError::Failed(e) => format!("{e:#}"),
                    };
                    eprintln!("error: cannot load the default model: {why}");
                    std::process::exit(1);
                }
            }
        });
        let sweeping = app.registry.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Registry::SWEEP_EVERY).await;
                sweeping.sweep().await;
            }
        });
        let mut router = routes::router(app.clone());
        if let Some(cors) = cors {
            router = router.layer(cors);
        }
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let grace = app.config.shutdown_grace;
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("shutting down: no new connections; requests in flight have {grace:?} to finish");
            let _ = stop_tx.send(true);
        });
        let end_the_rest = async move {
            let _ = stop_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
            let loaded = app.registry.loaded().await;
            eprintln!("shutting down: ending the requests still running");
            for l in &loaded {
                l.engine.finish_all();
            }
            // Their final messages go out; then the connections close.
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
        tokio::select! {
            r = server => r?,
            _ = end_the_rest => eprintln!("shutting down: connections still open after the final messages were closed"),
        }
        Ok::<_, anyhow::Error>(())
    });
    // Engine threads and blocking loads are not waited for beyond this.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
