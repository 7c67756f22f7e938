//! Control-path dispatch: the one place that reads `x-fc-*` headers.
//!
//! For every request the adapter builds an [`FcContext`], removes the `x-fc-*` headers (so no
//! handler can read or echo the credentials in them), stores the context in the request
//! extensions, opens a tracing span carrying the request id, prints FC's log markers on stdout
//! and picks a service by `x-fc-control-path` (request path as fallback, for local runs):
//!
//! | control path / local request | service | markers | extra |
//! |---|---|---|---|
//! | `/http-invoke`, anything else | [`FcRoutes::http`] | `FC Invoke Start/End` | — |
//! | `/invoke` / `POST /invoke` | [`FcRoutes::invoke`] | `FC Invoke Start/End` | `x-fc-status`; failures become 404 |
//! | `/initialize` / `POST /initialize` | [`FcRoutes::initialize`] | `FC Initialize Start/End` | — |
//! | `/pre-stop` / `GET /pre-stop` | built in: stop and drain | `FC PreStop Start/End` | — |
//!
//! HTTP-trigger requests always carry `x-fc-control-path: /http-invoke`, so a client on the
//! internet cannot reach `/initialize` or `/pre-stop` through the HTTP trigger.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tower::ServiceExt;
use tracing::Instrument;

use super::context::FcContext;
use super::lifecycle::Lifecycle;
use super::listener::DRAIN_TIMEOUT;
use crate::api::ApiError;

/// Response header reporting an event invocation's outcome to FC (200 success, 404 failure).
pub const X_FC_STATUS: HeaderName = HeaderName::from_static("x-fc-status");

/// The services a function provides; the adapter picks one per request.
#[derive(Clone, Debug)]
pub struct FcRoutes {
    /// HTTP-trigger requests (and local requests that are not lifecycle or invoke calls).
    pub http: Router,
    /// Event invocations: the body is the event, whatever its Content-Type.
    pub invoke: Router,
    /// The Initializer hook.
    pub initialize: Router,
}

/// Which service a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An HTTP-trigger request.
    Http,
    /// An event invocation.
    Invoke,
    /// The Initializer hook.
    Initialize,
    /// The PreStop hook.
    PreStop,
}

/// Chooses the target from `x-fc-control-path`, else from method and path.
pub fn target(method: &Method, path: &str, control_path: Option<&str>) -> Target {
    match control_path {
        Some("/http-invoke") => Target::Http,
        Some("/invoke") => Target::Invoke,
        Some("/initialize") => Target::Initialize,
        Some("/pre-stop") => Target::PreStop,
        _ => match (method, path) {
            (&Method::POST, "/invoke") => Target::Invoke,
            (&Method::POST, "/initialize") => Target::Initialize,
            (&Method::GET, "/pre-stop") => Target::PreStop,
            _ => Target::Http,
        },
    }
}

impl Target {
    /// The word in FC's log markers (`FC <phase> Start RequestId: <id>`).
    fn phase(self) -> &'static str {
        match self {
            Self::Http | Self::Invoke => "Invoke",
            Self::Initialize => "Initialize",
            // Not in FC's documented marker list (platform.md §1.9); same pattern.
            Self::PreStop => "PreStop",
        }
    }
}

struct Adapter {
    routes: FcRoutes,
    lifecycle: Arc<Lifecycle>,
}

/// Wraps the function's services into the single router FC talks to.
pub fn adapter(routes: FcRoutes, lifecycle: Arc<Lifecycle>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(Arc::new(Adapter { routes, lifecycle }))
}

async fn dispatch(State(adapter): State<Arc<Adapter>>, mut request: Request) -> Response {
    let context = FcContext::from_headers(request.headers());
    let target = target(
        request.method(),
        request.uri().path(),
        context.control_path.as_deref(),
    );
    remove_fc_headers(request.headers_mut());
    let request_id = context.request_id.clone();
    let started = context.received_at;
    request.extensions_mut().insert(context);
    let _in_flight = adapter.lifecycle.track();
    let span = tracing::info_span!("request", request_id = %request_id);
    async move {
        print_marker(target.phase(), "Start", &request_id);
        tracing::debug!(method = %request.method(), path = request.uri().path(), ?target, "received");
        let response = run_target(&adapter, target, request, &request_id).await;
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            ?target,
            "answered"
        );
        print_marker(target.phase(), "End", &request_id);
        response
    }
    .instrument(span)
    .await
}

async fn run_target(
    adapter: &Adapter,
    target: Target,
    request: Request,
    request_id: &str,
) -> Response {
    let service = match target {
        Target::Http => &adapter.routes.http,
        Target::Invoke => &adapter.routes.invoke,
        Target::Initialize => &adapter.routes.initialize,
        Target::PreStop => return pre_stop(&adapter.lifecycle, request_id).await,
    };
    let call = AssertUnwindSafe(service.clone().oneshot(request)).catch_unwind();
    let response = match call.await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_panic) => {
            tracing::error!("handler panicked");
            internal_error(request_id)
        }
    };
    if target == Target::Invoke {
        report_event_status(response)
    } else {
        response
    }
}

/// FC's event contract: success is status 200 + `x-fc-status: 200`; any failure is reported as
/// status 404 + `x-fc-status: 404` (the body keeps the real error code).
pub fn report_event_status(mut response: Response) -> Response {
    let ok = response.status().is_success();
    if !ok {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    let value = HeaderValue::from_static(if ok { "200" } else { "404" });
    response.headers_mut().insert(X_FC_STATUS, value);
    response
}

/// PreStop: stop accepting, wait for the other in-flight requests, then answer.
async fn pre_stop(lifecycle: &Lifecycle, request_id: &str) -> Response {
    lifecycle.request_stop("pre-stop hook");
    let drained = lifecycle.wait_in_flight_at_most(1, DRAIN_TIMEOUT).await;
    let body =
        serde_json::json!({"status": "stopping", "drained": drained, "request_id": request_id});
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn internal_error(request_id: &str) -> Response {
    let error = ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the request was logged",
    );
    (error.status, axum::Json(error.body(request_id))).into_response()
}

fn remove_fc_headers(headers: &mut http::HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-fc-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Prints `FC <phase> <Start|End> RequestId: <id>` on stdout, exactly as FC's console expects.
fn print_marker(phase: &str, edge: &str, request_id: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the request down with it.
    let _ = writeln!(out, "FC {phase} {edge} RequestId: {request_id}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_path_header_wins_over_the_request_path() {
        let post = Method::POST;
        assert_eq!(target(&post, "/invoke", Some("/http-invoke")), Target::Http);
        assert_eq!(target(&post, "/classify", Some("/invoke")), Target::Invoke);
        assert_eq!(target(&post, "/", Some("/initialize")), Target::Initialize);
        assert_eq!(
            target(&Method::GET, "/pre-stop", Some("/http-invoke")),
            Target::Http
        );
    }

    #[test]
    fn without_the_header_the_path_decides() {
        assert_eq!(target(&Method::POST, "/invoke", None), Target::Invoke);
        assert_eq!(
            target(&Method::POST, "/initialize", None),
            Target::Initialize
        );
        assert_eq!(target(&Method::GET, "/pre-stop", None), Target::PreStop);
        assert_eq!(target(&Method::GET, "/invoke", None), Target::Http);
        assert_eq!(target(&Method::POST, "/classify", None), Target::Http);
    }

    #[test]
    fn failed_events_become_404_with_x_fc_status() {
        let failed = report_event_status((StatusCode::BAD_REQUEST, "x").into_response());
        assert_eq!(failed.status(), StatusCode::NOT_FOUND);
        assert_eq!(failed.headers()[X_FC_STATUS], "404");
        let ok = report_event_status((StatusCode::OK, "x").into_response());
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[X_FC_STATUS], "200");
    }

    #[test]
    fn fc_headers_are_removed() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-fc-access-key-secret", HeaderValue::from_static("s"));
        headers.insert("x-fc-request-id", HeaderValue::from_static("r"));
        headers.insert("content-type", HeaderValue::from_static("image/png"));
        remove_fc_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("content-type"));
    }
}
