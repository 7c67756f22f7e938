//! Alibaba Cloud Function Compute 3.0 custom-runtime adapter (the contract is written down in
//! docs/function-compute.md §1).
//!
//! Everything FC-specific lives here and nowhere else: the accept loop with FC's keep-alive
//! needs ([`listener`]), control-path dispatch, log markers and `x-fc-status` ([`dispatch`]),
//! the per-invocation [`FcContext`] ([`context`]), the stop/drain lifecycle ([`lifecycle`]) and
//! request ids on hyper's own parse-error answers ([`parser_errors`]).
//!
//! It turns FC's requests into plain `http` requests for the services it is given
//! ([`FcRoutes`]: axum routers, plus a renderer for the few answers it gives itself), the
//! way `lambda-http` does for AWS Lambda. It knows nothing of images, the model or the
//! function's error body; the services know nothing of FC beyond the [`FcContext`] in their
//! request extensions.

pub mod context;
pub mod dispatch;
pub mod lifecycle;
pub mod listener;
pub mod parser_errors;

pub use context::{CredentialSource, FcContext};
pub use dispatch::{
    AdapterFailure, FcRoutes, PermanentFailure, Target, X_FC_STATUS, X_REQUEST_ID, adapter,
};
pub use lifecycle::{DEFAULT_DRAIN_BUDGET, Lifecycle, stop_on_signals};
pub use listener::serve;
