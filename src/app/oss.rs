//! Plugs OSS into the HTTP server's seams: `{"url": …}` images ([`ImageFetcher`]) and
//! `{"events": […]}` invocations ([`EventHandler`]).
//!
//! Wiring, so it lives in the composition root: the only place that knows the FC context, OSS
//! and the engine together. It turns the [`FcContext`] into an OSS [`Access`] (credentials per
//! request, region), [`OssError`]s and event outcomes into [`ApiError`]s, and engine failures
//! into OSS's retry decision ([`ClassifyFailure`], from [`EngineError::is_caller_fault`]).

use bytes::Bytes;
use http::StatusCode;

use crate::engine::{Classification, ClassifyOptions, Engine, EngineError, Image};
use crate::fc::FcContext;
use crate::http::{ApiError, BoxFuture, EventHandler, ImageFetcher};
use crate::oss::event::{
    ClassifyFailure, EventError, EventReport, ObjectClassifier, RecordStatus, process_event,
};
use crate::oss::{Access, OssConfig, OssError, OssService};

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
    Access {
        credentials: context.credentials.clone(),
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

/// The engine's verdict as OSS records it: a fault of the object itself is permanent (an
/// error result object is written), anything else is retried.
fn classify_failure(e: EngineError) -> ClassifyFailure {
    if e.is_caller_fault() {
        ClassifyFailure::Rejected {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    } else {
        ClassifyFailure::Unavailable(format!("{}: {e}", e.code()))
    }
}

/// The engine as OSS asks for it: each object's top [`RESULT_TOP_K`] classes with both names,
/// and the engine's timing (with `queued`), for its result object.
struct ResultObjects<'a>(&'a Engine);

impl ObjectClassifier for ResultObjects<'_> {
    type Output = Classification;

    async fn classify(&self, image: Bytes) -> Result<Classification, ClassifyFailure> {
        let mut c = self
            .0
            .classify(Image::Encoded(image), ClassifyOptions::top_k(RESULT_TOP_K))
            .await
            .map_err(classify_failure)?;
        c.predictions = c
            .predictions
            .into_iter()
            .map(|p| p.with_both_names())
            .collect();
        Ok(c)
    }
}

impl EventHandler for OssPlugin {
    fn handle<'a>(
        &'a self,
        event: Bytes,
        context: &'a FcContext,
        engine: &'a Engine,
    ) -> BoxFuture<'a, Result<serde_json::Value, ApiError>> {
        Box::pin(async move {
            let objects = ResultObjects(engine);
            let report = process_event(&event, &access(context), &self.service, objects)
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
