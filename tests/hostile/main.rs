//! Hostile inputs and faults: decompression bombs and malformed requests, hostile OSS regions,
//! buckets and keys, clients that vanish, panics, and a flaky OSS.

mod faults;
mod images;
mod oss;
mod requests;
#[path = "../support/mod.rs"]
mod support;
