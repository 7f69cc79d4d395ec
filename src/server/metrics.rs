//! Prometheus metrics: what the engines hold now (read from their
//! snapshots when scraped), counters of tokens and preemptions, and
//! histograms of latency and of the batch each step ran. Beside the
//! `caravan_*` names, per model, the vLLM names that load- and
//! prefix-aware routers read (the model-server protocol of Kubernetes'
//! Gateway API Inference Extension and llm-d).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::{EngineSnapshot, StepObserver, StepReport, Summary};

#[derive(Default)]
struct Gauges {
    running: Gauge,
    waiting: Gauge,
    queued_requests: Gauge,
    kv_used: Gauge,
    kv_cached: Gauge,
    kv_total: Gauge,
    loaded_models: Gauge,
}

/// A `model_name` label.
type ByModel = Vec<(&'static str, String)>;

fn by_model(model: &str) -> ByModel {
    vec![("model_name", model.to_string())]
}

type Histograms = Family<ByModel, Histogram, fn() -> Histogram>;

fn ttft_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn queue_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// vLLM's names, as endpoint pickers read them.
struct Vllm {
    registry: Registry,
    running: Family<ByModel, Gauge>,
    waiting: Family<ByModel, Gauge>,
    /// KV blocks held, 0 to 1, under the current name and the older one.
    kv_usage: Family<ByModel, Gauge<f64, AtomicU64>>,
    gpu_usage: Family<ByModel, Gauge<f64, AtomicU64>>,
    prefix_queries: Family<ByModel, Counter>,
    prefix_hits: Family<ByModel, Counter>,
    ttft: Histograms,
    queue_time: Histograms,
}

impl Vllm {
    /// `block_size` is announced, as vLLM's cache_config_info does: a
    /// prefix-cache scorer must hash blocks of the same size.
    fn new(block_size: usize) -> Vllm {
        let mut v = Vllm {
            registry: Registry::default(),
            running: Family::default(),
            waiting: Family::default(),
            kv_usage: Family::default(),
            gpu_usage: Family::default(),
            prefix_queries: Family::default(),
            prefix_hits: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            queue_time: Family::new_with_constructor(queue_histogram),
        };
        let r = &mut v.registry;
        r.register("vllm:num_requests_running", "Sequences running on the model's engine", v.running.clone());
        r.register("vllm:num_requests_waiting", "Sequences waiting for admission", v.waiting.clone());
        r.register("vllm:kv_cache_usage_perc", "Share of the KV pool's blocks in use (0-1)", v.kv_usage.clone());
        r.register("vllm:gpu_cache_usage_perc", "The same share, by its older name", v.gpu_usage.clone());
        r.register("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache", v.prefix_queries.clone());
        r.register("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache", v.prefix_hits.clone());
        r.register("vllm:time_to_first_token_seconds", "From a request's arrival to its first token", v.ttft.clone());
        r.register("vllm:request_queue_time_seconds", "From a request's arrival to its admission", v.queue_time.clone());
        // A gauge of 1 with the settings as labels, as vLLM sends it.
        let config = Family::<Vec<(&'static str, String)>, Gauge>::default();
        config.get_or_create(&vec![("block_size", block_size.to_string()), ("enable_prefix_caching", "True".to_string())]).set(1);
        r.register("vllm:cache_config_info", "The KV cache's settings", config);
        v
    }
}

pub struct Metrics {
    registry: Registry,
    vllm: Vllm,
    gauges: Gauges,
    prefix_hit_tokens: Counter,
    preemptions: Counter,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    rejected: Counter,
    ttft: Histogram,
    tpot: Histogram,
    queue_time: Histogram,
    batch_size: Histogram,
    step_tokens: Histogram,
    /// Requests waiting for their first sequence to be admitted.
    pub queued: AtomicUsize,
}

impl Metrics {
    /// For engines whose KV blocks hold `block_size` tokens.
    pub fn new(block_size: usize) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("caravan"),
            vllm: Vllm::new(block_size),
            gauges: Gauges::default(),
            prefix_hit_tokens: Counter::default(),
            preemptions: Counter::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            rejected: Counter::default(),
            ttft: ttft_histogram(),
            tpot: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            queue_time: queue_histogram(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            step_tokens: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            queued: AtomicUsize::new(0),
        };
        let (r, g) = (&mut m.registry, &m.gauges);
        r.register("running_sequences", "Sequences admitted to an engine and not finished", g.running.clone());
        r.register("waiting_sequences", "Sequences queued in an engine, not yet admitted", g.waiting.clone());
        r.register("queued_requests", "Requests whose sequences are not admitted yet", g.queued_requests.clone());
        r.register("kv_blocks_used", "KV blocks held by sequences", g.kv_used.clone());
        r.register("kv_blocks_cached", "Unused KV blocks keeping a cached prefix (evictable)", g.kv_cached.clone());
        r.register("kv_blocks_total", "KV blocks in the pools", g.kv_total.clone());
        r.register("loaded_models", "Models with a running engine", g.loaded_models.clone());
        r.register("prefix_cache_hit_tokens", "Prompt tokens whose KV came from the prefix cache", m.prefix_hit_tokens.clone());
        r.register("preemptions", "Sequences preempted for lack of KV blocks", m.preemptions.clone());
        r.register("prompt_tokens", "Prompt tokens of finished sequences", m.prompt_tokens.clone());
        r.register("generation_tokens", "Tokens generated", m.generation_tokens.clone());
        r.register("rejected_requests", "Requests refused because the queue was full", m.rejected.clone());
        r.register("time_to_first_token_seconds", "From a request's arrival to its first token", m.ttft.clone());
        r.register("time_per_output_token_seconds", "Between a sequence's tokens after the first", m.tpot.clone());
        r.register("queue_time_seconds", "From a request's arrival to its admission", m.queue_time.clone());
        r.register("batch_size", "Sequences in one engine step", m.batch_size.clone());
        r.register("batch_tokens", "Tokens in one engine step", m.step_tokens.clone());
        m
    }

    /// The engines call this after every step.
    pub fn observer(self: &Arc<Self>) -> StepObserver {
        let m = self.clone();
        Arc::new(move |r: &StepReport| {
            m.batch_size.observe(r.sequences as f64);
            m.step_tokens.observe(r.tokens as f64);
            m.preemptions.inc_by(r.preemptions);
        })
    }

    pub fn reject(&self) {
        self.rejected.inc();
    }

    pub fn admitted(&self, model: &str, waited: Duration) {
        self.queue_time.observe(waited.as_secs_f64());
        self.vllm.queue_time.get_or_create(&by_model(model)).observe(waited.as_secs_f64());
    }

    pub fn first_token(&self, model: &str, after: Duration) {
        self.ttft.observe(after.as_secs_f64());
        self.vllm.ttft.get_or_create(&by_model(model)).observe(after.as_secs_f64());
    }

    /// A finished sequence; `decoding` is the time from its first token on.
    pub fn finished(&self, model: &str, s: &Summary, decoding: Duration) {
        self.prompt_tokens.inc_by(s.prompt_tokens as u64);
        self.prefix_hit_tokens.inc_by(s.cached_tokens as u64);
        self.vllm.prefix_queries.get_or_create(&by_model(model)).inc_by(s.prompt_tokens as u64);
        self.vllm.prefix_hits.get_or_create(&by_model(model)).inc_by(s.cached_tokens as u64);
        self.generation_tokens.inc_by(s.generated as u64);
        if s.generated > 1 {
            self.tpot.observe(decoding.as_secs_f64() / (s.generated - 1) as f64);
        }
    }

    /// The exposition text, with the engines' current state (each with its
    /// model's name).
    pub fn render(&self, engines: &[(String, EngineSnapshot)]) -> String {
        let sum = |f: fn(&EngineSnapshot) -> usize| engines.iter().map(|(_, s)| f(s)).sum::<usize>() as i64;
        let g = &self.gauges;
        g.running.set(sum(|s| s.running));
        g.waiting.set(sum(|s| s.waiting));
        g.queued_requests.set(self.queued.load(Ordering::Relaxed) as i64);
        g.kv_used.set(sum(|s| s.total_blocks - s.free_blocks));
        g.kv_cached.set(sum(|s| s.cached_blocks));
        g.kv_total.set(sum(|s| s.total_blocks));
        g.loaded_models.set(engines.len() as i64);
        let v = &self.vllm;
        // Only loaded models have series of their state.
        v.running.clear();
        v.waiting.clear();
        v.kv_usage.clear();
        v.gpu_usage.clear();
        for (model, s) in engines {
            let labels = by_model(model);
            v.running.get_or_create(&labels).set(s.running as i64);
            v.waiting.get_or_create(&labels).set(s.waiting as i64);
            let usage = (s.total_blocks - s.free_blocks) as f64 / s.total_blocks.max(1) as f64;
            v.kv_usage.get_or_create(&labels).set(usage);
            v.gpu_usage.get_or_create(&labels).set(usage);
        }
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry).and_then(|_| encode_registry(&mut out, &v.registry));
        encoded.and_then(|_| encode_eof(&mut out)).expect("writing to a String cannot fail");
        out
    }
}
