//! The composition root: the one place that knows every part. It builds the
//! [`Engine`](crate::engine::Engine), the HTTP services over it ([`crate::http::Server`]),
//! plugs OSS into their seams ([`oss`]) and wraps them in the FC adapter ([`crate::fc`]);
//! `resnet18-fc serve` (src/cli_serve.rs) calls [`run`]. Process-wide set-up (malloc) is
//! [`crate::malloc`].
//!
//! ```text
//! cli_serve ─▶ app ─┬─▶ fc      (platform: dispatch, markers, lifecycle, listener)
//!                   ├─▶ http ──▶ engine ──▶ classifier ──▶ preprocess, resnet
//!                   └─▶ oss     (URLs, signing, client, events; classifies through a callback)
//! ```

pub mod oss;

use std::io;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::fc::{self, Lifecycle};
use crate::http::Server;

pub use self::oss::OssPlugin;

/// The single router FC talks to: `server`'s routes wrapped in the FC adapter.
pub fn router(server: &Server, lifecycle: Arc<Lifecycle>) -> Router {
    fc::adapter(server.routes(), lifecycle)
}

/// Serves `server` on `listener`: starts loading the model, stops on SIGTERM/SIGINT or
/// `/pre-stop`, and returns after in-flight requests have finished.
pub async fn run(
    listener: TcpListener,
    server: Server,
    lifecycle: Arc<Lifecycle>,
) -> io::Result<()> {
    server.engine().start_loading();
    tokio::spawn(fc::stop_on_signals(Arc::clone(&lifecycle)));
    let app = router(&server, Arc::clone(&lifecycle));
    fc::serve(listener, app, lifecycle).await
}
