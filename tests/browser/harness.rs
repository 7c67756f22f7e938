//! The server the browser talks to: the real `resnet18-fc serve` binary on an ephemeral
//! loopback port, with synthetic weights (tests/support), optionally behind a proxy that
//! puts it under a base path the way an FC HTTP trigger or custom-domain route does.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::support::{Spawned, client};

/// A running server; dropping it stops the binary (and the proxy task, if any).
pub struct Server {
    /// Where the page is served: `http://127.0.0.1:<port>/`, or `http://127.0.0.1:<port><base>`
    /// (no trailing slash, the harder case for relative URLs) under a base path.
    pub page_url: String,
    /// Absolute URL of the classify endpoint the page should end up calling.
    pub classify_url: String,
    _binary: Spawned,
    proxy: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.proxy {
            task.abort();
        }
    }
}

/// Starts `resnet18-fc serve --host 127.0.0.1 --port 0` with the synthetic model and waits until
/// the model is loaded.
async fn spawn_binary() -> Spawned {
    tokio::task::spawn_blocking(|| {
        let spawned = Spawned::start(&[], &[]);
        spawned.wait_ready();
        spawned
    })
    .await
    .expect("start the server binary")
}

/// The real server, at the root of its port.
pub async fn start_server() -> Server {
    let binary = spawn_binary().await;
    Server {
        page_url: binary.url("/"),
        classify_url: binary.url("/classify"),
        _binary: binary,
        proxy: None,
    }
}

/// The real server behind a proxy that serves it under `base` (e.g. `/2016-08-15/proxy/svc/fn`)
/// and strips that prefix, as FC's gateway does before the request reaches the function.
pub async fn start_under_base_path(base: &'static str) -> Server {
    let binary = spawn_binary().await;
    let upstream = binary.url("");
    let app = Router::new().fallback(forward).with_state((base, upstream));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind an ephemeral loopback port");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("proxy");
    });
    Server {
        page_url: format!("http://{addr}{base}"),
        classify_url: format!("http://{addr}{base}/classify"),
        _binary: binary,
        proxy: Some(task),
    }
}

/// Forwards `<base><rest>` to `<upstream><rest>` (`<base>` alone to `/`); anything else is 404.
async fn forward(
    State((base, upstream)): State<(&'static str, String)>,
    request: Request,
) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(rest) = path_and_query.strip_prefix(base) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rest = if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else if rest.starts_with('/') {
        rest.to_string()
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let method = request.method().clone();
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let mut call = client().request(method, format!("{upstream}{rest}"));
    if let Some(ct) = content_type {
        call = call.header(header::CONTENT_TYPE, ct);
    }
    let Ok(answer) = call.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body: Bytes = answer.bytes().await.unwrap_or_default();
    let mut response = (status, body).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}
