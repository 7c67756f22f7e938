//! Seams for features that live in other modules, and the classification entry point they use.
//!
//! - [`ImageFetcher`]: resolves `{"url": "..."}` images (OSS). Without one, such requests get
//!   400 `url_not_supported`.
//! - [`EventHandler`]: handles `/invoke` bodies `{"events": [...]}` (OSS trigger). Without one,
//!   they get `unsupported_event` (404 + `x-fc-status: 404`, as for every failed event).
//! - [`ClassifyHandle`]: classify bytes through the shared model, bounded pool and batcher; handed to
//!   event handlers so they never touch the model directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use super::batch::{BatchError, BatchOptions, Batcher, Request};
use super::model::ModelSlot;
use super::pool::{InferencePool, PoolError};
use crate::api::{ApiError, ImageSource, PredictionJson, millis};
use crate::classifier::{ClassifyError, check_top_k};
use crate::fc::FcContext;
use crate::preprocess::{Cancel, Interrupted, PreprocessError};

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
    /// The forward pass this image was part of (shared by its batch).
    pub inference: Duration,
    /// Waiting for a free worker, and in the batch queue.
    pub queued: Duration,
    /// Images in that forward pass (1 when not batched).
    pub batch_size: usize,
}

/// Classification through the shared model, the bounded pool and the batcher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClassifyHandle {
    slot: Arc<ModelSlot>,
    pool: InferencePool,
    batcher: Batcher,
}

impl ClassifyHandle {
    /// A handle over `slot` and `pool`, batching forwards as `batch` says.
    pub fn new(slot: Arc<ModelSlot>, pool: InferencePool, batch: BatchOptions) -> Self {
        let batcher = Batcher::new(pool.clone(), batch);
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

    /// Classifies one encoded image; `top_k` must already be validated.
    pub async fn classify(&self, image: Bytes, top_k: usize) -> Result<Classified, ApiError> {
        self.classify_source(ImageSource::Bytes(image), top_k).await
    }

    /// Classifies an inline or raw image: once the batcher has room for one more preprocessed
    /// image ([`Preparing::reserve`](super::batch::Preparing::reserve)), base64 and image
    /// decoding run as one job on the pool, then the preprocessed image joins a batched
    /// forward ([`Batcher`]). Fails with 503 when the pool is full or the model is not loaded;
    /// a bad image fails in its first job and never joins a batch.
    pub async fn classify_source(
        &self,
        source: ImageSource,
        top_k: usize,
    ) -> Result<Classified, ApiError> {
        self.classify_source_until(source, top_k, None).await
    }

    /// [`Self::classify_source`] for a request that is of no use after `deadline` (its
    /// function timeout). Its CPU work stops when the deadline passes or when this future is
    /// dropped (the client disconnected): the decoder is stopped through a [`Cancel`]
    /// token, and a queued image is dropped or answered before its forward. Either way the
    /// answer is 503 `deadline_exceeded` / `cancelled`, which only the log sees.
    pub async fn classify_source_until(
        &self,
        source: ImageSource,
        top_k: usize,
        deadline: Option<Instant>,
    ) -> Result<Classified, ApiError> {
        check_top_k(top_k)?;
        // Cancels the token when this future ends or is dropped.
        let (cancel, _cancel_on_drop) = Cancel::new(deadline);
        // Counted as "about to join a batch" from before admission (so a request counted in
        // `admitted` is always counted here too) until its image is queued or it fails.
        let mut preparing = self.batcher.preparing();
        let admission = self.pool.try_admit().map_err(pool_error)?;
        let classifier = self.slot.get(&self.pool).await.map_err(ApiError::from)?;
        let queued_since = Instant::now();
        // Room for the decoded image before decoding it: a burst waits as encoded bodies.
        preparing.reserve().await.map_err(batch_error)?;
        let preparer = Arc::clone(&classifier);
        let job = move || {
            let queued = queued_since.elapsed();
            // Given up while waiting for a worker: no decoding at all.
            cancel.check().map_err(interrupted)?;
            let bytes = source.into_bytes()?;
            let prepared = preparer.prepare_until(&bytes, &cancel);
            if let Err(ClassifyError::Image(PreprocessError::Interrupted(why))) = &prepared {
                tracing::info!(reason = %why, "decoding stopped");
            }
            Ok::<_, ApiError>((prepared?, queued))
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
        let classified = Classified {
            predictions: ranked.classes.iter().map(PredictionJson::from).collect(),
            decode: prepared.decode + prepared.transform,
            inference: ranked.inference,
            queued: queued + ranked.waited,
            batch_size: ranked.batch_size,
        };
        tracing::debug!(
            queued_ms = millis(classified.queued),
            decode_ms = millis(classified.decode),
            inference_ms = millis(classified.inference),
            batch = classified.batch_size,
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

fn interrupted(e: Interrupted) -> ApiError {
    ApiError::from(ClassifyError::from(PreprocessError::from(e)))
}

fn batch_error(e: BatchError) -> ApiError {
    match e {
        BatchError::Model(e) => ApiError::from(e),
        BatchError::DeadlineExceeded => interrupted(Interrupted::DeadlineExceeded),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}
