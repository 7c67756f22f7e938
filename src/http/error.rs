//! The one error mapping of the service: [`ApiError`] (status, stable code, message), built from
//! request-parsing failures, from [`EngineError`]s (`From`) and from the FC adapter's own
//! failures ([`adapter_failure`]), and rendered in one place ([`IntoResponse`]) as
//!
//! ```text
//! {"error": {"code": "invalid_image", "message": "…", "remedy": "…"?}, "request_id": "…"}
//! ```
//!
//! with `Retry-After` when the error says when to retry.

use axum::response::{IntoResponse, Response};
use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::classifier::ClassifyError;
use crate::engine::{EngineError, InlineImageError};
use crate::fc::AdapterFailure;
use crate::preprocess::PreprocessError;

/// A failed request: HTTP status, stable machine-readable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status to answer with.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_image`.
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u32>,
    /// What to do about it, when the message alone does not say (sent as `error.remedy`).
    pub remedy: Option<String>,
    /// The request's id, for the body's `request_id` ([`ApiError::in_request`]).
    pub request_id: Option<String>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            remedy: None,
            request_id: None,
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 `internal`; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the request was logged",
        )
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// This error as the answer to request `request_id`.
    pub fn in_request(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_string());
        self
    }

    /// 413: the request body is larger than the configured limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 400: nothing was sent.
    pub fn empty_body() -> Self {
        Self::bad_request(
            "empty_body",
            "the request body is empty; send an image (raw, JSON base64 or multipart field `image`)",
        )
    }

    /// 415: a Content-Type the API does not read.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {content_type:?} is not supported; send application/json, \
                 image/*, application/octet-stream or multipart/form-data"
            ),
        )
    }

    /// The error body for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                remedy: self.remedy.clone(),
            },
            request_id: self.request_id.clone().unwrap_or_default(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        } else {
            tracing::info!(code = self.code, message = %self.message, "request refused");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        let code = e.code();
        match e {
            EngineError::Overloaded(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).with_retry_after(1)
            }
            EngineError::NotReady(load) => {
                let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, load.message)
                    .with_retry_after(5);
                error.remedy = load.remedy;
                error
            }
            EngineError::Input(e) => Self::new(inline_status(&e), code, message),
            EngineError::Classify(e) => Self::new(classify_status(&e), code, message),
            EngineError::Failed(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, message),
        }
    }
}

fn inline_status(e: &InlineImageError) -> StatusCode {
    match e {
        InlineImageError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        InlineImageError::Empty | InlineImageError::InvalidBase64(_) => StatusCode::BAD_REQUEST,
    }
}

fn classify_status(e: &ClassifyError) -> StatusCode {
    match e {
        ClassifyError::Image(PreprocessError::UnsupportedFormat) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        ClassifyError::Image(
            PreprocessError::TooManyPixels { .. } | PreprocessError::OverBudget(_),
        ) => StatusCode::PAYLOAD_TOO_LARGE,
        // Nobody reads the answer (client gone, or FC answered its timeout already):
        // the status is for the log.
        ClassifyError::Image(PreprocessError::Interrupted(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ClassifyError::Image(_) | ClassifyError::InvalidTopK { .. } => StatusCode::BAD_REQUEST,
        ClassifyError::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer to a request the FC adapter could not hand to a service (see
/// [`crate::fc::FcRoutes::failure`]), in the same error body as every other error.
pub fn adapter_failure(failure: AdapterFailure, request_id: &str) -> Response {
    let error = match failure {
        AdapterFailure::DuplicateControlPath { .. } => {
            ApiError::bad_request("duplicate_control_path", failure.to_string())
        }
        AdapterFailure::Panicked => ApiError::internal(failure),
    };
    error.in_request(request_id).into_response()
}

/// `{"error": {"code", "message"}, "request_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What failed.
    pub error: ErrorDetail,
    /// The FC request id (or a local one).
    pub request_id: String,
}

/// The `error` member of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// What to do about it, for errors whose remedy is long (`model_not_ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LoadError, PoolError, decode_inline_image};

    fn classify_error(e: impl Into<ClassifyError>) -> EngineError {
        EngineError::Classify(e.into())
    }

    #[test]
    fn classifier_errors_map_to_documented_statuses() {
        let status = |e: EngineError| ApiError::from(e).status;
        assert_eq!(
            status(classify_error(PreprocessError::Empty)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(classify_error(PreprocessError::UnsupportedFormat)),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status(classify_error(PreprocessError::TooManyPixels {
                width: 10,
                height: 10,
                pixels: 100,
                limit: 50
            })),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(classify_error(PreprocessError::Corrupt("x".into()))),
            StatusCode::BAD_REQUEST
        );
        let over = ApiError::from(classify_error(PreprocessError::OverBudget(
            "the JPEG has 101 scans".into(),
        )));
        assert_eq!(
            (over.status, over.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large")
        );
        let late = ApiError::from(classify_error(PreprocessError::Interrupted(
            crate::preprocess::Interrupted::DeadlineExceeded,
        )));
        assert_eq!(
            (late.status, late.code),
            (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded")
        );
    }

    #[test]
    fn inline_image_errors_are_400_or_415() {
        let error =
            |t: &str| ApiError::from(EngineError::from(decode_inline_image(t).unwrap_err()));
        let text = error("data:text/plain;base64,aGVsbG8=");
        assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(text.code, "unsupported_media_type");
        assert!(text.message.contains("text/plain"), "{}", text.message);
        let bad = error("not base64!");
        assert_eq!(
            (bad.status, bad.code),
            (StatusCode::BAD_REQUEST, "invalid_base64")
        );
    }

    #[test]
    fn engine_state_errors_are_503_with_retry_after() {
        let busy = ApiError::from(EngineError::Overloaded(PoolError::Full {
            workers: 2,
            queue: 0,
        }));
        assert_eq!(
            (busy.status, busy.code, busy.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1))
        );
        let load = LoadError::new("no weights").with_remedy("fetch them");
        let not_ready = ApiError::from(EngineError::NotReady(load));
        assert_eq!(
            (not_ready.status, not_ready.code, not_ready.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "model_not_ready", Some(5))
        );
        assert_eq!(not_ready.message, "no weights");
        assert_eq!(not_ready.remedy.as_deref(), Some("fetch them"));
    }

    /// OSS decides retries with `is_caller_fault`, HTTP clients with the status: they agree.
    #[test]
    fn caller_faults_are_exactly_the_4xx_answers() {
        let errors = [
            classify_error(PreprocessError::Empty),
            classify_error(PreprocessError::UnsupportedFormat),
            classify_error(PreprocessError::Corrupt("x".into())),
            classify_error(PreprocessError::OverBudget("x".into())),
            classify_error(PreprocessError::Interrupted(
                crate::preprocess::Interrupted::Cancelled,
            )),
            classify_error(ClassifyError::InvalidTopK { k: 0, max: 1000 }),
            EngineError::from(InlineImageError::Empty),
            EngineError::from(InlineImageError::UnsupportedType("text/plain".into())),
            EngineError::Overloaded(PoolError::Full {
                workers: 1,
                queue: 0,
            }),
            EngineError::NotReady(LoadError::new("x")),
            EngineError::Failed("x".into()),
        ];
        for e in errors {
            let fault = e.is_caller_fault();
            let status = ApiError::from(e).status;
            assert_eq!(fault, status.is_client_error(), "{status}");
        }
    }

    #[test]
    fn error_body_has_the_contract_shape() {
        let e = ApiError::bad_request("invalid_image", "bad").in_request("req-1");
        let json = serde_json::to_value(e.body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "invalid_image", "message": "bad"}, "request_id": "req-1"})
        );
    }
}
