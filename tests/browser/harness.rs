//! The server the browser talks to.
//!
//! [`start_server`] is the one place that decides what serves the page. Until the real
//! `resnet18-fc serve` lands, it is a small axum app: `GET /` serves [`INDEX_HTML`] and
//! `POST /classify` runs the real [`Classifier`] on synthetic weights (no stub) and answers in the
//! contract's shapes (DESIGN.md "Contracts").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use resnet18_fc::classifier::{Classifier, ClassifyError};
use resnet18_fc::preprocess::{Limits, PreprocessError};
use resnet18_fc::synthetic::SyntheticWeights;
use resnet18_fc::web::{INDEX_CACHE_CONTROL, INDEX_CONTENT_TYPE, INDEX_HTML};
use serde_json::{Value, json};

/// A running server; dropping it stops the listener task.
pub struct Server {
    /// Where the page is served: `http://127.0.0.1:<port>/`, or `http://127.0.0.1:<port><base>`
    /// (no trailing slash, the harder case for relative URLs) under a base path.
    pub page_url: String,
    /// Absolute URL of the classify endpoint the page should end up calling.
    pub classify_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the server the browser tests run against, at the root of an ephemeral loopback port.
pub async fn start_server() -> Server {
    start_harness("").await
}

/// Starts the harness with every route under `base` (e.g. `/2016-08-15/proxy/svc/fn`), the way
/// an FC HTTP trigger or a custom-domain route can put a function under a base path.
pub async fn start_harness(base: &str) -> Server {
    let api = Router::new()
        .route("/", get(index))
        .route("/classify", post(classify))
        .with_state(classifier());
    let app = if base.is_empty() {
        api
    } else {
        Router::new().nest(base, api)
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind an ephemeral loopback port");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("harness server");
    });
    Server {
        page_url: if base.is_empty() {
            format!("http://{addr}/")
        } else {
            format!("http://{addr}{base}")
        },
        classify_url: format!("http://{addr}{base}/classify"),
        task,
    }
}

/// One classifier per test binary: generating the synthetic weights takes a moment.
fn classifier() -> Arc<Classifier> {
    static CLASSIFIER: OnceLock<Arc<Classifier>> = OnceLock::new();
    CLASSIFIER
        .get_or_init(|| {
            let weights = SyntheticWeights::generate();
            let c = Classifier::from_source(&weights, "synthetic", Limits::default())
                .expect("synthetic weights build a classifier");
            Arc::new(c)
        })
        .clone()
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, INDEX_CONTENT_TYPE),
            (header::CACHE_CONTROL, INDEX_CACHE_CONTROL),
        ],
        INDEX_HTML,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Params {
    top_k: Option<usize>,
}

async fn classify(
    State(classifier): State<Arc<Classifier>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let request_id = format!("harness-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(content_type.starts_with("image/") || content_type == "application/octet-stream") {
        let message = format!("content type {content_type:?} is not an image");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            &message,
            &request_id,
        );
    }
    let started = Instant::now();
    let k = params.top_k.unwrap_or(3);
    let result = tokio::task::spawn_blocking(move || classifier.classify(&body, k)).await;
    match result {
        Ok(Ok(p)) => {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            let body = json!({
                "model": "resnet18",
                "predictions": p.classes,
                "timing_ms": {
                    "fetch": 0.0,
                    "decode": ms(p.timing.decode),
                    "inference": ms(p.timing.inference),
                    "total": ms(started.elapsed()),
                },
                "request_id": request_id,
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => error(status_of(&e), e.code(), &e.to_string(), &request_id),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "worker failed",
            &request_id,
        ),
    }
}

fn status_of(e: &ClassifyError) -> StatusCode {
    match e {
        ClassifyError::Image(PreprocessError::UnsupportedFormat) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        ClassifyError::Image(PreprocessError::TooManyPixels { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ClassifyError::Image(_) | ClassifyError::InvalidTopK { .. } => StatusCode::BAD_REQUEST,
        ClassifyError::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body: Value =
        json!({"error": {"code": code, "message": message}, "request_id": request_id});
    (status, axum::Json(body)).into_response()
}
