//! The loaded models: one engine each, loaded when a request names an
//! installed model, at most `max_loaded` at once; when full, the least
//! recently used idle one is unloaded to make room.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::engine::{EngineHandle, StepObserver};
use crate::loaded::LoadedModel;
use crate::store::{Manifest, Store, StoreError};

/// Opens a model file and starts its engine (the command line decides
/// threads and the KV pool's size).
pub type Loader = Box<dyn Fn(&std::path::Path, StepObserver) -> Result<(Arc<LoadedModel>, EngineHandle)> + Send + Sync>;

pub struct Loaded {
    pub manifest: Manifest,
    pub model: Arc<LoadedModel>,
    pub engine: EngineHandle,
    pub loaded_at: SystemTime,
    last_used: Mutex<Instant>,
}

impl Loaded {
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
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
    observer: StepObserver,
    max_loaded: usize,
    loaded: tokio::sync::Mutex<Vec<Arc<Loaded>>>,
}

impl Registry {
    pub fn new(store: Store, loader: Loader, observer: StepObserver, max_loaded: usize) -> Registry {
        Registry { store, loader, observer, max_loaded: max_loaded.max(1), loaded: tokio::sync::Mutex::new(Vec::new()) }
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

    /// The model's engine, loading it if needed, and how long loading took.
    /// With `max_loaded` models loaded and all of them in use, it waits
    /// (up to `BUSY_WAIT`) for one to go idle, as a request that has just
    /// been answered may hold its model a moment longer.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<(Arc<Loaded>, Duration), LoadError> {
        let manifest = self.find_manifest(name).map_err(LoadError::Store)?.ok_or(LoadError::NotFound)?;
        let deadline = Instant::now() + BUSY_WAIT;
        let mut loaded = loop {
            let mut loaded = self.loaded.lock().await;
            if let Some(l) = loaded.iter().find(|l| l.manifest.name == manifest.name) {
                l.touch();
                return Ok((l.clone(), Duration::ZERO));
            }
            if loaded.len() < self.max_loaded {
                break loaded;
            }
            // Unload the least recently used model nobody is using.
            let idle = loaded
                .iter()
                .enumerate()
                .filter(|(_, l)| Arc::strong_count(l) == 1 && l.engine.snapshot().idle)
                .min_by_key(|(_, l)| l.last_used())
                .map(|(i, _)| i);
            if let Some(idle) = idle {
                let gone = loaded.remove(idle);
                eprintln!("unloading {}", gone.manifest.name);
                // Dropping the engine joins its thread: off the async workers.
                let _ = tokio::task::spawn_blocking(move || drop(gone)).await;
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
        let this = self.clone();
        let opened = tokio::task::spawn_blocking(move || (this.loader)(&path, this.observer.clone()))
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
            last_used: Mutex::new(Instant::now()),
        });
        loaded.push(l.clone());
        Ok((l, took))
    }

    /// What is loaded now.
    pub async fn loaded(&self) -> Vec<Arc<Loaded>> {
        self.loaded.lock().await.clone()
    }
}
