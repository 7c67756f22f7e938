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
pub mod eval;
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

/// `d` in milliseconds, rounded to 0.1 ms: how every duration is reported (CLI, API answers,
/// OSS result objects, logs).
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::millis;

    #[test]
    fn millis_rounds_to_a_tenth() {
        assert_eq!(millis(Duration::from_micros(3_149)), 3.1);
        assert_eq!(millis(Duration::from_micros(3_160)), 3.2);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }
}
