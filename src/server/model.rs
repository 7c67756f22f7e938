//! The model slot: the one [`Classifier`] of the process, loaded once and shared by `Arc`.
//!
//! Policy (FC must see a listening port within 120 s, platform.md §1.1):
//! - the server binds first, then loads the model in the background ([`ModelSlot::load_now`]);
//! - a request that arrives while the load runs waits for it;
//! - if the load fails (e.g. the weights file is missing), requests get 503 `model_not_ready`
//!   and the server stays up; the next request retries at most every [`RETRY_INTERVAL`], and
//!   `POST /initialize` always retries;
//! - every successful load ends with one warm-up inference.
//!
//! Where the weights come from is behind [`ModelLoader`]: today [`FileLoader`] reads a local
//! safetensors file; a loader that downloads missing weights first can replace it unchanged.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::pool::InferencePool;
use crate::classifier::{Classifier, ModelInfo};
use crate::preprocess::Limits;

/// Shortest time between two load attempts triggered by ordinary requests.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Why the model could not be loaded (the message says what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// Produces the classifier. Called on an inference thread; may block.
pub trait ModelLoader: Send + Sync + 'static {
    /// Loads (and, for a fetching loader, first downloads) the model.
    fn load(&self) -> Result<Classifier, LoadError>;
    /// Where the model comes from, for logs.
    fn describe(&self) -> String;
}

/// Loads a safetensors file from disk.
#[derive(Debug, Clone)]
pub struct FileLoader {
    /// The weights file.
    pub path: PathBuf,
    /// Image limits of the classifier.
    pub limits: Limits,
}

impl ModelLoader for FileLoader {
    fn load(&self) -> Result<Classifier, LoadError> {
        if !self.path.exists() {
            return Err(LoadError(format!(
                "the weights file {} does not exist; convert a TorchVision checkpoint into it or \
                 start with --model <path>",
                self.path.display()
            )));
        }
        Classifier::load_with_limits(&self.path, self.limits).map_err(|e| LoadError(e.to_string()))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// What `/healthz` reports about the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Not loaded yet, no failure so far.
    Loading,
    /// Loaded and warmed up.
    Ready(ModelInfo),
    /// The last load failed.
    Failed(String),
}

#[derive(Debug, Default)]
struct Attempts {
    last_failure: Option<(LoadError, Instant)>,
}

/// The process's classifier, loaded lazily and at most once successfully.
pub struct ModelSlot {
    loader: Arc<dyn ModelLoader>,
    ready: RwLock<Option<Arc<Classifier>>>,
    attempts: Mutex<Attempts>,
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSlot")
            .field("loader", &self.loader.describe())
            .field("ready", &self.ready().is_some())
            .finish()
    }
}

impl ModelSlot {
    /// An empty slot that will load with `loader`.
    pub fn new(loader: Arc<dyn ModelLoader>) -> Self {
        Self {
            loader,
            ready: RwLock::new(None),
            attempts: Mutex::new(Attempts::default()),
        }
    }

    /// A slot that already holds `classifier` (tests, embedding).
    pub fn with_classifier(loader: Arc<dyn ModelLoader>, classifier: Classifier) -> Self {
        let slot = Self::new(loader);
        slot.set(Arc::new(classifier));
        slot
    }

    /// The classifier, if loaded.
    pub fn ready(&self) -> Option<Arc<Classifier>> {
        self.ready.read().ok().and_then(|guard| guard.clone())
    }

    fn set(&self, classifier: Arc<Classifier>) {
        if let Ok(mut guard) = self.ready.write() {
            *guard = Some(classifier);
        }
    }

    /// Current state, without waiting.
    pub fn readiness(&self) -> Readiness {
        if let Some(c) = self.ready() {
            return Readiness::Ready(c.info().clone());
        }
        match self.attempts.try_lock() {
            Ok(attempts) => match &attempts.last_failure {
                Some((e, _)) => Readiness::Failed(e.0.clone()),
                None => Readiness::Loading,
            },
            // A load is running right now.
            Err(_) => Readiness::Loading,
        }
    }

    /// The classifier for a request: waits for a running load, retries a failed one at most
    /// every [`RETRY_INTERVAL`].
    pub async fn get(&self, pool: &InferencePool) -> Result<Arc<Classifier>, LoadError> {
        self.get_or_load(pool, false).await
    }

    /// Loads now (retrying a failure at once) unless already loaded. Used at startup and by
    /// `/initialize`.
    pub async fn load_now(&self, pool: &InferencePool) -> Result<Arc<Classifier>, LoadError> {
        self.get_or_load(pool, true).await
    }

    async fn get_or_load(
        &self,
        pool: &InferencePool,
        force: bool,
    ) -> Result<Arc<Classifier>, LoadError> {
        if let Some(c) = self.ready() {
            return Ok(c);
        }
        let mut attempts = self.attempts.lock().await;
        if let Some(c) = self.ready() {
            return Ok(c);
        }
        if let Some((e, at)) = &attempts.last_failure
            && !force
            && at.elapsed() < RETRY_INTERVAL
        {
            return Err(e.clone());
        }
        let result = self.load_and_warm(pool).await;
        match result {
            Ok(classifier) => {
                attempts.last_failure = None;
                self.set(Arc::clone(&classifier));
                Ok(classifier)
            }
            Err(e) => {
                tracing::error!(error = %e, "model not loaded");
                attempts.last_failure = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    async fn load_and_warm(&self, pool: &InferencePool) -> Result<Arc<Classifier>, LoadError> {
        let loader = Arc::clone(&self.loader);
        tracing::info!(source = %loader.describe(), "loading model");
        let started = Instant::now();
        let job = move || {
            let classifier = loader.load()?;
            classifier
                .warm_up()
                .map_err(|e| LoadError(format!("warm-up inference failed: {e}")))?;
            Ok::<_, LoadError>(classifier)
        };
        let classifier = pool
            .run_internal(job)
            .await
            .map_err(|e| LoadError(e.to_string()))??;
        tracing::info!(
            load_ms = classifier.info().load_ms,
            with_warm_up_ms = started.elapsed().as_millis() as u64,
            "model ready"
        );
        Ok(Arc::new(classifier))
    }
}
