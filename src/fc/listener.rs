//! The HTTP/1.1 accept loop, configured for FC: keep-alive on and **no** header-read timer.
//!
//! FC keeps one connection open and reuses it (platform.md §0 fact 7). hyper 1's
//! `header_read_timeout` (30 s by default once a timer is installed) also runs while a
//! keep-alive connection waits for its next request, so an idle connection would be closed and
//! FC would answer 502. We therefore install no timer and set the timeout to `None` explicitly.
//!
//! On stop, the listener is closed first (no new connections), then every connection finishes
//! its in-flight request and closes ([`GracefulShutdown`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::lifecycle::Lifecycle;

/// Longest time a stop waits for in-flight requests (FC's PreStop hook may take 90 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(80);

/// The connection settings: HTTP/1.1, keep-alive, no header/idle timeout.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    builder
}

/// Serves `app` on `listener` until `lifecycle` is stopped, then drains: returns once every
/// connection has finished its in-flight request, or after [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    lifecycle: Arc<Lifecycle>,
) -> io::Result<()> {
    let builder = http1_builder();
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = lifecycle.stopped() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!(seconds = DRAIN_TIMEOUT.as_secs(), "drain timed out; exiting anyway");
        }
    }
    Ok(())
}
