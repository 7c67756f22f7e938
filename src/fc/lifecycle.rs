//! Instance lifecycle: the stop signal (SIGTERM, SIGINT or `GET /pre-stop`), the count of
//! requests in flight, and the **drain budget**: how long a stop may wait for them.
//!
//! A stop fixes a deadline, `stop time + drain budget`. Until then, in-flight requests may
//! finish; `/pre-stop` answers a little before it ([`PRE_STOP_ANSWER_MARGIN`]) with
//! `"drained": false` if work is still running; at the deadline the accept loop closes every
//! connection still open (a client stalled mid-body included) and returns, so the process exits.
//! FC gives the PreStop hook its configured `timeout` (at most 90 s); the budget must stay below
//! it, and the default ([`DEFAULT_DRAIN_BUDGET`]) leaves a third of a 30 s timeout as margin.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

/// Default drain budget: well under the 30 s PreStop timeout the deployment configures.
pub const DEFAULT_DRAIN_BUDGET: Duration = Duration::from_secs(20);

/// How long before the drain deadline `/pre-stop` answers, so its answer is written before the
/// connections still open are closed (at most a quarter of the budget).
pub const PRE_STOP_ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// Shared stop flag, in-flight counter and drain budget of one server.
#[derive(Debug)]
pub struct Lifecycle {
    stop: watch::Sender<bool>,
    in_flight: AtomicUsize,
    changed: Notify,
    drain_budget: Duration,
    deadline: OnceLock<Instant>,
}

impl Lifecycle {
    /// A running (not stopping) lifecycle with nothing in flight and the default drain budget.
    pub fn new() -> Arc<Self> {
        Self::with_drain_budget(DEFAULT_DRAIN_BUDGET)
    }

    /// Like [`Lifecycle::new`] with another drain budget.
    pub fn with_drain_budget(drain_budget: Duration) -> Arc<Self> {
        Arc::new(Self {
            stop: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
            drain_budget,
            deadline: OnceLock::new(),
        })
    }

    /// Longest time a stop waits for in-flight requests before closing their connections.
    pub fn drain_budget(&self) -> Duration {
        self.drain_budget
    }

    /// Asks the server to stop accepting connections and drain until the deadline (fixed by
    /// the first call). Idempotent.
    pub fn request_stop(&self, reason: &str) {
        self.deadline
            .get_or_init(|| Instant::now() + self.drain_budget);
        if !self.stop.send_replace(true) {
            tracing::info!(
                reason,
                drain_budget_s = self.drain_budget.as_secs_f64(),
                "stopping: no new connections, draining in-flight requests"
            );
        }
    }

    /// When the drain ends and open connections are closed; `None` before a stop.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// When `/pre-stop` answers at the latest: [`PRE_STOP_ANSWER_MARGIN`] (at most a quarter of
    /// the budget) before the drain deadline; `None` before a stop.
    pub fn pre_stop_answer_by(&self) -> Option<Instant> {
        let margin = PRE_STOP_ANSWER_MARGIN.min(self.drain_budget / 4);
        self.drain_deadline().map(|deadline| deadline - margin)
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

    #[test]
    fn the_first_stop_fixes_the_deadline_and_pre_stop_answers_before_it() {
        let lifecycle = Lifecycle::with_drain_budget(Duration::from_secs(8));
        assert_eq!(lifecycle.drain_deadline(), None);
        assert_eq!(lifecycle.pre_stop_answer_by(), None);
        let before = Instant::now();
        lifecycle.request_stop("first");
        let after = Instant::now();
        let deadline = lifecycle.drain_deadline().expect("deadline after a stop");
        assert!(deadline >= before + Duration::from_secs(8));
        assert!(deadline <= after + Duration::from_secs(8));
        lifecycle.request_stop("second");
        assert_eq!(lifecycle.drain_deadline(), Some(deadline));
        assert_eq!(
            lifecycle.pre_stop_answer_by(),
            Some(deadline - PRE_STOP_ANSWER_MARGIN)
        );
        // A budget shorter than four margins answers a quarter of the budget early.
        let short = Lifecycle::with_drain_budget(Duration::from_secs(2));
        short.request_stop("short");
        let (by, end) = (short.pre_stop_answer_by(), short.drain_deadline());
        assert_eq!(
            by.zip(end).map(|(b, e)| e - b),
            Some(Duration::from_millis(500))
        );
    }
}
