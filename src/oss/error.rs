//! Why an OSS operation failed, and what HTTP status that means for our caller.

/// Errors of URL resolution and OSS requests. Messages never contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OssError {
    /// The URL is not an OSS object URL we may contact (refused before any connection).
    #[error("refused URL: {0}")]
    RefusedUrl(String),
    /// The service is misconfigured (bad `OSS_ENDPOINT`, no region, …).
    #[error("OSS configuration error: {0}")]
    Config(String),
    /// OSS answered 403 (bad signature, expired token, missing permission).
    #[error("OSS denied access to {object}: {code}: {message}")]
    Forbidden {
        /// `bucket/key` that was requested.
        object: String,
        /// OSS error code, e.g. `AccessDenied` or `SignatureDoesNotMatch`.
        code: String,
        /// OSS error message.
        message: String,
    },
    /// OSS answered 404 (`NoSuchKey`, `NoSuchBucket`).
    #[error("OSS object {object} not found ({code})")]
    NotFound {
        /// `bucket/key` that was requested.
        object: String,
        /// OSS error code.
        code: String,
    },
    /// The object is larger than the configured cap; the transfer was aborted.
    #[error("OSS object {object} is larger than the {limit}-byte limit")]
    TooLarge {
        /// `bucket/key` that was requested.
        object: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// OSS failed (5xx after retries, an unexpected status, a redirect, a cut-off body or a
    /// connection error).
    #[error("OSS request for {object} failed: {reason}")]
    Upstream {
        /// `bucket/key` that was requested.
        object: String,
        /// What went wrong.
        reason: String,
    },
    /// OSS did not answer in time (connect or read timeout).
    #[error("OSS request for {object} timed out")]
    Timeout {
        /// `bucket/key` that was requested.
        object: String,
    },
}

impl OssError {
    /// The HTTP status our own caller should get: 400 refused URL, 403, 404, 413, 502
    /// upstream, 504 timeout, 500 configuration.
    pub fn status(&self) -> u16 {
        match self {
            Self::RefusedUrl(_) => 400,
            Self::Config(_) => 500,
            Self::Forbidden { .. } => 403,
            Self::NotFound { .. } => 404,
            Self::TooLarge { .. } => 413,
            Self::Upstream { .. } => 502,
            Self::Timeout { .. } => 504,
        }
    }

    /// Stable machine-readable code for JSON error bodies and result objects.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RefusedUrl(_) => "invalid_url",
            Self::Config(_) => "oss_config",
            Self::Forbidden { .. } => "oss_forbidden",
            Self::NotFound { .. } => "oss_not_found",
            Self::TooLarge { .. } => "object_too_large",
            Self::Upstream { .. } => "oss_upstream_error",
            Self::Timeout { .. } => "oss_timeout",
        }
    }

    /// Whether trying again later may succeed (5xx, timeouts, cut-off transfers, and
    /// permission or configuration problems an operator can fix). Refused URLs, missing objects
    /// and oversized objects stay as they are.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::RefusedUrl(_) | Self::NotFound { .. } | Self::TooLarge { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let o = || "b/k".to_string();
        let cases = [
            (OssError::RefusedUrl("x".into()), 400),
            (
                OssError::Forbidden {
                    object: o(),
                    code: "AccessDenied".into(),
                    message: String::new(),
                },
                403,
            ),
            (
                OssError::NotFound {
                    object: o(),
                    code: "NoSuchKey".into(),
                },
                404,
            ),
            (
                OssError::TooLarge {
                    object: o(),
                    limit: 1,
                },
                413,
            ),
            (
                OssError::Upstream {
                    object: o(),
                    reason: "500".into(),
                },
                502,
            ),
            (OssError::Timeout { object: o() }, 504),
            (OssError::Config("x".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err}");
        }
    }

    #[test]
    fn only_fixable_failures_are_transient() {
        assert!(
            OssError::Timeout {
                object: "b/k".into()
            }
            .is_transient()
        );
        assert!(!OssError::RefusedUrl("x".into()).is_transient());
        assert!(
            !OssError::NotFound {
                object: "b/k".into(),
                code: "NoSuchKey".into()
            }
            .is_transient()
        );
    }
}
