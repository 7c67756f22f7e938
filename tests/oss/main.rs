//! OSS: signature V4 vectors, the client against a local OSS-compatible server, upload events,
//! and `{"url"}` images and upload events through the HTTP server.

mod client;
mod event;
mod http;
mod sign;
#[path = "../support/mod.rs"]
mod support;
