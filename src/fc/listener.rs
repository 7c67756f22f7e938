//! The HTTP/1.1 accept loop, configured for FC: keep-alive on and **no** header-read timer.
//!
//! FC keeps one connection open and reuses it (docs/function-compute.md §1 "Keep-alive"). hyper 1's
//! `header_read_timeout` (30 s by default once a timer is installed) also runs while a
//! keep-alive connection waits for its next request, so an idle connection would be closed and
//! FC would answer 502. We therefore install no timer and set the timeout to `None` explicitly.
//!
//! On stop, the listener is closed first (no new connections); idle connections close at once,
//! busy ones after their in-flight request ([`GracefulShutdown`]). At the drain deadline
//! ([`Lifecycle::drain_deadline`]) every connection still open — a client stalled mid-body, a
//! slow upload — is closed, its request cancelled, and [`serve`] returns.
//!
//! Every connection's socket is wrapped in [`StampParserErrors`], so the 400/414/431 answers
//! hyper writes by itself for unparsable requests carry a request id too.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::lifecycle::Lifecycle;
use super::parser_errors::StampParserErrors;

/// The connection settings: HTTP/1.1, keep-alive, no header/idle timeout.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    builder
}

/// Serves `app` on `listener` until `lifecycle` is stopped, then drains: returns once every
/// connection has finished its in-flight request, or at the drain deadline after closing the
/// connections still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    lifecycle: Arc<Lifecycle>,
) -> io::Result<()> {
    let builder = http1_builder();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let io = TokioIo::new(StampParserErrors::new(stream));
                    let connection = graceful.watch(builder.serve_connection(io, service));
                    connections.spawn(async move {
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
            // Reap finished connection tasks so the set holds only open connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = lifecycle.stopped() => break,
        }
    }
    drop(listener);
    let deadline = lifecycle
        .drain_deadline()
        .unwrap_or_else(|| Instant::now() + lifecycle.drain_budget());
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep_until(deadline.into()) => {
            while connections.try_join_next().is_some() {}
            tracing::warn!(
                budget_s = lifecycle.drain_budget().as_secs_f64(),
                open = connections.len(),
                "drain budget spent: closing the connections still open"
            );
        }
    }
    // Dropping a connection task closes its socket and cancels its in-flight request.
    connections.shutdown().await;
    Ok(())
}
