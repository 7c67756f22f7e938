//! [`FcContext`]: what Function Compute tells us about one invocation, read from the `x-fc-*`
//! request headers with the instance environment (`FC_*`, `ALIBABA_CLOUD_*`) as fallback
//! (docs/function-compute.md §1, "Request headers" and "Environment").
//!
//! [`Credentials`] print only a prefix of the key id in `Debug`, so logging a context never
//! leaks them. FC 3.0 may send the credential headers empty (the real dump is the fixture
//! `tests/data/fc3_http_headers.json`): then the environment variables are used; the two sources
//! are never mixed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::credentials::Credentials;

/// Where [`Credentials`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `x-fc-access-key-id` / `x-fc-access-key-secret` / `x-fc-security-token`.
    Headers,
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `…_SECRET` / `ALIBABA_CLOUD_SECURITY_TOKEN`.
    Environment,
}

/// Everything FC says about the current invocation. Built once per request by the FC adapter
/// and stored in the request extensions; handlers read it from there, never from headers.
#[derive(Debug, Clone)]
pub struct FcContext {
    /// `x-fc-request-id`, or a generated `local-…` id when absent (local runs).
    pub request_id: String,
    /// `x-fc-control-path` (`/invoke`, `/initialize`, `/http-invoke`), if sent.
    pub control_path: Option<String>,
    /// `x-fc-function-name` / `FC_FUNCTION_NAME`.
    pub function_name: Option<String>,
    /// `x-fc-region` / `FC_REGION`.
    pub region: Option<String>,
    /// `x-fc-account-id` / `FC_ACCOUNT_ID`.
    pub account_id: Option<String>,
    /// `x-fc-qualifier` (`LATEST` or an alias).
    pub qualifier: Option<String>,
    /// `x-fc-version-id` / `FC_FUNCTION_VERSION` / `FC_VER_ID`.
    pub version_id: Option<String>,
    /// `FC_INSTANCE_ID`.
    pub instance_id: Option<String>,
    /// `x-fc-function-memory` / `FC_FUNCTION_MEMORY_SIZE`, in MB.
    pub memory_mb: Option<u32>,
    /// `x-fc-function-timeout` / `FC_TIMEOUT`, in seconds.
    pub timeout_secs: Option<u32>,
    /// `x-fc-retry-count` (0 on the first attempt of an async invocation).
    pub retry_count: Option<u32>,
    /// Temporary credentials, headers first, environment second.
    pub credentials: Option<Credentials>,
    /// Where [`Self::credentials`] were found.
    pub credential_source: Option<CredentialSource>,
    /// When the request reached the adapter.
    pub received_at: Instant,
}

impl FcContext {
    /// Builds the context from request headers, with the process environment as fallback.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_parts(headers, &crate::config::process_env)
    }

    /// Builds the context from request headers and an environment lookup.
    pub fn from_parts(headers: &HeaderMap, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let header = |name: &str| header_text(headers, name);
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let either = |h: &str, v: &str| header(h).or_else(|| var(v));
        let credentials = credentials_from_headers(&header)
            .map(|c| (c, CredentialSource::Headers))
            .or_else(|| credentials_from_env(&var).map(|c| (c, CredentialSource::Environment)));
        Self {
            request_id: header("x-fc-request-id").unwrap_or_else(local_request_id),
            control_path: header("x-fc-control-path"),
            function_name: either("x-fc-function-name", "FC_FUNCTION_NAME"),
            region: either("x-fc-region", "FC_REGION"),
            account_id: either("x-fc-account-id", "FC_ACCOUNT_ID"),
            qualifier: header("x-fc-qualifier"),
            version_id: either("x-fc-version-id", "FC_FUNCTION_VERSION")
                .or_else(|| var("FC_VER_ID")),
            instance_id: var("FC_INSTANCE_ID"),
            memory_mb: number(either("x-fc-function-memory", "FC_FUNCTION_MEMORY_SIZE")),
            timeout_secs: number(either("x-fc-function-timeout", "FC_TIMEOUT")),
            retry_count: number(header("x-fc-retry-count")),
            credentials: credentials.as_ref().map(|(c, _)| c.clone()),
            credential_source: credentials.map(|(_, source)| source),
            received_at: Instant::now(),
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn number(text: Option<String>) -> Option<u32> {
    text.and_then(|t| t.parse().ok())
}

fn credentials_from_headers(header: &dyn Fn(&str) -> Option<String>) -> Option<Credentials> {
    Some(Credentials::new(
        &header("x-fc-access-key-id")?,
        &header("x-fc-access-key-secret")?,
        header("x-fc-security-token").as_deref(),
    ))
}

fn credentials_from_env(var: &dyn Fn(&str) -> Option<String>) -> Option<Credentials> {
    Some(Credentials::new(
        &var("ALIBABA_CLOUD_ACCESS_KEY_ID")?,
        &var("ALIBABA_CLOUD_ACCESS_KEY_SECRET")?,
        var("ALIBABA_CLOUD_SECURITY_TOKEN").as_deref(),
    ))
}

/// `local-<unix ms, hex>-<counter>`: unique within the process, recognisably not FC's.
pub(crate) fn local_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("local-{ms:x}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn context_debug_never_shows_the_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-fc-access-key-id",
            HeaderValue::from_static("STS.id-value"),
        );
        headers.insert(
            "x-fc-access-key-secret",
            HeaderValue::from_static("secret-value"),
        );
        headers.insert(
            "x-fc-security-token",
            HeaderValue::from_static("token-value"),
        );
        let ctx = FcContext::from_parts(&headers, &no_env);
        let text = format!("{ctx:?}");
        for value in ["STS.id-value", "secret-value", "token-value"] {
            assert!(!text.contains(value), "{text}");
        }
        let creds = ctx.credentials.unwrap();
        assert_eq!(creds.access_key_secret(), "secret-value");
    }

    #[test]
    fn missing_request_id_gets_distinct_local_ids() {
        let a = FcContext::from_parts(&HeaderMap::new(), &no_env);
        let b = FcContext::from_parts(&HeaderMap::new(), &no_env);
        assert!(a.request_id.starts_with("local-"), "{}", a.request_id);
        assert_ne!(a.request_id, b.request_id);
        assert!(a.credentials.is_none());
    }

    #[test]
    fn header_credentials_win_and_are_not_mixed_with_env() {
        let mut headers = HeaderMap::new();
        headers.insert("x-fc-access-key-id", HeaderValue::from_static("STS.h"));
        headers.insert("x-fc-access-key-secret", HeaderValue::from_static("hs"));
        let env = |name: &str| match name {
            "ALIBABA_CLOUD_ACCESS_KEY_ID" => Some("env-id".to_string()),
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET" => Some("env-secret".to_string()),
            "ALIBABA_CLOUD_SECURITY_TOKEN" => Some("env-token".to_string()),
            _ => None,
        };
        let ctx = FcContext::from_parts(&headers, &env);
        assert_eq!(ctx.credential_source, Some(CredentialSource::Headers));
        let creds = ctx.credentials.unwrap();
        assert_eq!(creds.access_key_id(), "STS.h");
        assert_eq!(creds.security_token(), None);
    }

    #[test]
    fn unparsable_numbers_are_absent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-fc-function-memory", HeaderValue::from_static("lots"));
        headers.insert("x-fc-retry-count", HeaderValue::from_static("2"));
        let ctx = FcContext::from_parts(&headers, &no_env);
        assert_eq!(ctx.memory_mb, None);
        assert_eq!(ctx.retry_count, Some(2));
    }
}
