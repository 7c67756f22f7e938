//! Whole requests through the real router (FC adapter + handlers), without a model: raw,
//! JSON and multipart bodies to `/classify` and `/invoke`. Input: byte 0 picks the
//! Content-Type, byte 1 the target; the rest is the body. Parsing must answer a JSON 4xx (on
//! `/invoke`: 200 with `x-fc-status: 200` and the error body, a failure FC must not retry), or
//! reach the model (503 `model_not_ready` here, the weights file does not exist) — never a 500,
//! never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use resnet18_fc::app;
use resnet18_fc::classifier::Precision;
use resnet18_fc::engine::{Engine, EngineOptions, FileLoader};
use resnet18_fc::fc::Lifecycle;
use resnet18_fc::http::Server;
use resnet18_fc::preprocess::Limits;
use tower::ServiceExt;

const CONTENT_TYPES: [Option<&str>; 9] = [
    None,
    Some("application/json"),
    Some("application/octet-stream"),
    Some("image/png"),
    Some("multipart/form-data; boundary=B"),
    Some("multipart/form-data; boundary=\"a b\""),
    Some("multipart/form-data"),
    Some("text/plain"),
    Some("application/ld+json; charset=utf-8"),
];

const TARGETS: [(&str, Option<&str>); 5] = [
    ("/classify", None),
    ("/classify?top_k=5", None),
    ("/invoke", None),
    ("/anything", Some("/invoke")),
    ("/classify", Some("/http-invoke")),
];

struct World {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let loader = Arc::new(FileLoader {
            path: PathBuf::from("/nonexistent/fuzz.safetensors"),
            limits: Limits::default(),
            precision: Precision::F32,
        });
        let options = EngineOptions {
            workers: 1,
            queue: 4,
            batch: Default::default(),
        };
        let server = Server::new(Engine::new(loader, options)).with_max_body_bytes(1 << 20);
        let app = app::router(&server, Lifecycle::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        World { runtime, app }
    })
}

fuzz_target!(|data: &[u8]| {
    let [ct, target, body @ ..] = data else {
        return;
    };
    let (path, control) = TARGETS[usize::from(*target) % TARGETS.len()];
    let mut request = http::Request::post(path);
    if let Some(ct) = CONTENT_TYPES[usize::from(*ct) % CONTENT_TYPES.len()] {
        request = request.header("content-type", ct);
    }
    if let Some(control) = control {
        request = request.header("x-fc-control-path", control);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let world = world();
    let response = world
        .runtime
        .block_on(world.app.clone().oneshot(request))
        .expect("infallible");
    let status = response.status();
    let final_event_failure = status == http::StatusCode::OK
        && response
            .headers()
            .get("x-fc-status")
            .is_some_and(|v| v == "200");
    assert!(
        status.is_client_error()
            || status == http::StatusCode::SERVICE_UNAVAILABLE
            || final_event_failure,
        "status {status}"
    );
    let bytes = world
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .expect("body");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
    assert!(json["error"]["code"].is_string(), "{json}");
});
