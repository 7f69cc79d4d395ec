//! The loaded models: one engine each, loaded when a request names an
//! installed model, at most `max_loaded` at once; when full, the least
//! recently used idle one is unloaded to make room. Each stays loaded for
//! its keep-alive after its last request ends (the last request's
//! `keep_alive`, else the server's), then a sweep unloads it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::api::fields::KeepAlive;
use crate::engine::EngineHandle;
use crate::loaded::LoadedModel;
use crate::store::{Manifest, Store, StoreError};

/// Opens a model file and starts its engine for the model of that name
/// (the command line decides threads, the KV pool's size and who watches).
pub type Loader = Box<dyn Fn(&std::path::Path, &str) -> Result<(Arc<LoadedModel>, EngineHandle)> + Send + Sync>;

pub struct Loaded {
    pub manifest: Manifest,
    pub model: Arc<LoadedModel>,
    pub engine: EngineHandle,
    pub loaded_at: SystemTime,
    life: Mutex<Life>,
}

/// When a model was last asked for, how long it may stay idle, and since
/// when it is idle (None while in use).
struct Life {
    last_used: Instant,
    keep_alive: KeepAlive,
    idle_since: Option<Instant>,
}

impl Loaded {
    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asked for now, to stay `keep_alive` after its last request.
    fn touch(&self, keep_alive: KeepAlive) {
        let mut life = self.life();
        (life.last_used, life.keep_alive, life.idle_since) = (Instant::now(), keep_alive, None);
    }

    fn last_used(&self) -> Instant {
        self.life().last_used
    }

    /// In use: held by a request (the registry holds one reference), or
    /// with sequences in its engine.
    fn busy(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) > 1 || !self.engine.snapshot().idle
    }

    /// When it will be unloaded if no request comes (None: never). While in
    /// use, the keep-alive counts from now.
    fn expires_at(self: &Arc<Self>) -> Option<SystemTime> {
        let busy = self.busy();
        let life = self.life();
        let KeepAlive::For(keep) = life.keep_alive else { return None };
        let idle_for = match (busy, life.idle_since) {
            (false, Some(since)) => since.elapsed(),
            _ => Duration::ZERO,
        };
        Some(SystemTime::now() + keep.saturating_sub(idle_for))
    }
}

/// How long a request for a model that is not loaded waits for a loaded
/// one to go idle before it is refused.
const BUSY_WAIT: Duration = Duration::from_secs(30);

pub enum LoadError {
    /// Not installed.
    NotFound,
    /// Every loaded model is busy and no more may be loaded.
    Busy,
    /// The store could not say whether it is installed.
    Store(StoreError),
    Failed(anyhow::Error),
}

pub struct Registry {
    store: Store,
    loader: Loader,
    max_loaded: usize,
    /// For requests that give none.
    keep_alive: KeepAlive,
    loaded: tokio::sync::Mutex<Vec<Arc<Loaded>>>,
}

impl Registry {
    pub fn new(store: Store, loader: Loader, max_loaded: usize, keep_alive: KeepAlive) -> Registry {
        Registry { store, loader, max_loaded: max_loaded.max(1), keep_alive, loaded: tokio::sync::Mutex::new(Vec::new()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Ollama's names: "smollm2" means "smollm2:latest".
    pub fn find_manifest(&self, name: &str) -> Result<Option<Manifest>, StoreError> {
        match self.store.find(name)? {
            None if !name.contains(':') => self.store.find(&format!("{name}:latest")),
            found => Ok(found),
        }
    }

    /// The model's engine, loading it if needed, and how long loading took;
    /// it then stays `keep_alive` (None: the server's) after its last
    /// request. With `max_loaded` models loaded and all of them in use, it
    /// waits (up to `BUSY_WAIT`) for one to go idle, as a request that has
    /// just been answered may hold its model a moment longer.
    pub async fn get(self: &Arc<Self>, name: &str, keep_alive: Option<KeepAlive>) -> Result<(Arc<Loaded>, Duration), LoadError> {
        let keep_alive = keep_alive.unwrap_or(self.keep_alive);
        let manifest = self.find_manifest(name).map_err(LoadError::Store)?.ok_or(LoadError::NotFound)?;
        let deadline = Instant::now() + BUSY_WAIT;
        let mut loaded = loop {
            let mut loaded = self.loaded.lock().await;
            if let Some(l) = loaded.iter().find(|l| l.manifest.name == manifest.name) {
                l.touch(keep_alive);
                return Ok((l.clone(), Duration::ZERO));
            }
            if loaded.len() < self.max_loaded {
                break loaded;
            }
            // Unload the least recently used model nobody is using.
            let idle = loaded.iter().enumerate().filter(|(_, l)| !l.busy()).min_by_key(|(_, l)| l.last_used()).map(|(i, _)| i);
            if let Some(idle) = idle {
                unload(loaded.remove(idle)).await;
                break loaded;
            }
            drop(loaded);
            if Instant::now() >= deadline {
                return Err(LoadError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let started = Instant::now();
        let path = self.store.blob_path(&manifest);
        let (this, name) = (self.clone(), manifest.name.clone());
        let opened = tokio::task::spawn_blocking(move || (this.loader)(&path, &name))
            .await
            .map_err(|e| LoadError::Failed(anyhow::anyhow!("loading panicked: {e}")))?
            .map_err(LoadError::Failed)?;
        let took = started.elapsed();
        eprintln!("loaded {} in {:.2} s", manifest.name, took.as_secs_f64());
        let l = Arc::new(Loaded {
            manifest,
            model: opened.0,
            engine: opened.1,
            loaded_at: SystemTime::now(),
            life: Mutex::new(Life { last_used: Instant::now(), keep_alive, idle_since: None }),
        });
        loaded.push(l.clone());
        Ok((l, took))
    }

    /// Has a loaded model unloaded as soon as its running requests end
    /// (what a keep-alive of 0 asks); nothing if it is not loaded.
    pub async fn expire(&self, name: &str) {
        let Ok(Some(manifest)) = self.find_manifest(name) else { return };
        if let Some(l) = self.loaded.lock().await.iter().find(|l| l.manifest.name == manifest.name) {
            l.life().keep_alive = KeepAlive::For(Duration::ZERO);
        }
    }

    /// Unloads every model idle for its keep-alive; notes when the others
    /// went idle.
    pub async fn sweep(&self) {
        let mut loaded = self.loaded.lock().await;
        let now = Instant::now();
        let mut expired = Vec::new();
        for (i, l) in loaded.iter().enumerate() {
            let busy = l.busy();
            let mut life = l.life();
            if busy {
                life.idle_since = None;
                continue;
            }
            let since = *life.idle_since.get_or_insert(now);
            if matches!(life.keep_alive, KeepAlive::For(keep) if now.duration_since(since) >= keep) {
                expired.push(i);
            }
        }
        for i in expired.into_iter().rev() {
            unload(loaded.remove(i)).await;
        }
    }

    /// How often `sweep` should run: the granularity of keep-alives.
    pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

    /// What is loaded now, each with when it will be unloaded if no
    /// request comes (None: never).
    pub async fn loaded_with_expiry(&self) -> Vec<(Arc<Loaded>, Option<SystemTime>)> {
        // Read under the lock, before the clones count as users.
        let loaded = self.loaded.lock().await;
        loaded
            .iter()
            .map(|l| {
                let expires = l.expires_at();
                (l.clone(), expires)
            })
            .collect()
    }

    /// What is loaded now.
    pub async fn loaded(&self) -> Vec<Arc<Loaded>> {
        self.loaded.lock().await.clone()
    }
}

async fn unload(gone: Arc<Loaded>) {
    eprintln!("unloading {}", gone.manifest.name);
    // Dropping the engine joins its thread: off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(gone)).await;
}
