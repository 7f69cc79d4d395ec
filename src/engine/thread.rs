//! The engine on its own thread: it owns the model's KV pool and loops
//! schedule -> forward -> sample -> emit while requests arrive over a
//! channel. When idle, a new request may wait up to the batch window for
//! others so that they start in the same step. Embedding requests run
//! between steps. What each step did, and what entered and left the prefix
//! cache, go to whoever watches.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::embed::{EmbedJob, EmbedQueue};
use super::{Engine, EngineConfig, EngineError, EngineStats, EventStream, GenRequest, Limits, Prepared};
use crate::kv::{KvEvent, KvPool};
use crate::loaded::LoadedModel;

/// The engine's state after its latest step.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineSnapshot {
    pub stats: EngineStats,
    pub total_blocks: usize,
    pub free_blocks: usize,
    /// Unused blocks that still hold a cached prefix (counted in free).
    pub cached_blocks: usize,
    pub running: usize,
    pub waiting: usize,
    pub idle: bool,
}

/// What one step did, for whoever watches the engine (metrics).
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub sequences: usize,
    pub tokens: usize,
    pub duration: Duration,
    /// Sequences preempted while planning this step.
    pub preemptions: u64,
}

pub type StepObserver = Arc<dyn Fn(&StepReport) + Send + Sync>;

/// Takes the prefix cache's events of each step that had any, and a last
/// `Cleared` when the engine stops (its pool is gone).
pub type KvEventSink = Arc<dyn Fn(Vec<KvEvent>) + Send + Sync>;

/// Who watches the engine; nobody by default.
#[derive(Clone, Default)]
pub struct Watchers {
    pub steps: Option<StepObserver>,
    pub kv_events: Option<KvEventSink>,
}

enum Job {
    Gang(Vec<Prepared>),
    /// End every sequence now (shutdown).
    FinishAll,
    Embed(EmbedJob),
}

pub struct EngineHandle {
    submissions: Option<Sender<Job>>,
    limits: Limits,
    snapshot: Arc<Mutex<EngineSnapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl EngineHandle {
    pub fn spawn(model: Arc<LoadedModel>, kv: KvPool, config: EngineConfig, batch_window: Duration, watchers: Watchers) -> EngineHandle {
        let limits = Limits::of(&model, &kv, &config);
        let snapshot = Arc::new(Mutex::new(EngineSnapshot {
            total_blocks: kv.total_blocks(),
            free_blocks: kv.free_blocks(),
            idle: true,
            ..Default::default()
        }));
        let (tx, rx) = channel();
        let shared = snapshot.clone();
        let thread = std::thread::Builder::new()
            .name("caravan-engine".into())
            .spawn(move || {
                run(&model, kv, config, batch_window, &rx, &shared, &watchers);
                if let Some(sink) = &watchers.kv_events {
                    sink(vec![KvEvent::Cleared]);
                }
            })
            .expect("spawn the engine thread");
        EngineHandle { submissions: Some(tx), limits, snapshot, thread: Some(thread) }
    }

    /// Checks the gang and queues it; its streams, in order.
    /// Most sequences the engine runs at once.
    pub fn max_seqs(&self) -> usize {
        self.limits.max_seqs
    }

    pub fn submit(&self, gang: Vec<GenRequest>) -> Result<Vec<EventStream>, EngineError> {
        let (members, streams) = self.limits.prepare(gang)?;
        self.send(Job::Gang(members))?;
        Ok(streams)
    }

    /// Queues an embedding of `tokens`; the answer (or why the input cannot
    /// be embedded) comes on the receiver.
    pub fn embed(&self, tokens: Vec<u32>) -> Result<oneshot::Receiver<Result<Vec<f32>, EngineError>>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Embed(EmbedJob { tokens, reply }))?;
        Ok(rx)
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.submissions.as_ref().expect("open until drop").send(job).map_err(|_| EngineError::Stopped)
    }

    /// Ends every running and waiting sequence at the next step, each with a
    /// final `Done` (finish: length): for shutdown.
    pub fn finish_all(&self) {
        let _ = self.send(Job::FinishAll);
    }

    /// Tokens one sequence may hold: prompt and generated.
    pub fn context_length(&self) -> usize {
        self.limits.context
    }

    pub fn snapshot(&self) -> EngineSnapshot {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for EngineHandle {
    /// Closing the channel lets the engine finish what it has, then stop.
    fn drop(&mut self) {
        self.submissions.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(engine: &mut Engine, embeds: &mut EmbedQueue, job: Job) {
    match job {
        Job::Gang(gang) => engine.enqueue(gang),
        Job::FinishAll => engine.finish_all(),
        Job::Embed(job) => engine.queue_embed(embeds, job),
    }
}

fn run(
    model: &LoadedModel,
    mut kv: KvPool,
    config: EngineConfig,
    window: Duration,
    rx: &Receiver<Job>,
    shared: &Mutex<EngineSnapshot>,
    watchers: &Watchers,
) {
    if watchers.kv_events.is_some() {
        kv.log_events();
    }
    let mut engine = Engine::new(model, &mut kv, config);
    let mut embeds = EmbedQueue::new();
    loop {
        if engine.is_idle() && embeds.is_empty() {
            // Nothing to do: sleep until a request comes, then give others
            // the batch window to join it.
            match rx.recv() {
                Ok(job) => accept(&mut engine, &mut embeds, job),
                Err(_) => return,
            }
            let deadline = Instant::now() + window;
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => accept(&mut engine, &mut embeds, job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        while let Ok(job) = rx.try_recv() {
            accept(&mut engine, &mut embeds, job);
        }
        if !embeds.is_empty() {
            engine.embed_queued(&mut embeds);
        }
        let preempted_before = engine.stats().preemptions;
        let started = Instant::now();
        // A panic in a step (a bug) fails the sequences in the engine; the
        // engine itself goes on serving.
        let worked = catch_unwind(AssertUnwindSafe(|| engine.step())).unwrap_or_else(|_| {
            engine.fail_all("internal error in the engine step");
            true
        });
        let stats = engine.stats();
        if let Some(observe) = watchers.steps.as_ref().filter(|_| worked) {
            observe(&StepReport {
                sequences: stats.last_batch_seqs,
                tokens: stats.last_batch_tokens,
                duration: started.elapsed(),
                preemptions: stats.preemptions - preempted_before,
            });
        }
        if let Some(sink) = &watchers.kv_events {
            let events = engine.kv.take_events();
            if !events.is_empty() {
                sink(events);
            }
        }
        *shared.lock().unwrap_or_else(|e| e.into_inner()) = EngineSnapshot {
            stats,
            total_blocks: engine.kv.total_blocks(),
            free_blocks: engine.kv.free_blocks(),
            cached_blocks: engine.kv.cached_blocks(),
            running: engine.running(),
            waiting: engine.waiting(),
            idle: engine.is_idle(),
        };
        if !worked && !engine.is_idle() {
            // Waiting work that cannot be scheduled now: wait for change.
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(job) => accept(&mut engine, &mut embeds, job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if engine.is_idle() => return,
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
    }
}
