//! The engine on its own thread: it owns the model's KV pool and loops
//! schedule -> forward -> sample -> emit while requests arrive over a
//! channel. When idle, a new request may wait up to the batch window for
//! others so that they start in the same step.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{Engine, EngineConfig, EngineStats, EventStream, GenRequest, Limits, Prepared};
use crate::kv::KvPool;
use crate::loaded::LoadedModel;

/// The engine's state after its latest step.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineSnapshot {
    pub stats: EngineStats,
    pub total_blocks: usize,
    pub free_blocks: usize,
    pub idle: bool,
}

pub struct EngineHandle {
    submissions: Option<Sender<Vec<Prepared>>>,
    limits: Limits,
    snapshot: Arc<Mutex<EngineSnapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl EngineHandle {
    pub fn spawn(model: Arc<LoadedModel>, kv: KvPool, config: EngineConfig, batch_window: Duration) -> EngineHandle {
        let limits = Limits::of(&model, &kv, &config);
        let snapshot = Arc::new(Mutex::new(EngineSnapshot { total_blocks: kv.total_blocks(), free_blocks: kv.free_blocks(), idle: true, ..Default::default() }));
        let (tx, rx) = channel();
        let shared = snapshot.clone();
        let thread = std::thread::Builder::new()
            .name("caravan-engine".into())
            .spawn(move || run(&model, kv, config, batch_window, &rx, &shared))
            .expect("spawn the engine thread");
        EngineHandle { submissions: Some(tx), limits, snapshot, thread: Some(thread) }
    }

    /// Checks the gang and queues it; its streams, in order.
    pub fn submit(&self, gang: Vec<GenRequest>) -> Result<Vec<EventStream>> {
        let (members, streams) = self.limits.prepare(gang)?;
        self.submissions.as_ref().expect("open until drop").send(members).map_err(|_| anyhow!("the engine has stopped"))?;
        Ok(streams)
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

fn run(model: &LoadedModel, mut kv: KvPool, config: EngineConfig, window: Duration, rx: &Receiver<Vec<Prepared>>, shared: &Mutex<EngineSnapshot>) {
    let mut engine = Engine::new(model, &mut kv, config);
    loop {
        if engine.is_idle() {
            // Nothing to do: sleep until a request comes, then give others
            // the batch window to join it.
            match rx.recv() {
                Ok(gang) => engine.enqueue(gang),
                Err(_) => return,
            }
            let deadline = Instant::now() + window;
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(gang) => engine.enqueue(gang),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        while let Ok(gang) = rx.try_recv() {
            engine.enqueue(gang);
        }
        let worked = engine.step();
        *shared.lock().unwrap_or_else(|e| e.into_inner()) =
            EngineSnapshot { stats: engine.stats(), total_blocks: engine.kv.total_blocks(), free_blocks: engine.kv.free_blocks(), idle: engine.is_idle() };
        if !worked && !engine.is_idle() {
            // Waiting work that cannot be scheduled now: wait for change.
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(gang) => engine.enqueue(gang),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if engine.is_idle() => return,
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
    }
}
