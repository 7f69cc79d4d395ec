//! `caravan serve`: the HTTP server's settings, as flags with matching
//! CARAVAN_* environment variables.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use caravan::api::fields::KeepAlive;
use caravan::engine::{EngineConfig, EngineHandle, Watchers};
use caravan::jobs::db::JobStore;
use caravan::server::kv_events::{KvEventPublisher, KvEventsConfig};
use caravan::server::metrics::Metrics;
use caravan::server::models::{Loader, Registry};
use caravan::server::{listen_addr, serve as run_server, ServerConfig};
use caravan::store::{Store, DEFAULT_MODEL};

use super::compute_args::ComputeArgs;
use super::engine_args::{parse_bytes, EngineArgs};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on: host or host:port (port 11434 if none given)
    #[arg(long, env = "CARAVAN_HOST", default_value = "127.0.0.1:11434")]
    host: String,
    /// Model loaded at start (pulled first if it is the default and missing);
    /// requests may name any installed model
    #[arg(long, env = "CARAVAN_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// Where models are installed (default ~/.caravan/models)
    #[arg(long, env = "CARAVAN_MODELS")]
    models_dir: Option<PathBuf>,
    /// An Ollama model store to serve as it is, never modified (default
    /// ~/.ollama/models when it exists)
    #[arg(long, env = "OLLAMA_MODELS")]
    ollama_models: Option<PathBuf>,
    /// Most requests waiting to be admitted; more get 503 (Ollama routes)
    /// or 429 (OpenAI routes) with Retry-After
    #[arg(long, env = "CARAVAN_MAX_QUEUE", default_value_t = 512)]
    max_queue: usize,
    /// Most models with an engine at once; the least recently used idle one
    /// is unloaded to make room
    #[arg(long, env = "CARAVAN_MAX_LOADED_MODELS", default_value_t = 1)]
    max_loaded_models: usize,
    /// Most items in one /api/batch request (and prompts x n, and inputs to
    /// embed, in one request); more is a 400
    #[arg(long, env = "CARAVAN_MAX_BATCH_ITEMS", default_value_t = 256)]
    max_batch_items: usize,
    /// Largest request body (e.g. 32MiB); larger is a 413
    #[arg(long, env = "CARAVAN_MAX_BODY", value_parser = parse_bytes, default_value = "32MiB")]
    max_body: u64,
    /// Require `Authorization: Bearer KEY` on every route but /health
    #[arg(long, env = "CARAVAN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow browsers from this origin (repeatable; "*" for any); CORS is
    /// off without it
    #[arg(long, env = "CARAVAN_CORS_ORIGIN", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// How long a model stays loaded after its last request, for requests
    /// that set no keep_alive ("5m", "1h", seconds; negative: forever;
    /// else OLLAMA_KEEP_ALIVE, else 5m)
    #[arg(long, env = "CARAVAN_KEEP_ALIVE")]
    keep_alive: Option<KeepAlive>,
    /// On SIGINT/SIGTERM, seconds that requests in flight may take to
    /// finish before they are ended with a final message
    #[arg(long, env = "CARAVAN_SHUTDOWN_GRACE", default_value_t = 5.0)]
    shutdown_grace: f64,
    /// Where batch jobs keep their files and state (default: `jobs` beside
    /// the models folder, ~/.caravan/jobs)
    #[arg(long, env = "CARAVAN_DATA")]
    data_dir: Option<PathBuf>,
    /// Largest file /v1/files takes (e.g. 200MB); larger is a 413
    #[arg(long, env = "CARAVAN_MAX_FILE_SIZE", value_parser = parse_bytes, default_value = "200MB")]
    max_file_size: u64,
    /// Most tokens of each engine step that batch jobs may take: smaller
    /// keeps interactive requests quicker while a job runs
    #[arg(long, env = "CARAVAN_MAX_BACKGROUND_TOKENS", default_value_t = 64)]
    max_background_tokens: usize,
    /// Publish KV-cache events on this ZeroMQ address (`tcp://*:5557`), in
    /// vLLM's format, for routers that place requests by prefix
    #[arg(long, env = "CARAVAN_KV_EVENTS")]
    kv_events: Option<String>,
    /// Answer replay requests for missed KV-cache events on this address
    #[arg(long, env = "CARAVAN_KV_EVENTS_REPLAY", requires = "kv_events")]
    kv_events_replay: Option<String>,
    /// The events' topic: {model} is the model's name, {host} this
    /// machine's
    #[arg(long, env = "CARAVAN_KV_EVENTS_TOPIC", default_value = "kv@{host}@{model}")]
    kv_events_topic: String,
    /// Event batches kept for replay
    #[arg(long, env = "CARAVAN_KV_EVENTS_BUFFER", default_value_t = 10_000)]
    kv_events_buffer: usize,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    compute: ComputeArgs,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let config = EngineConfig { max_background_tokens: a.max_background_tokens, ..a.engine.config()? };
    if !(0.0..=3600.0).contains(&a.shutdown_grace) {
        bail!("--shutdown-grace must be 0 to 3600 seconds");
    }
    if a.compute.threads == 0 || a.max_queue == 0 || a.max_loaded_models == 0 || a.max_batch_items == 0 || a.max_background_tokens == 0 {
        bail!("--threads, --max-queue, --max-loaded-models, --max-batch-items and --max-background-tokens must be at least 1");
    }
    let store = a.models_dir.clone().map(Store::new).unwrap_or_else(Store::from_env);
    let ollama = a.ollama_models.clone().or_else(|| {
        let default = PathBuf::from(std::env::var_os("HOME")?).join(".ollama/models");
        default.is_dir().then_some(default)
    });
    let data_dir = a.data_dir.clone().unwrap_or_else(|| store.root().parent().unwrap_or(store.root()).join("jobs"));
    let jobs = JobStore::open(&data_dir)?;
    let store = match ollama {
        Some(dir) if !dir.is_dir() => bail!("--ollama-models {}: not a folder", dir.display()),
        Some(dir) => store.with_ollama(dir),
        None => store,
    };
    // The default model is pulled before listening, so that the server
    // does not start without it.
    store.resolve(&a.model)?;
    let kv_events = match &a.kv_events {
        Some(endpoint) => {
            let host =
                std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
            let publisher = KvEventPublisher::start(KvEventsConfig {
                endpoint: endpoint.clone(),
                replay: a.kv_events_replay.clone(),
                topic: a.kv_events_topic.replace("{host}", &host),
                buffer_steps: a.kv_events_buffer,
                block_size: a.engine.block_size,
            })?;
            eprintln!("kv events on {endpoint} (block size {})", a.engine.block_size);
            Some(publisher)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new(a.engine.block_size));
    let (engine, compute, steps) = (a.engine.clone(), a.compute.clone(), metrics.observer());
    let loader: Loader = Box::new(move |path, name| {
        let m = Arc::new(compute.open(path)?);
        let kv = engine.pool(&m, false)?;
        let watchers = Watchers { steps: Some(steps.clone()), kv_events: kv_events.as_ref().map(|p| p.sink(name)) };
        let handle = EngineHandle::spawn(m.clone(), kv, config, engine.batch_window(), watchers);
        Ok((m, handle))
    });
    let keep_alive = match (a.keep_alive, std::env::var("OLLAMA_KEEP_ALIVE")) {
        (Some(k), _) => k,
        (None, Ok(text)) => text.parse().map_err(|e| anyhow::anyhow!("OLLAMA_KEEP_ALIVE: {e}"))?,
        (None, Err(_)) => KeepAlive::For(std::time::Duration::from_secs(300)),
    };
    let registry = Registry::new(store, loader, a.max_loaded_models, keep_alive);
    let server = ServerConfig {
        addr: listen_addr(&a.host),
        default_model: a.model,
        max_queue: a.max_queue,
        max_batch_items: a.max_batch_items,
        max_body_bytes: a.max_body.min(usize::MAX as u64) as usize,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        cors_origins: a.cors_origin,
        shutdown_grace: std::time::Duration::from_secs_f64(a.shutdown_grace),
        max_file_size: a.max_file_size,
    };
    run_server(server, registry, metrics, jobs)
}
