//! The weights pipeline: TorchVision `.pth` checkpoints → `model/resnet18.safetensors`.
//!
//! * [`convert_checkpoint`] reads a PyTorch zip checkpoint ([`pth`]), checks every tensor
//!   ResNet-18 needs with [`crate::resnet::validate_tensors`] and writes safetensors atomically.
//! * [`fetch_model`] / [`fetch_model_async`] download TorchVision's checkpoint (or any URL with a
//!   pinned sha256), verify it while streaming, convert it and install the model plus a
//!   [`manifest::Manifest`]; [`ensure_model`] does that only when the model is missing.
//!
//! This module knows nothing about HTTP serving or images.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

mod atomic;
mod convert;
mod fetch;
pub mod manifest;
pub mod pth;

pub use convert::{ConvertOptions, ConvertReport, OutputDType, convert_checkpoint};
pub use fetch::{
    Advice, DEFAULT_SHA256, DEFAULT_SIZE, DEFAULT_URL, EnsureError, EnsureOutcome, FetchOptions,
    FetchReport, MANIFEST_FILE, MAX_DOWNLOAD_BYTES, SHA256_ENV, URL_ENV, ensure_model, fetch_model,
    fetch_model_async, redact_url,
};

use crate::resnet::ModelError;

/// Errors of conversion and download. Messages name the file or URL and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The input is not a PyTorch zip checkpoint, or is damaged.
    #[error("{path} is not a readable PyTorch checkpoint: {reason}")]
    NotACheckpoint {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The input uses PyTorch's pre-1.6 serialization.
    #[error(
        "{path} uses PyTorch's legacy (pre-1.6, non-zip) serialization, which is not supported; \
         re-save it with PyTorch ≥ 1.6: `torch.save(torch.load(\"in.pth\"), \"out.pth\")`"
    )]
    LegacyFormat {
        /// The file.
        path: String,
    },
    /// The pickle inside the checkpoint could not be decoded.
    #[error("{path}: cannot decode the checkpoint's pickle: {reason}")]
    Pickle {
        /// The file.
        path: String,
        /// Decoder message.
        reason: String,
    },
    /// No state dict (a dict of tensors) was found.
    #[error("{path}: no state dict found: {reason}")]
    NoStateDict {
        /// The file.
        path: String,
        /// Where we looked.
        reason: String,
    },
    /// A feature of the checkpoint this converter does not handle.
    #[error("{path}: unsupported {reason}")]
    Unsupported {
        /// The file or tensor.
        path: String,
        /// What is unsupported.
        reason: String,
    },
    /// A tensor is missing, misshaped or of the wrong dtype for ResNet-18.
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// candle failed converting or saving tensors.
    #[error("tensor conversion failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The download failed in transport (connection, TLS, timeout, truncated body).
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL (credentials and query removed).
        url: String,
        /// Transport error chain.
        reason: String,
    },
    /// The server answered with a non-success status.
    #[error("download of {url} failed: HTTP status {status}")]
    HttpStatus {
        /// The URL (credentials and query removed).
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// The body exceeded the expected size or [`MAX_DOWNLOAD_BYTES`].
    #[error("download of {url} exceeds {limit} bytes; is the URL right?")]
    TooLarge {
        /// The URL (credentials and query removed).
        url: String,
        /// Byte limit.
        limit: u64,
    },
    /// The download's sha256 differs from the expected one.
    #[error(
        "sha256 mismatch for {url}: expected {expected}, got {actual} ({size} bytes); \
         nothing was installed (check --sha256 / {SHA256_ENV})"
    )]
    HashMismatch {
        /// The URL (credentials and query removed).
        url: String,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
        /// Bytes received.
        size: u64,
    },
    /// The expected sha256 is not 64 hex digits.
    #[error("invalid sha256 `{value}`: expected 64 hexadecimal digits")]
    InvalidSha256 {
        /// The value given.
        value: String,
    },
    /// The model is missing and downloading is not allowed.
    #[error(
        "model file {path} is missing and downloads are disabled (offline); run \
         `resnet18-fc fetch-model` to download TorchVision's weights, or `resnet18-fc convert \
         IN.pth {path}` on a checkpoint you have"
    )]
    ModelMissing {
        /// Expected path of the weights.
        path: String,
    },
    /// The background conversion task failed to run.
    #[error("conversion task failed: {0}")]
    Task(String),
}

impl WeightsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// sha256 (lower-case hex) and size of a file, read in 64 KiB blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64), WeightsError> {
    let mut file = std::fs::File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| WeightsError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}
