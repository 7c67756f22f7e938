//! The HTTP face of the function: routes, handlers, body limits, CORS, request parsing and the
//! one error mapping ([`error`]), over an [`Engine`].
//!
//! ```text
//! HTTP trigger  GET /          web page
//!               GET /healthz   readiness, model, version
//!               POST /classify JSON {"image", "top_k"} | image/* | octet-stream | multipart
//! events        /invoke        classify JSON (like /classify) | {"events": [...]} → EventHandler
//! lifecycle     /initialize    load + warm up the model
//! ```
//!
//! Build a [`Server`] over an engine, add the optional seams ([`ImageFetcher`] for `{"url"}`
//! images, [`EventHandler`] for `{"events"}` invocations), then hand [`Server::routes`] to the
//! FC adapter (`crate::fc::adapter`); the composition root (`src/app`) does that.
//! Handlers read the [`FcContext`](crate::fc::FcContext) the adapter put in the request
//! extensions, never `x-fc-*` headers.

pub mod cors;
pub mod error;
pub mod handlers;
pub mod oversize;
pub mod request;
mod seams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

pub use cors::CorsPolicy;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use seams::{BoxFuture, EventHandler, ImageFetcher};

use crate::config::MAX_BODY_BYTES;
use crate::engine::Engine;
use crate::fc::FcRoutes;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    engine: Engine,
    fetcher: Option<Arc<dyn ImageFetcher>>,
    events: Option<Arc<dyn EventHandler>>,
    max_body_bytes: usize,
    cors: Option<Arc<CorsPolicy>>,
}

/// The function's HTTP services over an engine, with their limits and optional seams.
pub struct Server {
    state: AppState,
}

impl Server {
    /// Services over `engine`, accepting bodies up to FC's limit ([`MAX_BODY_BYTES`]).
    pub fn new(engine: Engine) -> Self {
        let state = AppState {
            engine,
            fetcher: None,
            events: None,
            max_body_bytes: MAX_BODY_BYTES,
            cors: None,
        };
        Self { state }
    }

    /// Refuses bodies larger than `limit` bytes with 413 (at most [`MAX_BODY_BYTES`]).
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.state.max_body_bytes = limit.min(MAX_BODY_BYTES);
        self
    }

    /// Resolves `{"url": ...}` images with `fetcher` (the OSS client).
    pub fn with_fetcher(mut self, fetcher: Arc<dyn ImageFetcher>) -> Self {
        self.state.fetcher = Some(fetcher);
        self
    }

    /// Handles `{"events": [...]}` invocations with `handler` (the OSS trigger).
    pub fn with_event_handler(mut self, handler: Arc<dyn EventHandler>) -> Self {
        self.state.events = Some(handler);
        self
    }

    /// Answers cross-origin requests of the HTTP routes as `policy` says (default: CORS off,
    /// no CORS headers).
    pub fn with_cors(mut self, policy: Option<CorsPolicy>) -> Self {
        self.state.cors = policy.map(Arc::new);
        self
    }

    /// The engine requests are classified with.
    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// The services the FC adapter dispatches to.
    pub fn routes(&self) -> FcRoutes {
        let state = Arc::new(self.state.clone());
        let limit = DefaultBodyLimit::max(self.state.max_body_bytes);
        let mut http = Router::new()
            .route("/", get(handlers::index))
            .route("/healthz", get(handlers::healthz))
            .route("/classify", post(handlers::classify))
            .fallback(handlers::not_found)
            .method_not_allowed_fallback(handlers::method_not_allowed)
            .layer(limit)
            .with_state(Arc::clone(&state));
        if let Some(policy) = &self.state.cors {
            http = http.layer(middleware::from_fn_with_state(
                Arc::clone(policy),
                cors::apply,
            ));
        }
        let invoke = Router::new()
            .fallback(handlers::invoke)
            .layer(limit)
            .with_state(Arc::clone(&state));
        let initialize = Router::new()
            .fallback(handlers::initialize)
            .with_state(state);
        FcRoutes {
            http,
            invoke,
            initialize,
            failure: error::adapter_failure,
        }
    }
}
