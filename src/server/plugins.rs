//! Seams for features that live in other modules, and the classification entry point they use.
//!
//! - [`ImageFetcher`]: resolves `{"url": "..."}` images (OSS). Without one, such requests get
//!   400 `url_not_supported`.
//! - [`EventHandler`]: handles `/invoke` bodies `{"events": [...]}` (OSS trigger). Without one,
//!   they get `unsupported_event` (404 + `x-fc-status: 404`, as for every failed event).
//! - [`ClassifyHandle`]: classify bytes through the shared model and bounded pool; handed to
//!   event handlers so they never touch the model directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use super::model::ModelSlot;
use super::pool::{InferencePool, PoolError};
use crate::api::{ApiError, ImageSource, PredictionJson, millis};
use crate::fc::FcContext;

/// A boxed, sendable future (what the seam traits return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches the image a request names by URL (e.g. `oss://bucket/key`).
pub trait ImageFetcher: Send + Sync + 'static {
    /// The encoded image bytes, or an error with the status to answer (403/404 from OSS,
    /// 502/504 upstream, 413 too large, 400 bad URL). `context` carries the credentials.
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        context: &'a FcContext,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>>;
}

/// Handles an `/invoke` event body of the form `{"events": [...]}`.
pub trait EventHandler: Send + Sync + 'static {
    /// Processes the raw event body; `Ok` becomes a 200 JSON answer, `Err` a failed event.
    fn handle<'a>(
        &'a self,
        event: Bytes,
        context: &'a FcContext,
        classify: &'a ClassifyHandle,
    ) -> BoxFuture<'a, Result<serde_json::Value, ApiError>>;
}

/// One classified image.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Best first.
    pub predictions: Vec<PredictionJson>,
    /// Decoding plus preprocessing.
    pub decode: Duration,
    /// Forward pass.
    pub inference: Duration,
    /// Waiting for a free worker.
    pub queued: Duration,
}

/// Classification through the shared model and the bounded pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClassifyHandle {
    slot: Arc<ModelSlot>,
    pool: InferencePool,
}

impl ClassifyHandle {
    /// A handle over `slot` and `pool`.
    pub fn new(slot: Arc<ModelSlot>, pool: InferencePool) -> Self {
        Self { slot, pool }
    }

    /// The model slot.
    pub fn slot(&self) -> &Arc<ModelSlot> {
        &self.slot
    }

    /// The pool.
    pub fn pool(&self) -> &InferencePool {
        &self.pool
    }

    /// Classifies one encoded image; `top_k` must already be validated.
    pub async fn classify(&self, image: Bytes, top_k: usize) -> Result<Classified, ApiError> {
        self.classify_source(ImageSource::Bytes(image), top_k).await
    }

    /// Classifies an inline or raw image (base64 is decoded on the pool, not the runtime).
    /// Fails with 503 when the pool is full or the model is not loaded.
    pub async fn classify_source(
        &self,
        source: ImageSource,
        top_k: usize,
    ) -> Result<Classified, ApiError> {
        let admission = self.pool.try_admit().map_err(pool_error)?;
        let classifier = self.slot.get(&self.pool).await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_not_ready", e.0)
                .with_retry_after(5)
        })?;
        let queued_since = Instant::now();
        let job = move || {
            let queued = queued_since.elapsed();
            let bytes = source.into_bytes()?;
            let prediction = classifier.classify(&bytes, top_k)?;
            Ok::<_, ApiError>(Classified {
                predictions: prediction
                    .classes
                    .iter()
                    .map(PredictionJson::from)
                    .collect(),
                decode: prediction.timing.decode + prediction.timing.preprocess,
                inference: prediction.timing.inference,
                queued,
            })
        };
        let classified = self.pool.run(admission, job).await.map_err(pool_error)??;
        tracing::debug!(
            queued_ms = millis(classified.queued),
            decode_ms = millis(classified.decode),
            inference_ms = millis(classified.inference),
            top = classified.predictions.first().map(|p| p.index),
            "classified"
        );
        Ok(classified)
    }
}

fn pool_error(e: PoolError) -> ApiError {
    match e {
        PoolError::Full { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                .with_retry_after(1)
        }
        PoolError::Panicked => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}
