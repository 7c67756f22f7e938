//! [`Engine`]: the one entry point of inference. Image in, [`Classification`] or
//! [`EngineError`] out, through the shared model slot, the bounded pool and the batcher.

use std::sync::Arc;
use std::time::Instant;

use super::batch::{BatchError, Batcher, Request};
use super::inline::Image;
use super::model::{ModelLoader, ModelSlot};
use super::pool::{InferencePool, PoolError};
use super::{Classification, EngineError, EngineOptions, Timing};
use crate::classifier::{ClassifyError, check_top_k};
use crate::millis;
use crate::preprocess::{Cancel, Interrupted, PreprocessError};

/// What a caller asks of one classification besides the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// Classes to return, best first (`1..=1000`; the HTTP API allows `1..=10`).
    pub top_k: usize,
    /// When the answer stops being of use (the request's function timeout): work still to do
    /// then is given up ([`EngineError::Classify`] with [`Interrupted::DeadlineExceeded`]).
    pub deadline: Option<Instant>,
}

impl ClassifyOptions {
    /// The `top_k` best classes, without a deadline.
    pub fn top_k(top_k: usize) -> Self {
        Self {
            top_k,
            deadline: None,
        }
    }

    /// These options with `deadline` (none when `None`).
    pub fn until(self, deadline: Option<Instant>) -> Self {
        Self { deadline, ..self }
    }
}

/// Classification through the shared model, the bounded pool and the batcher. Cheap to clone;
/// clones share everything.
#[derive(Debug, Clone)]
pub struct Engine {
    slot: Arc<ModelSlot>,
    pool: InferencePool,
    batcher: Batcher,
}

impl Engine {
    /// An engine whose model is loaded by `loader` (see [`Engine::start_loading`]).
    pub fn new(loader: Arc<dyn ModelLoader>, options: EngineOptions) -> Self {
        Self::with_slot(Arc::new(ModelSlot::new(loader)), options)
    }

    /// An engine over an existing model slot (e.g. one already holding a classifier).
    pub fn with_slot(slot: Arc<ModelSlot>, options: EngineOptions) -> Self {
        let pool = InferencePool::new(options.workers, options.queue);
        let batcher = Batcher::new(pool.clone(), options.batch);
        Self {
            slot,
            pool,
            batcher,
        }
    }

    /// The model slot.
    pub fn slot(&self) -> &Arc<ModelSlot> {
        &self.slot
    }

    /// The pool.
    pub fn pool(&self) -> &InferencePool {
        &self.pool
    }

    /// The batcher (its [`Batcher::stats`] count forwards by batch size).
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Loads the model in the background now (a server calls it once its port is bound).
    /// Must be called on a tokio runtime.
    pub fn start_loading(&self) {
        let engine = self.clone();
        tokio::spawn(async move {
            // Failures are logged by the slot and answered as `NotReady` until a retry succeeds.
            let _ = engine.load_now().await;
        });
    }

    /// Loads the model now unless loaded (retrying a failure at once); what `/initialize` does.
    pub async fn load_now(&self) -> Result<Arc<crate::classifier::Classifier>, EngineError> {
        self.slot
            .load_now(&self.pool)
            .await
            .map_err(EngineError::NotReady)
    }

    /// Classifies one image: once the batcher has room for one more preprocessed image
    /// ([`Preparing::reserve`](super::batch::Preparing::reserve)), base64 and image decoding
    /// run as one job on the pool, then the preprocessed image joins a batched forward
    /// ([`Batcher`]). Fails with [`EngineError::Overloaded`] when the pool is full and
    /// [`EngineError::NotReady`] when the model is not loaded; a bad image fails in its first
    /// job and never joins a batch.
    ///
    /// The request's CPU work stops when `options.deadline` passes or when this future is
    /// dropped (the client disconnected): the decoder is stopped through a [`Cancel`] token,
    /// and a queued image is dropped or answered before its forward. Either way the error is
    /// [`Interrupted`] (`deadline_exceeded` / `cancelled`), which only the log sees.
    pub async fn classify(
        &self,
        image: Image,
        options: ClassifyOptions,
    ) -> Result<Classification, EngineError> {
        let ClassifyOptions { top_k, deadline } = options;
        check_top_k(top_k)?;
        // Cancels the token when this future ends or is dropped.
        let (cancel, _cancel_on_drop) = Cancel::new(deadline);
        // Counted as "about to join a batch" from before admission (so a request counted in
        // `admitted` is always counted here too) until its image is queued or it fails.
        let mut preparing = self.batcher.preparing();
        let admission = self.pool.try_admit().map_err(pool_error)?;
        let classifier = self
            .slot
            .get(&self.pool)
            .await
            .map_err(EngineError::NotReady)?;
        let queued_since = Instant::now();
        // Room for the decoded image before decoding it: a burst waits as encoded bodies.
        preparing.reserve().await.map_err(batch_error)?;
        let preparer = Arc::clone(&classifier);
        let job = move || {
            let queued = queued_since.elapsed();
            // Given up while waiting for a worker: no decoding at all.
            cancel.check().map_err(interrupted)?;
            let bytes = image.into_bytes()?;
            let prepared = preparer.prepare_until(&bytes, &cancel);
            if let Err(ClassifyError::Image(PreprocessError::Interrupted(why))) = &prepared {
                tracing::info!(reason = %why, "decoding stopped");
            }
            Ok::<_, EngineError>((prepared?, queued))
        };
        let (prepared, admission) = self
            .pool
            .run_keeping(admission, job)
            .await
            .map_err(pool_error)?;
        let (prepared, queued) = prepared?;
        let request = Request {
            top_k,
            admission: Some(admission),
            deadline,
        };
        let ranked = self
            .batcher
            .classify_until(classifier, prepared.chw, request, preparing)
            .await
            .map_err(batch_error)?;
        let timing = Timing {
            decode: millis(prepared.decode + prepared.transform),
            inference: millis(ranked.inference),
            queued: Some(millis(queued + ranked.waited)),
            ..Timing::default()
        };
        let classification = Classification::new(ranked.classes, timing, ranked.batch_size);
        tracing::debug!(
            queued_ms = timing.queued,
            decode_ms = timing.decode,
            inference_ms = timing.inference,
            batch = classification.batch_size,
            top = classification.predictions.first().map(|p| p.index),
            "classified"
        );
        Ok(classification)
    }
}

fn pool_error(e: PoolError) -> EngineError {
    match e {
        PoolError::Full { .. } => EngineError::Overloaded(e),
        PoolError::Panicked => EngineError::Failed(e.to_string()),
    }
}

fn interrupted(e: Interrupted) -> EngineError {
    EngineError::from(ClassifyError::from(PreprocessError::from(e)))
}

fn batch_error(e: BatchError) -> EngineError {
    match e {
        BatchError::Model(e) => EngineError::from(e),
        BatchError::DeadlineExceeded => interrupted(Interrupted::DeadlineExceeded),
        other => EngineError::Failed(other.to_string()),
    }
}

impl From<ClassifyError> for EngineError {
    fn from(e: ClassifyError) -> Self {
        Self::Classify(e)
    }
}
