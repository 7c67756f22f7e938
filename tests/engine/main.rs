//! The model below the engine: the classifier, the fast ResNet-18 graph against stock candle
//! and PyTorch goldens, preprocessing of every accepted format, weights conversion and fetching,
//! and the `classify` command line.

mod classifier;
mod cli_classify;
mod forward_matches_candle;
#[path = "../support/largest_allocation.rs"]
mod largest_allocation;
mod parity;
mod preprocess_formats;
mod preprocess_jpeg_scaled;
#[path = "../support/mod.rs"]
mod support;
mod weights;
