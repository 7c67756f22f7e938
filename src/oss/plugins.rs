//! Plugs OSS into the HTTP server's seams: `{"url": …}` images ([`ImageFetcher`]) and
//! `{"events": […]}` invocations ([`EventHandler`]).
//!
//! The only place that knows both [`FcContext`] and OSS: it turns the FC context into
//! [`Access`] (credentials per request, region) and [`OssError`]/event outcomes into
//! [`ApiError`]s. Classification goes through the server's [`ClassifyHandle`] (shared model,
//! bounded pool), so this module still never touches the model.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::event::{ClassifyFailure, EventError, EventReport, RecordStatus, process_event};
use super::{Access, Credentials, OssConfig, OssError, OssService};
use crate::api::{ApiError, PredictionJson, millis};
use crate::fc::FcContext;
use crate::server::{BoxFuture, ClassifyHandle, EventHandler, ImageFetcher};

/// Classes recorded per image in result objects.
pub const RESULT_TOP_K: usize = 5;

/// The OSS plug-in of the server.
#[derive(Debug, Clone)]
pub struct OssPlugin {
    service: OssService,
}

impl OssPlugin {
    /// A plug-in over `service`.
    pub fn new(service: OssService) -> Self {
        Self { service }
    }

    /// Reads [`OssConfig`] from the environment and builds the service.
    pub fn from_env() -> Result<Self, OssError> {
        Ok(Self::new(OssService::new(OssConfig::from_env()?)?))
    }
}

/// The FC context's credentials and region, as OSS wants them.
pub fn access(context: &FcContext) -> Access {
    let credentials = context.credentials.as_ref().map(|c| {
        Credentials::new(
            c.access_key_id.expose(),
            c.access_key_secret.expose(),
            c.security_token.as_ref().map(|t| t.expose()),
        )
    });
    Access {
        credentials,
        region: context.region.clone(),
    }
}

fn api_error(e: &OssError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError::new(status, e.code(), e.to_string())
}

impl ImageFetcher for OssPlugin {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        context: &'a FcContext,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>> {
        Box::pin(async move {
            self.service
                .fetch_image(url, &access(context))
                .await
                .map_err(|e| api_error(&e))
        })
    }
}

/// What a result object says about the model; each prediction carries its English `label` and
/// its Chinese `label_zh`.
#[derive(Debug, Serialize)]
struct ResultClassification {
    model: &'static str,
    predictions: Vec<PredictionJson>,
    timing_ms: ResultTiming,
}

#[derive(Debug, Serialize)]
struct ResultTiming {
    decode: f64,
    inference: f64,
    queued: f64,
}

fn classify_failure(e: ApiError) -> ClassifyFailure {
    if e.status.is_client_error() {
        ClassifyFailure::Rejected {
            code: e.code.to_string(),
            message: e.message,
        }
    } else {
        ClassifyFailure::Unavailable(e.to_string())
    }
}

impl EventHandler for OssPlugin {
    fn handle<'a>(
        &'a self,
        event: Bytes,
        context: &'a FcContext,
        classify: &'a ClassifyHandle,
    ) -> BoxFuture<'a, Result<serde_json::Value, ApiError>> {
        Box::pin(async move {
            let one = |bytes: Bytes| async move {
                let c = classify
                    .classify(bytes, RESULT_TOP_K)
                    .await
                    .map_err(classify_failure)?;
                Ok(ResultClassification {
                    model: "resnet18",
                    predictions: c
                        .predictions
                        .into_iter()
                        .map(PredictionJson::with_both_names)
                        .collect(),
                    timing_ms: ResultTiming {
                        decode: millis(c.decode),
                        inference: millis(c.inference),
                        queued: millis(c.queued),
                    },
                })
            };
            let report = process_event(&event, &access(context), &self.service, one)
                .await
                .map_err(|e| event_error(&e))?;
            outcome(report, &context.request_id)
        })
    }
}

fn event_error(e: &EventError) -> ApiError {
    ApiError::bad_request("invalid_event", e.to_string())
}

/// 200 with the per-record list, or — when a record failed transiently — an error that makes
/// the adapter answer `x-fc-status: 404`, so FC retries the event.
fn outcome(report: EventReport, request_id: &str) -> Result<serde_json::Value, ApiError> {
    if report.succeeded() {
        return Ok(serde_json::json!({ "records": report.records, "request_id": request_id }));
    }
    let failed: Vec<String> = report
        .records
        .iter()
        .filter(|r| r.status == RecordStatus::Failed)
        .map(|r| {
            format!(
                "{}/{}: {}",
                r.bucket,
                r.key,
                r.reason.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    let timed_out = report
        .records
        .iter()
        .any(|r| r.code.as_deref() == Some("oss_timeout"));
    let status = if timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    Err(ApiError::new(
        status,
        "event_failed",
        format!(
            "{} record(s) failed and will be retried: {}",
            failed.len(),
            failed.join("; ")
        ),
    ))
}
