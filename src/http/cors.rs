//! Cross-origin requests (CORS) for browser apps on other sites calling `POST /classify`.
//!
//! Off unless origins are configured (`RESNET18_FC_CORS_ORIGINS`, see
//! [`crate::config::cors_origins`]): then no response carries CORS headers and browsers keep
//! cross-origin scripts from reading answers, which is what same-origin use (the web page) and
//! non-browser clients need. With origins configured:
//!
//! - a request whose `Origin` is listed gets `Access-Control-Allow-Origin: <that origin>` and
//!   `Vary: Origin` (or `*` when the list is `*`);
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a listed
//!   origin is answered here with 204, the allowed methods and the `Content-Type` header;
//! - any other origin gets no CORS header at all (a preflight from it reaches the routes and gets
//!   their 405), so the browser refuses the call.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Methods a cross-origin caller may use (those of the HTTP routes).
const ALLOWED_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a cross-origin caller may set beyond the CORS-safelisted ones.
const ALLOWED_HEADERS: &str = "Content-Type";
/// How long (seconds) a browser may reuse a preflight answer.
const MAX_AGE_SECONDS: &str = "600";

/// Which origins may call the HTTP routes from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// `*`: every origin (answered with `Access-Control-Allow-Origin: *`).
    Any,
    /// Exactly these origins (`scheme://host[:port]`, compared byte for byte).
    Origins(Vec<String>),
}

impl CorsPolicy {
    /// The policy for a list of origins; `None` (CORS off) when the list is empty. A `*` entry
    /// allows every origin.
    pub fn from_origins(origins: Vec<String>) -> Option<Self> {
        if origins.is_empty() {
            None
        } else if origins.iter().any(|o| o == "*") {
            Some(Self::Any)
        } else {
            Some(Self::Origins(origins))
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    pub fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::Origins(list) => {
                let origin = origin.to_str().ok()?;
                list.iter()
                    .any(|allowed| allowed == origin)
                    .then(|| HeaderValue::from_str(origin).ok())
                    .flatten()
            }
        }
    }
}

/// Middleware applying `policy` to every request of the HTTP routes.
pub async fn apply(
    State(policy): State<Arc<CorsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| policy.allow(origin));
    let Some(allow_origin) = allowed else {
        return next.run(request).await;
    };
    if is_preflight(request.method(), request.headers()) {
        return preflight(allow_origin);
    }
    let mut response = next.run(request).await;
    add_origin_headers(response.headers_mut(), allow_origin);
    response
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The 204 answer to an allowed preflight.
fn preflight(allow_origin: HeaderValue) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    add_origin_headers(headers, allow_origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECONDS),
    );
    response
}

fn add_origin_headers(headers: &mut HeaderMap, allow_origin: HeaderValue) {
    if allow_origin != "*" {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_list_turns_cors_off_and_a_star_allows_everyone() {
        assert_eq!(CorsPolicy::from_origins(Vec::new()), None);
        assert_eq!(
            CorsPolicy::from_origins(origins(&["https://a.example", "*"])),
            Some(CorsPolicy::Any)
        );
    }

    #[test]
    fn only_listed_origins_are_echoed() {
        let policy = CorsPolicy::from_origins(origins(&["https://a.example"])).expect("policy");
        let listed = HeaderValue::from_static("https://a.example");
        assert_eq!(policy.allow(&listed), Some(listed.clone()));
        for other in [
            "https://b.example",
            "https://a.example:8443",
            "http://a.example",
        ] {
            assert_eq!(
                policy.allow(&HeaderValue::from_static(other)),
                None,
                "{other}"
            );
        }
        assert_eq!(
            CorsPolicy::Any.allow(&HeaderValue::from_static("https://b.example")),
            Some(HeaderValue::from_static("*"))
        );
    }
}
