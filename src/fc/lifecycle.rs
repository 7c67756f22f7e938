//! Instance lifecycle: the stop signal (SIGTERM, SIGINT or `GET /pre-stop`) and the count of
//! requests in flight, so a stop can wait for them to finish.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Shared stop flag and in-flight counter of one server.
#[derive(Debug)]
pub struct Lifecycle {
    stop: watch::Sender<bool>,
    in_flight: AtomicUsize,
    changed: Notify,
}

impl Lifecycle {
    /// A running (not stopping) lifecycle with nothing in flight.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            stop: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    /// Asks the server to stop accepting connections and drain. Idempotent.
    pub fn request_stop(&self, reason: &str) {
        if !self.stop.send_replace(true) {
            tracing::info!(
                reason,
                "stopping: no new connections, draining in-flight requests"
            );
        }
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once a stop has been requested.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail here.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at most `n` requests are in flight, or `timeout` passes; returns whether the
    /// count was reached.
    pub async fn wait_in_flight_at_most(&self, n: usize, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let mut notified = pin!(self.changed.notified());
                notified.as_mut().enable();
                if self.in_flight() <= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

/// Guard of one in-flight request (see [`Lifecycle::track`]).
#[derive(Debug)]
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Requests a stop on SIGTERM (what FC sends before destroying an instance) or SIGINT (Ctrl-C).
/// Returns when a signal arrived or the handlers could not be installed.
pub async fn stop_on_signals(lifecycle: Arc<Lifecycle>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install SIGTERM/SIGINT handlers");
            return;
        }
    };
    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    lifecycle.request_stop(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_in_flight_requests_ends_when_guards_drop() {
        let lifecycle = Lifecycle::new();
        let a = lifecycle.track();
        let b = lifecycle.track();
        assert_eq!(lifecycle.in_flight(), 2);
        assert!(
            !lifecycle
                .wait_in_flight_at_most(1, Duration::from_millis(20))
                .await
        );
        let waiter = {
            let lifecycle = Arc::clone(&lifecycle);
            tokio::spawn(async move {
                lifecycle
                    .wait_in_flight_at_most(0, Duration::from_secs(10))
                    .await
            })
        };
        drop(a);
        drop(b);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn stop_is_observed_by_earlier_and_later_waiters() {
        let lifecycle = Lifecycle::new();
        assert!(!lifecycle.is_stopping());
        let early = {
            let lifecycle = Arc::clone(&lifecycle);
            tokio::spawn(async move { lifecycle.stopped().await })
        };
        lifecycle.request_stop("test");
        lifecycle.request_stop("again");
        early.await.unwrap();
        lifecycle.stopped().await;
        assert!(lifecycle.is_stopping());
    }
}
