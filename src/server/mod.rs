//! The function itself: routes, body limits, the shared model and the bounded inference pool,
//! assembled into the services the FC adapter ([`crate::fc`]) dispatches to.
//!
//! ```text
//! HTTP trigger  GET /          web page
//!               GET /healthz   readiness, model, version
//!               POST /classify JSON {"image", "top_k"} | image/* | octet-stream | multipart
//! events        /invoke        classify JSON (like /classify) | {"events": [...]} → EventHandler
//! lifecycle     /initialize    load + warm up the model
//! ```
//!
//! CPU work runs on the bounded [`pool`]; concurrent forwards are merged by [`batch`].
//!
//! Build a [`Server`], then either [`Server::router`] (for the FC adapter and a listener of your
//! own) or [`run`] (bind, serve, drain on stop).

pub mod batch;
pub mod cors;
pub mod handlers;
pub mod malloc;
pub mod model;
pub mod oversize;
pub mod plugins;
pub mod pool;

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use batch::{BatchOptions, BatchStats, Batcher};
pub use cors::CorsPolicy;
pub use model::{FetchingLoader, FileLoader, LoadError, ModelLoader, ModelSlot, Readiness};
pub use plugins::{BoxFuture, Classified, ClassifyHandle, EventHandler, ImageFetcher};
pub use pool::{Admission, InferencePool, PoolError};

use crate::config::MAX_BODY_BYTES;
use crate::fc::{self, FcRoutes, Lifecycle};

/// Tunables of a [`Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Largest request body accepted (413 above); at most FC's 32 MB.
    pub max_body_bytes: usize,
    /// Inference jobs that run at once (normally the vCPU count).
    pub workers: usize,
    /// Requests that may wait for a worker before new ones get 503.
    pub queue: usize,
    /// Micro-batching of concurrent requests into one forward pass.
    pub batch: BatchOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let workers = crate::config::cpu_budget();
        Self {
            max_body_bytes: MAX_BODY_BYTES,
            workers,
            queue: DEFAULT_QUEUE,
            batch: BatchOptions::default(),
        }
    }
}

/// Requests allowed to wait for a worker by default. FC sends at most `instanceConcurrency`
/// (≤ 200) at once; raise `--queue` if that is set higher than workers + 64.
pub const DEFAULT_QUEUE: usize = 64;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    core: ClassifyHandle,
    fetcher: Option<Arc<dyn ImageFetcher>>,
    events: Option<Arc<dyn EventHandler>>,
    max_body_bytes: usize,
    cors: Option<Arc<CorsPolicy>>,
}

/// The function: model slot, pool, limits and optional plug-ins.
pub struct Server {
    state: AppState,
}

impl Server {
    /// A server whose model is loaded by `loader` (call [`Server::start_loading`] or let the
    /// first request / `/initialize` load it).
    pub fn new(loader: Arc<dyn ModelLoader>, options: ServerOptions) -> Self {
        Self::with_slot(Arc::new(ModelSlot::new(loader)), options)
    }

    /// A server over an existing model slot (e.g. one already holding a classifier).
    pub fn with_slot(slot: Arc<ModelSlot>, options: ServerOptions) -> Self {
        let pool = InferencePool::new(options.workers, options.queue);
        let state = AppState {
            core: ClassifyHandle::new(slot, pool, options.batch),
            fetcher: None,
            events: None,
            max_body_bytes: options.max_body_bytes.min(MAX_BODY_BYTES),
            cors: None,
        };
        Self { state }
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

    /// Classification through this server's model and pool.
    pub fn classify_handle(&self) -> &ClassifyHandle {
        &self.state.core
    }

    /// Loads the model in the background now (the port is already bound by then).
    pub fn start_loading(&self) {
        let core = self.state.core.clone();
        tokio::spawn(async move {
            // Failures are logged by the slot and answered as 503 until a retry succeeds.
            let _ = core.slot().load_now(core.pool()).await;
        });
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
        }
    }

    /// The single router FC talks to (routes wrapped in the FC adapter).
    pub fn router(&self, lifecycle: Arc<Lifecycle>) -> Router {
        fc::adapter(self.routes(), lifecycle)
    }
}

/// Serves `server` on `listener`: starts loading the model, stops on SIGTERM/SIGINT or
/// `/pre-stop`, and returns after in-flight requests have finished.
pub async fn run(
    listener: TcpListener,
    server: Server,
    lifecycle: Arc<Lifecycle>,
) -> io::Result<()> {
    server.start_loading();
    tokio::spawn(fc::stop_on_signals(Arc::clone(&lifecycle)));
    let app = server.router(Arc::clone(&lifecycle));
    fc::serve(listener, app, lifecycle).await
}
