//! Request handlers. They read the [`FcContext`] from the request extensions (put there by the
//! FC adapter), parse requests ([`super::request`]), call the [`Engine`](crate::engine::Engine)
//! and turn its answers into responses and its errors into [`ApiError`]s; they never see
//! `x-fc-*` headers, tensors or pixels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::ApiError;
use super::request::{self, BodyKind, ImageRequest, ImageSource, InvokeEvent};
use super::{AppState, oversize};
use crate::engine::{Classification, ClassifyOptions, Image, Readiness};
use crate::fc::{FcContext, PermanentFailure};
use crate::labels::Lang;
use crate::millis;
use crate::web;

/// The 200 answer of `/classify` and of a classify `/invoke`: the engine's [`Classification`]
/// (with `fetch` and `total` times instead of `queued`) and the request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    /// Model, predictions, timing.
    #[serde(flatten)]
    pub classification: Classification,
    /// The FC request id (or a local one).
    pub request_id: String,
}

fn respond(result: Result<impl IntoResponse, ApiError>, context: &FcContext) -> Response {
    match result {
        Ok(ok) => ok.into_response(),
        Err(e) => e.in_request(&context.request_id).into_response(),
    }
}

/// `GET /`: the web page, revalidated on every load so a redeploy is seen at once.
pub async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, web::INDEX_CONTENT_TYPE),
            (CACHE_CONTROL, web::INDEX_CACHE_CONTROL),
        ],
        web::INDEX_HTML,
    )
        .into_response()
}

/// `GET /healthz`: readiness, model facts, version, pool size and batching counters
/// ([`BatchStats`](crate::engine::BatchStats)). 200 when the model is ready, 503 otherwise (same body).
pub async fn healthz(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<FcContext>,
) -> Response {
    let engine = &state.engine;
    let (status, ready, model, error) = match engine.slot().readiness() {
        Readiness::Ready(info) => (StatusCode::OK, "ready", Some(info), None),
        Readiness::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading", None, None),
        Readiness::Failed(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            None,
            Some(e),
        ),
    };
    let (error, remedy) = error.map(|e| (e.message, e.remedy)).unzip();
    let pool = engine.pool();
    let body = json!({
        "status": ready,
        "model": model,
        "error": error,
        "remedy": remedy.flatten(),
        "version": env!("CARGO_PKG_VERSION"),
        "workers": pool.workers(),
        "queue": pool.queue_capacity(),
        "admitted": pool.admitted(),
        "batching": engine.batcher().stats(),
        "request_id": context.request_id,
    });
    (status, axum::Json(body)).into_response()
}

/// `POST /classify`: JSON, raw image or multipart; `?top_k=` and `?lang=` allowed.
pub async fn classify(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<FcContext>,
    request: Request,
) -> Response {
    let result = async {
        let query_k = request::top_k_from_query(request.uri().query())?;
        let query_lang = request::lang_from_query(request.uri().query())?;
        let image = read_image_request(&state, request).await?;
        let k = request::choose_top_k(query_k, image.top_k);
        let lang = request::choose_lang(query_lang, image.lang);
        classify_image(&state, &context, image.source, k, lang).await
    }
    .await;
    respond(result.map(axum::Json), &context)
}

/// `/invoke` (event invocation): the body is the event whatever its Content-Type. A classify
/// JSON answers like `/classify`; `{"events": [...]}` goes to the event handler.
///
/// A 4xx answer is the event's own fault (not JSON, malformed, not an image, too large, object
/// missing): the same bytes would fail again, so it is marked [`PermanentFailure`] and FC does
/// not retry it. 5xx answers (model not ready, OSS unavailable) and 403 (a permission the
/// operator can grant, as for upload events) stay retryable.
pub async fn invoke(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<FcContext>,
    request: Request,
) -> Response {
    let result = async {
        let body = read_body(&state, request).await?;
        match request::parse_invoke(body)? {
            InvokeEvent::Classify(image) => {
                let k = request::choose_top_k(None, image.top_k);
                let lang = request::choose_lang(None, image.lang);
                let answer = classify_image(&state, &context, image.source, k, lang).await?;
                Ok(axum::Json(answer).into_response())
            }
            InvokeEvent::Events(event) => handle_events(&state, &context, event)
                .await
                .map(IntoResponse::into_response),
        }
    }
    .await;
    let mut response = respond(result, &context);
    let status = response.status();
    if status.is_client_error() && status != StatusCode::FORBIDDEN {
        response.extensions_mut().insert(PermanentFailure);
    }
    response
}

/// `/initialize`: loads the model if needed (with its warm-up inference).
pub async fn initialize(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<FcContext>,
) -> Response {
    let result = state.engine.load_now().await.map(|classifier| {
        axum::Json(json!({
            "status": "ready",
            "model": classifier.info(),
            "request_id": context.request_id,
        }))
    });
    respond(result.map_err(ApiError::from), &context)
}

/// Unknown path.
pub async fn not_found(Extension(context): Extension<FcContext>, request: Request) -> Response {
    let message = format!(
        "no route for {} {}; try POST /classify, GET /healthz or GET /",
        request.method(),
        request.uri().path()
    );
    let error = ApiError::new(StatusCode::NOT_FOUND, "not_found", message);
    error.in_request(&context.request_id).into_response()
}

/// Known path, wrong method.
pub async fn method_not_allowed(
    Extension(context): Extension<FcContext>,
    request: Request,
) -> Response {
    let message = format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    );
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    error.in_request(&context.request_id).into_response()
}

async fn handle_events(
    state: &AppState,
    context: &FcContext,
    event: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Some(handler) = &state.events else {
        return Err(ApiError::bad_request(
            "unsupported_event",
            "this build does not handle {\"events\": [...]} (OSS trigger) invocations; send a \
             classify request {\"image\": \"<base64>\"} instead",
        ));
    };
    handler
        .handle(event, context, &state.engine)
        .await
        .map(axum::Json)
}

async fn classify_image(
    state: &AppState,
    context: &FcContext,
    source: ImageSource,
    k: usize,
    lang: Lang,
) -> Result<ClassifyResponse, ApiError> {
    let (image, fetch) = match source {
        ImageSource::Url(url) => {
            let Some(fetcher) = &state.fetcher else {
                return Err(ApiError::bad_request(
                    "url_not_supported",
                    "image URLs are not supported by this build; send the image itself",
                ));
            };
            let started = Instant::now();
            let bytes = fetcher.fetch(&url, context).await?;
            (Image::Encoded(bytes), started.elapsed())
        }
        ImageSource::Bytes(bytes) => (Image::Encoded(bytes), Duration::ZERO),
        ImageSource::Inline(text) => (Image::Base64(text), Duration::ZERO),
    };
    let mut classification = state
        .engine
        .classify(image, ClassifyOptions::top_k(k).until(deadline(context)))
        .await?;
    classification.predictions = classification
        .predictions
        .into_iter()
        .map(|p| p.in_lang(lang))
        .collect();
    let timing = &mut classification.timing_ms;
    timing.queued = None;
    timing.fetch = Some(millis(fetch));
    timing.total = Some(millis(context.received_at.elapsed()));
    Ok(ClassifyResponse {
        classification,
        request_id: context.request_id.clone(),
    })
}

/// When the request's answer stops being of use: FC's function timeout (`x-fc-function-timeout`
/// or `FC_TIMEOUT`) after it arrived. FC answers the client with its own timeout error then, so
/// work past it is wasted. `None` when no timeout is known (local runs).
fn deadline(context: &FcContext) -> Option<Instant> {
    let seconds = context.timeout_secs.filter(|&s| s > 0)?;
    context
        .received_at
        .checked_add(Duration::from_secs(u64::from(seconds)))
}

/// What image a `/classify` request carries, by Content-Type.
async fn read_image_request(state: &AppState, request: Request) -> Result<ImageRequest, ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if request::body_kind(content_type.as_deref(), b"") == BodyKind::Multipart {
        return read_multipart(state, request).await;
    }
    let body = read_body(state, request).await?;
    match request::body_kind(content_type.as_deref(), &body) {
        BodyKind::Json => request::parse_json_request(&body),
        BodyKind::Raw => Ok(ImageRequest {
            source: ImageSource::Bytes(body),
            top_k: None,
            lang: None,
        }),
        BodyKind::Multipart => Err(ApiError::internal("multipart body read as bytes")),
        BodyKind::Unsupported(ct) => Err(ApiError::unsupported_media_type(&ct)),
    }
}

/// The whole body, within the configured limit; empty is an error.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let request = oversize::refuse_declared_oversize(request, state.max_body_bytes).await?;
    let body = oversize::collect_within(request.into_body(), state.max_body_bytes).await?;
    if body.is_empty() {
        return Err(ApiError::empty_body());
    }
    Ok(body)
}

/// Multipart form: file field `image`, optional text fields `top_k` and `lang`.
async fn read_multipart(state: &AppState, request: Request) -> Result<ImageRequest, ApiError> {
    let request = oversize::refuse_declared_oversize(request, state.max_body_bytes).await?;
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|r| ApiError::bad_request("invalid_multipart", r.body_text()))?;
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(state.max_body_bytes)
        } else {
            ApiError::bad_request("invalid_multipart", e.body_text())
        }
    };
    let (mut image, mut top_k, mut lang) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            // Refused before the second part is read: which one was meant is unknowable.
            Some("image") if image.is_some() => {
                return Err(ApiError::bad_request(
                    "ambiguous_image",
                    "the multipart form has more than one `image` part; send exactly one",
                ));
            }
            Some("image") => image = Some(field.bytes().await.map_err(multipart_error)?),
            Some("top_k") => {
                let text = field.text().await.map_err(multipart_error)?;
                top_k = Some(request::parse_top_k(&text)?);
            }
            Some("lang") => {
                let text = field.text().await.map_err(multipart_error)?;
                lang = Some(request::parse_lang(&text)?);
            }
            _ => {}
        }
    }
    let image = image.ok_or_else(|| {
        ApiError::bad_request(
            "missing_image",
            "the multipart form has no file field named `image`",
        )
    })?;
    if image.is_empty() {
        return Err(ApiError::bad_request(
            "empty_image",
            "the `image` field is empty",
        ));
    }
    Ok(ImageRequest {
        source: ImageSource::Bytes(image),
        top_k,
        lang,
    })
}
