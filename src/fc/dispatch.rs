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
//! | `/invoke` / `POST /invoke` | [`FcRoutes::invoke`] | `FC Invoke Start/End` | `x-fc-status` ([`report_event_status`]) |
//! | `/initialize` / `POST /initialize` | [`FcRoutes::initialize`] | `FC Initialize Start/End` | — |
//! | `/pre-stop` / `GET /pre-stop` | built in: stop and drain | `FC PreStop Start/End` | — |
//!
//! HTTP-trigger requests always carry `x-fc-control-path: /http-invoke`, so a client on the
//! internet cannot reach `/initialize` or `/pre-stop` through the HTTP trigger. FC sends the
//! header exactly once; a request with two is refused (400 `duplicate_control_path`) rather than
//! routed by either.
//!
//! Every answer carries the request id in [`X_REQUEST_ID`] (FC's own `x-fc-*` names are not
//! for functions to set), and the `End` marker is printed even when the client goes away before
//! the answer (the request's future is then dropped; see `Markers`).

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tower::ServiceExt;
use tracing::Instrument;

use super::context::FcContext;
use super::lifecycle::Lifecycle;

/// Response header reporting an event invocation's outcome to FC (200 success, 404 failure).
pub const X_FC_STATUS: HeaderName = HeaderName::from_static("x-fc-status");

/// Response header carrying the request id (FC's `x-fc-request-id`, or a local `local-…` id) on
/// every answer. Not `x-fc-request-id`: FC reserves `x-fc-*` response headers (only
/// `x-fc-status` may be set) and adds that one itself.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The header that picks the service; FC sends it exactly once.
const CONTROL_PATH: &str = "x-fc-control-path";

/// Response extension set by an event service on a failure that a retry cannot fix (the event
/// itself is at fault: not JSON, malformed, not an image). [`report_event_status`] answers it
/// as a handled invocation, so FC does not retry it; the body keeps the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermanentFailure;

/// The services a function provides; the adapter picks one per request.
#[derive(Clone, Debug)]
pub struct FcRoutes {
    /// HTTP-trigger requests (and local requests that are not lifecycle or invoke calls).
    pub http: Router,
    /// Event invocations: the body is the event, whatever its Content-Type.
    pub invoke: Router,
    /// The Initializer hook.
    pub initialize: Router,
    /// Renders the answer to a request no service could take (the function's own error
    /// body: the adapter does not know it), given the request id.
    pub failure: fn(AdapterFailure, &str) -> Response,
}

/// A request the adapter answers without a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdapterFailure {
    /// More than one `x-fc-control-path` header (FC sends exactly one): refused, 400.
    #[error("the request has {count} {CONTROL_PATH} headers; Function Compute sends exactly one")]
    DuplicateControlPath {
        /// Headers seen.
        count: usize,
    },
    /// The service panicked; the panic was contained, 500.
    #[error("the handler panicked")]
    Panicked,
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
            // Not in FC's documented marker list (docs/function-compute.md §1 "Log markers"); same pattern.
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
    let control_paths = request.headers().get_all(CONTROL_PATH).iter().count();
    let target = if control_paths > 1 {
        Target::Http
    } else {
        target(
            request.method(),
            request.uri().path(),
            context.control_path.as_deref(),
        )
    };
    remove_fc_headers(request.headers_mut());
    let request_id = context.request_id.clone();
    let started = context.received_at;
    request.extensions_mut().insert(context);
    let _in_flight = adapter.lifecycle.track();
    let span = tracing::info_span!("request", request_id = %request_id);
    async move {
        let markers = Markers::start(target.phase(), &request_id);
        tracing::debug!(method = %request.method(), path = request.uri().path(), ?target, "received");
        let response = if control_paths > 1 {
            tracing::warn!(count = control_paths, "refused: duplicate {CONTROL_PATH} headers");
            let failure = AdapterFailure::DuplicateControlPath {
                count: control_paths,
            };
            (adapter.routes.failure)(failure, &request_id)
        } else {
            run_target(&adapter, target, request, &request_id).await
        };
        tracing::info!(
            status = response.status().as_u16(),
            ms = crate::millis(started.elapsed()),
            ?target,
            "answered"
        );
        markers.end();
        with_request_id(response, &request_id)
    }
    .instrument(span)
    .await
}

/// FC's `Start`/`End` log markers of one request. `End` is printed by [`Markers::end`], or on
/// drop when the request's future is dropped first (the client went away, the connection was
/// closed at the drain deadline), so every `Start` has its `End`.
struct Markers<'a> {
    phase: &'static str,
    request_id: &'a str,
    answered: bool,
}

impl<'a> Markers<'a> {
    fn start(phase: &'static str, request_id: &'a str) -> Self {
        print_marker(phase, "Start", request_id);
        Self {
            phase,
            request_id,
            answered: false,
        }
    }

    fn end(mut self) {
        self.answered = true;
    }
}

impl Drop for Markers<'_> {
    fn drop(&mut self) {
        if !self.answered {
            tracing::info!("client went away or the connection was closed before the answer");
        }
        print_marker(self.phase, "End", self.request_id);
    }
}

/// Adds [`X_REQUEST_ID`] to an answer.
fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
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
            (adapter.routes.failure)(AdapterFailure::Panicked, request_id)
        }
    };
    if target == Target::Invoke {
        report_event_status(response)
    } else {
        response
    }
}

/// FC's event contract (status 200 + `x-fc-status: 200` success, 404 + `404` failure; FC
/// retries failed asynchronous invocations): success stays 200; a failure a retry may fix (5xx)
/// becomes 404 + `x-fc-status: 404`, so FC retries it; a failure marked [`PermanentFailure`]
/// becomes 200 + `x-fc-status: 200` with its error body, so FC does not retry what can never
/// succeed.
pub fn report_event_status(mut response: Response) -> Response {
    let ok = response.status().is_success();
    let permanent = response.extensions().get::<PermanentFailure>().is_some();
    let handled = ok || permanent;
    if permanent && !ok {
        tracing::warn!(
            status = response.status().as_u16(),
            "permanent failure: answered x-fc-status 200 so that it is not retried"
        );
        *response.status_mut() = StatusCode::OK;
    } else if !ok {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    let value = HeaderValue::from_static(if handled { "200" } else { "404" });
    response.headers_mut().insert(X_FC_STATUS, value);
    response
}

/// PreStop: stop accepting, wait for the other in-flight requests until a little before the
/// drain deadline ([`Lifecycle::pre_stop_answer_by`]), then answer; `"drained": false` means
/// requests were still running and their connections are closed at the deadline.
async fn pre_stop(lifecycle: &Lifecycle, request_id: &str) -> Response {
    lifecycle.request_stop("pre-stop hook");
    let wait = lifecycle.pre_stop_answer_by().map_or(Duration::ZERO, |by| {
        by.saturating_duration_since(Instant::now())
    });
    let drained = lifecycle.wait_in_flight_at_most(1, wait).await;
    let still_running = lifecycle.in_flight().saturating_sub(1);
    if !drained {
        tracing::warn!(
            still_running,
            "pre-stop: requests still running; their connections close at the drain deadline"
        );
    }
    let body = serde_json::json!({
        "status": "stopping",
        "drained": drained,
        "still_running": still_running,
        "drain_budget_s": lifecycle.drain_budget().as_secs_f64(),
        "request_id": request_id,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
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
    fn retryable_failures_become_404_and_permanent_ones_200_with_x_fc_status() {
        let failed = report_event_status((StatusCode::BAD_GATEWAY, "x").into_response());
        assert_eq!(failed.status(), StatusCode::NOT_FOUND);
        assert_eq!(failed.headers()[X_FC_STATUS], "404");
        let unmarked = report_event_status((StatusCode::BAD_REQUEST, "x").into_response());
        assert_eq!(unmarked.headers()[X_FC_STATUS], "404");
        let mut permanent = (StatusCode::BAD_REQUEST, "x").into_response();
        permanent.extensions_mut().insert(PermanentFailure);
        let permanent = report_event_status(permanent);
        assert_eq!(permanent.status(), StatusCode::OK);
        assert_eq!(permanent.headers()[X_FC_STATUS], "200");
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
