//! The inference engine: the model slot (load, warm-up, readiness), the bounded inference pool,
//! the micro-batcher, and the one entry point [`Engine::classify`].
//!
//! ```text
//! Engine::classify(Image, ClassifyOptions)
//!   ├─ pool admission ([`pool`]): refused at once when full → EngineError::Overloaded
//!   ├─ the model ([`model`]): loaded once, shared → EngineError::NotReady while it is not
//!   ├─ base64 + decode + preprocess: one job on the pool → EngineError::{Input, Classify}
//!   └─ a batched forward ([`batch`]) → Classification
//! ```
//!
//! Invariant: the engine never sees HTTP. Its errors are [`EngineError`] variants; the HTTP
//! layer maps them to statuses (in one place), OSS to retry decisions
//! ([`EngineError::is_caller_fault`]). Below it are [`crate::classifier`] (the model's door),
//! [`crate::preprocess`] and [`crate::resnet`].

pub mod batch;
mod classification;
mod classify;
mod inline;
pub mod model;
pub mod pool;

pub use batch::{BatchOptions, BatchStats, Batcher};
pub use classification::{Classification, Prediction, Timing};
pub use classify::{ClassifyOptions, Engine};
pub use inline::{Image, InlineImageError, decode_inline_image};
pub use model::{FetchingLoader, FileLoader, LoadError, ModelLoader, ModelSlot, Readiness};
pub use pool::{Admission, InferencePool, PoolError};

use crate::classifier::ClassifyError;
use crate::preprocess::PreprocessError;

/// Tunables of an [`Engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Inference jobs that run at once (normally the vCPU count).
    pub workers: usize,
    /// Requests that may wait for a worker before new ones are refused (`Overloaded`).
    pub queue: usize,
    /// Micro-batching of concurrent requests into one forward pass.
    pub batch: BatchOptions,
}

/// Requests allowed to wait for a worker by default. FC sends at most `instanceConcurrency`
/// (≤ 200) at once; raise `--queue` if that is set higher than workers + 64.
pub const DEFAULT_QUEUE: usize = 64;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            workers: crate::config::cpu_budget(),
            queue: DEFAULT_QUEUE,
            batch: BatchOptions::default(),
        }
    }
}

/// Why [`Engine::classify`] gave no classification.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Every worker is busy and the queue is full (always [`PoolError::Full`]); retry shortly.
    #[error(transparent)]
    Overloaded(PoolError),
    /// The model is not loaded (still loading, or the load failed).
    #[error(transparent)]
    NotReady(LoadError),
    /// The inline image is not base64 of anything.
    #[error(transparent)]
    Input(#[from] InlineImageError),
    /// The classifier refused the image or `top_k`, or the model failed.
    #[error(transparent)]
    Classify(ClassifyError),
    /// Something that should not happen: a panicked job, a stopped batcher.
    #[error("{0}")]
    Failed(String),
}

impl EngineError {
    /// Stable machine-readable code, used in JSON error bodies and result objects.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Overloaded(_) => "overloaded",
            Self::NotReady(_) => "model_not_ready",
            Self::Input(e) => e.code(),
            Self::Classify(e) => e.code(),
            Self::Failed(_) => "internal",
        }
    }

    /// True when the request itself is at fault (not an image, bad `top_k`): the same input
    /// fails again, so it is not worth a retry. False for the engine's own state (busy, model
    /// not ready, model failure), which a retry may find changed.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            Self::Input(_) => true,
            Self::Classify(ClassifyError::Image(e)) => image_is_callers_fault(e),
            Self::Classify(ClassifyError::InvalidTopK { .. }) => true,
            Self::Classify(ClassifyError::Model(_))
            | Self::Overloaded(_)
            | Self::NotReady(_)
            | Self::Failed(_) => false,
        }
    }
}

/// Every preprocessing error is the image's own, except an interruption (the request was
/// abandoned or ran out of time: the same image may well succeed on a retry).
fn image_is_callers_fault(e: &PreprocessError) -> bool {
    !matches!(e, PreprocessError::Interrupted(_))
}
