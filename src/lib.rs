//! resnet18-fc: TorchVision's ResNet-18 image classifier, run by candle on CPU, served as an
//! Alibaba Cloud Function Compute custom-runtime function.
//!
//! Layers, each knowing only those below it (docs/ARCHITECTURE.md has the map):
//! [`app`] (composition root) → [`http`] → [`engine`] → [`classifier`] → [`preprocess`] and
//! [`resnet`]; [`fc`] (the platform adapter) and [`oss`] are used by [`app`] and know neither
//! the engine nor HTTP answers.

pub mod app;
pub mod classifier;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod fc;
pub mod http;
pub use resnet18_kernels as kernels;
pub mod labels;
pub mod malloc;
pub mod oss;
pub mod preprocess;
pub mod resnet;
pub mod synthetic;
pub mod web;
pub mod weights;
