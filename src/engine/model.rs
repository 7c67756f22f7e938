//! The model slot: the one [`Classifier`] of the process, loaded once and shared by `Arc`.
//!
//! Policy (FC must see a listening port within 120 s, docs/function-compute.md §1 "Start-up"):
//! - the server binds first, then loads the model in the background ([`ModelSlot::load_now`]);
//! - a request that arrives while the load runs waits for it, at most [`LOAD_WAIT`] (a load
//!   that downloads the weights can take minutes), then gets 503 `model_not_ready`;
//! - if the load fails (e.g. the weights file is missing), requests get 503 `model_not_ready`
//!   and the server stays up; the next request retries at most every [`RETRY_INTERVAL`], and
//!   `POST /initialize` always retries;
//! - every successful load ends with one warm-up inference.
//!
//! Where the weights come from is behind [`ModelLoader`]: [`FileLoader`] reads a local
//! safetensors file; [`FetchingLoader`] first downloads and converts TorchVision's checkpoint
//! when the file is missing (unless offline), via [`crate::weights::ensure_model`].

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::pool::InferencePool;
use crate::classifier::{Classifier, ModelInfo, Precision};
use crate::preprocess::Limits;
use crate::weights::{EnsureOutcome, FetchOptions, ensure_model};

/// Shortest time between two load attempts triggered by ordinary requests.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Longest time an ordinary request waits for a load in progress.
pub const LOAD_WAIT: Duration = Duration::from_secs(10);

/// Why the model could not be loaded: one concise sentence, and, when there is one, what to do
/// about it. Answered as 503 `model_not_ready` (`error.message` and `error.remedy`); the remedy
/// is logged once, with the first failure that carries it, not with every refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    /// What went wrong, in one sentence.
    pub message: String,
    /// The next steps, if any.
    pub remedy: Option<String>,
}

impl LoadError {
    /// An error without a remedy.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            remedy: None,
        }
    }

    /// Adds the next steps.
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = Some(remedy.into());
        self
    }
}

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
    /// Arithmetic of the convolutions.
    pub precision: Precision,
}

impl ModelLoader for FileLoader {
    fn load(&self) -> Result<Classifier, LoadError> {
        if !self.path.exists() {
            let message = format!("the weights file {} does not exist", self.path.display());
            let remedy = "convert a TorchVision checkpoint into it or start with --model <path>";
            return Err(LoadError::new(message).with_remedy(remedy));
        }
        Classifier::load_with_options(&self.path, self.limits, self.precision)
            .map_err(|e| LoadError::new(e.to_string()))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Like [`FileLoader`], but a missing file is first downloaded, verified and converted
/// ([`ensure_model`]); with `offline` it is an error naming the command to run instead.
#[derive(Debug, Clone)]
pub struct FetchingLoader {
    /// The weights file (installed there when fetched).
    pub path: PathBuf,
    /// Image limits of the classifier.
    pub limits: Limits,
    /// Arithmetic of the convolutions.
    pub precision: Precision,
    /// Where to download from and what to expect.
    pub fetch: FetchOptions,
    /// Never download.
    pub offline: bool,
}

impl ModelLoader for FetchingLoader {
    fn load(&self) -> Result<Classifier, LoadError> {
        match ensure_model(&self.path, &self.fetch, self.offline) {
            Ok(EnsureOutcome::Present) => {}
            Ok(EnsureOutcome::Fetched(report)) => {
                tracing::info!(model = %report.model.display(), "weights downloaded and converted");
            }
            Err(e) => return Err(LoadError::new(e.summary()).with_remedy(e.remedy())),
        }
        Classifier::load_with_options(&self.path, self.limits, self.precision)
            .map_err(|e| LoadError::new(e.to_string()))
    }

    fn describe(&self) -> String {
        let mode = if self.offline {
            "offline"
        } else {
            "fetch if missing"
        };
        format!("{} ({mode})", self.path.display())
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
    Failed(LoadError),
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
                Some((e, _)) => Readiness::Failed(e.clone()),
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
        let mut attempts = if force {
            self.attempts.lock().await
        } else {
            tokio::time::timeout(LOAD_WAIT, self.attempts.lock())
                .await
                .map_err(|_| LoadError::new("the model is still loading; retry in a few seconds"))?
        };
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
                let remedy_known = attempts
                    .last_failure
                    .as_ref()
                    .is_some_and(|(last, _)| last.remedy == e.remedy);
                match &e.remedy {
                    Some(remedy) if !remedy_known => {
                        tracing::error!(error = %e, remedy, "model not loaded");
                    }
                    _ => tracing::error!(error = %e, "model not loaded"),
                }
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
                .map_err(|e| LoadError::new(format!("warm-up inference failed: {e}")))?;
            Ok::<_, LoadError>(classifier)
        };
        let classifier = pool
            .run_internal(job)
            .await
            .map_err(|e| LoadError::new(e.to_string()))??;
        // Loading freed a temporary per tensor: give that memory back before serving.
        let trimmed = crate::malloc::release_free_memory();
        tracing::info!(
            load_ms = classifier.info().load_ms,
            with_warm_up_ms = started.elapsed().as_millis() as u64,
            trimmed,
            "model ready"
        );
        Ok(Arc::new(classifier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Always fails, counting its calls.
    struct Failing(AtomicUsize);

    impl ModelLoader for Failing {
        fn load(&self) -> Result<Classifier, LoadError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(LoadError::new("no weights here"))
        }
        fn describe(&self) -> String {
            "failing".into()
        }
    }

    #[tokio::test]
    async fn a_failed_load_is_retried_by_requests_only_after_the_interval_but_always_by_load_now() {
        let loader = Arc::new(Failing(AtomicUsize::new(0)));
        let slot = ModelSlot::new(Arc::clone(&loader) as Arc<dyn ModelLoader>);
        let pool = InferencePool::new(1, 0);
        assert_eq!(slot.readiness(), Readiness::Loading);
        assert_eq!(
            slot.get(&pool).await.unwrap_err().message,
            "no weights here"
        );
        assert_eq!(
            slot.get(&pool).await.unwrap_err().message,
            "no weights here"
        );
        assert_eq!(
            loader.0.load(Ordering::SeqCst),
            1,
            "second request reused the failure"
        );
        assert_eq!(
            slot.readiness(),
            Readiness::Failed(LoadError::new("no weights here"))
        );
        assert!(slot.load_now(&pool).await.is_err());
        assert_eq!(
            loader.0.load(Ordering::SeqCst),
            2,
            "load_now retried at once"
        );
        assert!(slot.ready().is_none());
    }

    #[test]
    fn offline_fetching_loader_reports_the_missing_file_and_the_command_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let loader = FetchingLoader {
            path: dir.path().join("resnet18.safetensors"),
            limits: Limits::default(),
            precision: Precision::F32,
            fetch: FetchOptions::default(),
            offline: true,
        };
        let error = loader.load().unwrap_err();
        let remedy = error.remedy.unwrap_or_default();
        assert!(
            error.message.contains("resnet18.safetensors"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("fetch-model"), "{}", error.message);
        assert!(remedy.contains("fetch-model"), "{remedy}");
        assert!(!dir.path().join("resnet18.safetensors").exists());
    }
}
