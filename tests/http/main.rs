//! The HTTP services over loopback against in-process servers and the real binary: the API
//! contract, micro-batching, `/invoke` and the plug-in seams, peak memory while serving.

mod api;
mod batching;
mod invoke;
mod memory;
#[path = "../support/mod.rs"]
mod support;
