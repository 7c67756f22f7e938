//! The model below the engine: the classifier, the fast ResNet-18 graph against stock candle
//! and PyTorch goldens, preprocessing of every accepted format, weights conversion and fetching,
//! int8 fidelity, and the `classify` and `eval` command lines.

mod classifier;
mod cli_classify;
mod cli_eval;
mod cli_precision;
mod forward_matches_candle;
mod int8_golden;
#[path = "../support/largest_allocation.rs"]
mod largest_allocation;
mod parity;
mod preprocess_formats;
mod preprocess_jpeg_scaled;
#[path = "../support/mod.rs"]
mod support;
mod weights;
