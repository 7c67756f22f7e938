//! The Function Compute adapter: control paths, log markers, the per-request context, the
//! stop/drain lifecycle, local runs that fetch the weights, and credentials that never leak.

mod context;
mod lifecycle;
mod local_run;
mod runtime;
mod secrets;
#[path = "../support/mod.rs"]
mod support;
