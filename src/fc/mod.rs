//! Alibaba Cloud Function Compute 3.0 custom-runtime adapter (platform.md §1, §5.4).
//!
//! Everything FC-specific lives here and nowhere else: the accept loop with FC's keep-alive
//! needs ([`listener`]), control-path dispatch, log markers and `x-fc-status` ([`dispatch`]),
//! the per-invocation [`FcContext`] ([`context`]), the stop/drain lifecycle ([`lifecycle`]) and
//! request ids on hyper's own parse-error answers ([`parser_errors`]).
//! The services it dispatches to are plain axum routers that know nothing about FC beyond
//! reading the [`FcContext`] from their request extensions. This module knows nothing about
//! the model.

pub mod context;
pub mod dispatch;
pub mod lifecycle;
pub mod listener;
pub mod parser_errors;

pub use context::{CredentialSource, Credentials, FcContext, RequestExt, Secret};
pub use dispatch::{FcRoutes, PermanentFailure, Target, X_FC_STATUS, X_REQUEST_ID, adapter};
pub use lifecycle::{DEFAULT_DRAIN_BUDGET, Lifecycle, stop_on_signals};
pub use listener::serve;
