//! resnet18-fc: TorchVision's ResNet-18 image classifier, run by candle on CPU, served as an
//! Alibaba Cloud Function Compute custom-runtime function.
//!
//! Layers, each knowing only the one below it:
//! [`preprocess`] (bytes → tensor data) and [`resnet`] (tensor → logits) are joined by
//! [`classifier::Classifier`], the only door into the model.

pub mod api;
pub mod classifier;
pub mod config;
pub mod eval;
pub mod fc;
pub use resnet18_kernels as kernels;
pub mod labels;
pub mod oss;
pub mod preprocess;
pub mod resnet;
pub mod server;
pub mod synthetic;
pub mod web;
pub mod weights;
