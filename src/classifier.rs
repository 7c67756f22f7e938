//! The only door into the model: image bytes in, top-k ImageNet classes out.
//!
//! A [`Classifier`] is loaded once per process (weights read tensor by tensor, batch-norm folded) and is
//! `Send + Sync`: share it behind an `Arc` and call it from any thread. Each call is CPU-bound;
//! callers on an async runtime run it on a blocking pool.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::labels::{self, Lang};
use crate::preprocess::{
    self, Cancel, DecodeMemory, INPUT_SIZE, Interrupted, Limits, PreprocessError, Preprocessed,
    TENSOR_LEN,
};
use crate::resnet::{ModelError, NUM_CLASSES, ResNet18, TensorSource};

/// Arithmetic of the convolutions a classifier is loaded with (f32, or int8).
pub use crate::resnet::Precision;

/// Why a classification failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The input is not a usable image (empty, unsupported, corrupt or too large).
    #[error(transparent)]
    Image(#[from] PreprocessError),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// `k` outside `1..=1000`.
    #[error("top_k must be between 1 and {max}, got {k}")]
    InvalidTopK {
        /// Requested k.
        k: usize,
        /// Largest allowed k.
        max: usize,
    },
}

impl ClassifyError {
    /// Stable machine-readable code for this error, used in JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Image(PreprocessError::Empty) => "empty_image",
            Self::Image(PreprocessError::UnsupportedFormat) => "unsupported_image_type",
            Self::Image(PreprocessError::TooManyPixels { .. } | PreprocessError::OverBudget(_)) => {
                "image_too_large"
            }
            Self::Image(PreprocessError::Corrupt(_)) => "invalid_image",
            Self::Image(PreprocessError::Interrupted(Interrupted::Cancelled)) => "cancelled",
            Self::Image(PreprocessError::Interrupted(Interrupted::DeadlineExceeded)) => {
                "deadline_exceeded"
            }
            Self::Model(_) => "model_error",
            Self::InvalidTopK { .. } => "invalid_top_k",
        }
    }
}

/// One ranked class, as every answer shows it (CLI, `/classify`, OSS result objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// 1 for the most probable class.
    pub rank: usize,
    /// ImageNet class index, `0..1000`.
    pub index: usize,
    /// Category name: TorchVision's English one, or another language's ([`Self::in_lang`]).
    pub label: String,
    /// The English name, present when `label` is in another language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_en: Option<String>,
    /// The Chinese name, present where both names are recorded ([`Self::with_both_names`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_zh: Option<String>,
    /// Softmax probability.
    pub score: f32,
}

impl Prediction {
    /// This prediction with `label` in `lang`; for any language but English the English name
    /// moves to `label_en`. English leaves it unchanged (no extra field).
    pub fn in_lang(self, lang: Lang) -> Self {
        let Some(name) = lang.label(self.index).filter(|_| lang != Lang::En) else {
            return self;
        };
        Self {
            label_en: Some(self.label),
            label: name.to_string(),
            ..self
        }
    }

    /// This prediction with the English `label` and the Chinese `label_zh`.
    pub fn with_both_names(self) -> Self {
        Self {
            label_zh: labels::label_zh(self.index).map(str::to_string),
            ..self
        }
    }
}

/// Where the time of one classification went, stage by stage (serialised in milliseconds by
/// the CLI; the service reports [`crate::engine::Timing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Decoding the file into pixels.
    #[serde(serialize_with = "as_millis")]
    pub decode: Duration,
    /// Resize, crop and normalisation.
    #[serde(serialize_with = "as_millis")]
    pub preprocess: Duration,
    /// The forward pass (shared by the whole batch in batch mode).
    #[serde(serialize_with = "as_millis")]
    pub inference: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(crate::millis(*d))
}

/// The model's name, reported by `/healthz`, in every answer and in OSS result objects.
pub const MODEL_NAME: &str = "resnet18";

/// The classifier's answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    /// The `k` most probable classes, best first.
    pub classes: Vec<Prediction>,
    /// Time per stage.
    pub timing: StageTimes,
}

/// Facts about the loaded model, for health checks and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// Architecture name, `resnet18`.
    pub name: &'static str,
    /// Where the weights came from.
    pub source: String,
    /// Time the load took, in milliseconds.
    pub load_ms: u64,
}

/// ResNet-18 with its preprocessing, loaded once.
#[derive(Debug, Clone)]
pub struct Classifier {
    model: ResNet18,
    limits: Limits,
    info: ModelInfo,
    /// Decode memory shared by every [`Self::prepare_until`] of this classifier (and its
    /// clones): 1.5 × `limits.max_decoded_bytes`.
    memory: Arc<DecodeMemory>,
    precision: Precision,
}

impl Classifier {
    /// Loads and validates the safetensors file at `path` with default [`Limits`].
    pub fn load(path: &Path) -> Result<Self, ClassifyError> {
        Self::load_with_limits(path, Limits::default())
    }

    /// Loads the weights at `path` in f32; images are checked
    /// against `limits` before decoding.
    pub fn load_with_limits(path: &Path, limits: Limits) -> Result<Self, ClassifyError> {
        Self::load_with_options(path, limits, Precision::F32)
    }

    /// [`Self::load_with_limits`] at an explicit precision.
    pub fn load_with_options(
        path: &Path,
        limits: Limits,
        precision: Precision,
    ) -> Result<Self, ClassifyError> {
        let started = Instant::now();
        let model = ResNet18::load_with(path, precision)?;
        Ok(Self::from_model(
            model,
            limits,
            path.display().to_string(),
            (started, precision),
        ))
    }

    /// Builds an f32 classifier from any tensor source (synthetic weights in tests and
    /// benchmarks).
    pub fn from_source(
        src: &dyn TensorSource,
        name: &str,
        limits: Limits,
    ) -> Result<Self, ClassifyError> {
        Self::from_source_with(src, name, limits, Precision::F32)
    }

    /// [`Self::from_source`] at an explicit precision.
    pub fn from_source_with(
        src: &dyn TensorSource,
        name: &str,
        limits: Limits,
        precision: Precision,
    ) -> Result<Self, ClassifyError> {
        let started = Instant::now();
        let policy = crate::resnet::ConvPolicy::from_env();
        let model = ResNet18::from_source_precision(src, &policy, precision)?;
        Ok(Self::from_model(
            model,
            limits,
            name.to_string(),
            (started, precision),
        ))
    }

    fn from_model(
        model: ResNet18,
        limits: Limits,
        source: String,
        (started, precision): (Instant, Precision),
    ) -> Self {
        let info = ModelInfo {
            name: MODEL_NAME,
            source,
            load_ms: started.elapsed().as_millis() as u64,
        };
        Self {
            model,
            limits,
            info,
            memory: Arc::new(DecodeMemory::for_limits(&limits)),
            precision,
        }
    }

    /// The arithmetic of the loaded model.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// What was loaded, from where, and how long it took.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The limits images are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Classifies one encoded image and returns its `k` most probable classes.
    pub fn classify(&self, image: &[u8], k: usize) -> Result<Ranking, ClassifyError> {
        check_top_k(k)?;
        let pre = preprocess::preprocess(image, &self.limits)?;
        let started = Instant::now();
        let probabilities = self.probabilities(&pre.chw, 1)?;
        let inference = started.elapsed();
        Ok(Ranking {
            classes: top_k(&probabilities[0], k),
            timing: StageTimes {
                decode: pre.decode,
                preprocess: pre.transform,
                inference,
            },
        })
    }

    /// Classifies several images with one forward pass. An image that fails to decode gets its
    /// own error and the others are still classified; results are in input order. The outer
    /// error is for failures that concern the whole batch (invalid `k`, model failure).
    pub fn classify_batch(
        &self,
        images: &[&[u8]],
        k: usize,
    ) -> Result<Vec<Result<Ranking, ClassifyError>>, ClassifyError> {
        check_top_k(k)?;
        let pre: Vec<_> = images
            .iter()
            .map(|bytes| preprocess::preprocess(bytes, &self.limits))
            .collect();
        let batch: Vec<f32> = pre
            .iter()
            .flatten()
            .flat_map(|p| p.chw.iter().copied())
            .collect();
        let started = Instant::now();
        let probabilities = self.probabilities(&batch, batch.len() / TENSOR_LEN)?;
        let inference = started.elapsed();
        let mut rows = probabilities.into_iter();
        Ok(pre
            .into_iter()
            .map(|result| {
                let p = result?;
                let row = rows.next().unwrap_or_default();
                Ok(Ranking {
                    classes: top_k(&row, k),
                    timing: StageTimes {
                        decode: p.decode,
                        preprocess: p.transform,
                        inference,
                    },
                })
            })
            .collect())
    }

    /// Decodes and preprocesses one encoded image against this classifier's limits, for a later
    /// batched forward ([`Self::probabilities`]). Errors are the same as [`Self::classify`]'s.
    pub fn prepare(&self, image: &[u8]) -> Result<Preprocessed, ClassifyError> {
        self.prepare_until(image, &Cancel::never())
    }

    /// [`Self::prepare`], given up once `cancel` fires (the request was abandoned or its
    /// deadline passed): [`PreprocessError::Interrupted`]. Concurrent calls share this
    /// classifier's decode memory: each first reserves what its image may hold
    /// ([`preprocess::memory_bound`]) and waits (blocking the thread) while the decodes
    /// already running leave no room, so two images at the edge of the budget are never
    /// decoded at once.
    pub fn prepare_until(
        &self,
        image: &[u8],
        cancel: &Cancel,
    ) -> Result<Preprocessed, ClassifyError> {
        let bound = preprocess::memory_bound(image, &self.limits);
        let _reserved = self
            .memory
            .reserve(bound, cancel)
            .map_err(PreprocessError::from)?;
        Ok(preprocess::preprocess_until(image, &self.limits, cancel)?)
    }

    /// Softmax probabilities of `count` preprocessed images laid end to end in `chw`
    /// (`count × 3×224×224` values), one row of 1000 per image, in one forward pass.
    /// Rank a row with [`top_k`].
    pub fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let input = Tensor::from_slice(chw, (count, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu)
            .map_err(ModelError::from)?;
        let logits = self.model.forward(&input)?;
        let probabilities =
            candle_nn::ops::softmax(&logits, D::Minus1).map_err(ModelError::from)?;
        Ok(probabilities.to_vec2::<f32>().map_err(ModelError::from)?)
    }

    /// Raw logits for already-preprocessed CHW data of `count` images (`count × 3×224×224`
    /// values). Used by parity tests and benchmarks.
    pub fn logits(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError> {
        let input = Tensor::from_slice(chw, (count, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu)
            .map_err(ModelError::from)?;
        let logits = self.model.forward(&input)?;
        Ok(logits.to_vec2::<f32>().map_err(ModelError::from)?)
    }

    /// Runs one inference on a blank image so the first real request pays no first-run cost.
    pub fn warm_up(&self) -> Result<(), ClassifyError> {
        self.logits(&vec![0f32; TENSOR_LEN], 1).map(|_| ())
    }
}

/// `Ok` when `k` is a valid number of classes to return (`1..=1000`).
pub fn check_top_k(k: usize) -> Result<(), ClassifyError> {
    if (1..=NUM_CLASSES).contains(&k) {
        Ok(())
    } else {
        Err(ClassifyError::InvalidTopK {
            k,
            max: NUM_CLASSES,
        })
    }
}

/// The `k` largest probabilities, best first; ties keep the lower class index first.
pub fn top_k(probabilities: &[f32], k: usize) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(k)
        .enumerate()
        .map(|(rank, index)| Prediction {
            rank: rank + 1,
            index,
            label: labels::label(index).unwrap_or("unknown").to_string(),
            label_en: None,
            label_zh: None,
            score: probabilities[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability_and_names_classes() {
        let mut p = vec![0.0f32; NUM_CLASSES];
        p[281] = 0.6;
        p[282] = 0.3;
        p[7] = 0.1;
        let top = top_k(&p, 3);
        let indices: Vec<usize> = top.iter().map(|c| c.index).collect();
        assert_eq!(indices, [281, 282, 7]);
        assert_eq!(top[0].label, "tabby");
        assert_eq!(top[0].rank, 1);
        assert_eq!(top[2].rank, 3);
    }

    #[test]
    fn top_k_outside_range_is_rejected() {
        assert!(matches!(
            check_top_k(0),
            Err(ClassifyError::InvalidTopK { .. })
        ));
        assert!(matches!(
            check_top_k(1001),
            Err(ClassifyError::InvalidTopK { .. })
        ));
        assert!(check_top_k(1000).is_ok());
    }
}
