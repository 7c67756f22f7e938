//! Request handlers. They read the [`FcContext`] from the request extensions (put there by the
//! FC adapter) and turn [`api`](crate::api) values into responses; they never see `x-fc-*`
//! headers, tensors or pixels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::model::Readiness;
use super::{AppState, oversize};
use crate::api::{
    self, ApiError, BodyKind, ClassifyResponse, ImageRequest, ImageSource, InvokeEvent, TimingMs,
};
use crate::fc::{FcContext, PermanentFailure};
use crate::labels::Lang;
use crate::web;

/// An error answer: status, `Retry-After` when set, and the contract's error JSON.
pub fn error_response(error: &ApiError, request_id: &str) -> Response {
    if error.status.is_server_error() {
        tracing::error!(code = error.code, message = %error.message, "request failed");
    } else {
        tracing::info!(code = error.code, message = %error.message, "request refused");
    }
    let mut response = (error.status, axum::Json(error.body(request_id))).into_response();
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn respond(result: Result<impl IntoResponse, ApiError>, context: &FcContext) -> Response {
    match result {
        Ok(ok) => ok.into_response(),
        Err(e) => error_response(&e, &context.request_id),
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
/// ([`BatchStats`](super::BatchStats)). 200 when the model is ready, 503 otherwise (same body).
pub async fn healthz(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<FcContext>,
) -> Response {
    let (status, ready, model, error) = match state.core.slot().readiness() {
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
    let pool = state.core.pool();
    let body = json!({
        "status": ready,
        "model": model,
        "error": error,
        "remedy": remedy.flatten(),
        "version": env!("CARGO_PKG_VERSION"),
        "workers": pool.workers(),
        "queue": pool.queue_capacity(),
        "admitted": pool.admitted(),
        "batching": state.core.batcher().stats(),
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
        let query_k = api::top_k_from_query(request.uri().query())?;
        let query_lang = api::lang_from_query(request.uri().query())?;
        let image = read_image_request(&state, request).await?;
        let k = api::choose_top_k(query_k, image.top_k);
        let lang = api::choose_lang(query_lang, image.lang);
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
        match api::parse_invoke(body)? {
            InvokeEvent::Classify(image) => {
                let k = api::choose_top_k(None, image.top_k);
                let lang = api::choose_lang(None, image.lang);
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
    let core = &state.core;
    let result = core.slot().load_now(core.pool()).await.map(|classifier| {
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
    error_response(&error, &context.request_id)
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
    error_response(&error, &context.request_id)
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
        .handle(event, context, &state.core)
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
    let (source, fetch) = match source {
        ImageSource::Url(url) => {
            let Some(fetcher) = &state.fetcher else {
                return Err(ApiError::bad_request(
                    "url_not_supported",
                    "image URLs are not supported by this build; send the image itself",
                ));
            };
            let started = Instant::now();
            let bytes = fetcher.fetch(&url, context).await?;
            (ImageSource::Bytes(bytes), started.elapsed())
        }
        other => (other, Duration::ZERO),
    };
    let classified = state
        .core
        .classify_source_until(source, k, deadline(context))
        .await?;
    Ok(ClassifyResponse {
        model: api::MODEL_NAME.to_string(),
        predictions: classified
            .predictions
            .into_iter()
            .map(|p| p.in_lang(lang))
            .collect(),
        timing_ms: TimingMs {
            fetch: api::millis(fetch),
            decode: api::millis(classified.decode),
            inference: api::millis(classified.inference),
            total: api::millis(context.received_at.elapsed()),
        },
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
    if api::body_kind(content_type.as_deref(), b"") == BodyKind::Multipart {
        return read_multipart(state, request).await;
    }
    let body = read_body(state, request).await?;
    match api::body_kind(content_type.as_deref(), &body) {
        BodyKind::Json => api::parse_json_request(&body),
        BodyKind::Raw => Ok(ImageRequest {
            source: ImageSource::Bytes(body),
            top_k: None,
            lang: None,
        }),
        BodyKind::Multipart => Err(internal("multipart body read as bytes")),
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
                top_k = Some(api::parse_top_k(&text)?);
            }
            Some("lang") => {
                let text = field.text().await.map_err(multipart_error)?;
                lang = Some(api::parse_lang(&text)?);
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

fn internal(detail: impl std::fmt::Display) -> ApiError {
    tracing::error!(%detail, "internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the request was logged",
    )
}
