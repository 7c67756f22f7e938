//! Seams for features that live outside the HTTP layer; the composition root plugs them in.
//!
//! - [`ImageFetcher`]: resolves `{"url": "..."}` images (OSS). Without one, such requests get
//!   400 `url_not_supported`.
//! - [`EventHandler`]: handles `/invoke` bodies `{"events": [...]}` (OSS trigger). Without one,
//!   they get `unsupported_event` (404 + `x-fc-status: 404`, as for every failed event).
//!   Handlers get the [`Engine`], so they never touch the model directly.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::error::ApiError;
use crate::engine::Engine;
use crate::fc::FcContext;

/// A boxed, sendable future (what the seam traits return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches the image a request names by URL (e.g. `oss://bucket/key`).
pub trait ImageFetcher: Send + Sync + 'static {
    /// The encoded image bytes, or an error with the status to answer (403/404 from OSS,
    /// 502/504 upstream, 413 too large, 400 bad URL). `context` carries the credentials.
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        context: &'a FcContext,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>>;
}

/// Handles an `/invoke` event body of the form `{"events": [...]}`.
pub trait EventHandler: Send + Sync + 'static {
    /// Processes the raw event body; `Ok` becomes a 200 JSON answer, `Err` a failed event.
    fn handle<'a>(
        &'a self,
        event: Bytes,
        context: &'a FcContext,
        engine: &'a Engine,
    ) -> BoxFuture<'a, Result<serde_json::Value, ApiError>>;
}
