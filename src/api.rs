//! The public API's wire types and input parsing, independent of any web framework and of the
//! model: what image a request carries (JSON base64 / data URL, raw body, multipart, URL), which
//! `top_k` and `lang` it asks for, the 200 response and the error body of DESIGN.md "Contracts".
//!
//! Parsing here is cheap and synchronous; base64 is decoded by [`ImageSource::into_bytes`],
//! which callers run off the async runtime together with image decoding.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::classifier::{Class, ClassifyError};
use crate::labels::{self, Lang};
use crate::preprocess::PreprocessError;

/// Number of classes returned when the request does not say.
pub const DEFAULT_TOP_K: usize = 3;
/// Largest `top_k` the API accepts.
pub const MAX_TOP_K: usize = 10;
/// Model name reported in every response.
pub const MODEL_NAME: &str = "resnet18";

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
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 503 `model_not_ready` (retry in 5 s): the model could not be loaded; `remedy` says how
    /// to provide it.
    pub fn model_not_ready(message: impl Into<String>, remedy: Option<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, "model_not_ready", message)
            .with_retry_after(5);
        error.remedy = remedy;
        error
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
    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                remedy: self.remedy.clone(),
            },
            request_id: request_id.to_string(),
        }
    }
}

impl From<ClassifyError> for ApiError {
    fn from(e: ClassifyError) -> Self {
        let status = match &e {
            ClassifyError::Image(PreprocessError::UnsupportedFormat) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ClassifyError::Image(
                PreprocessError::TooManyPixels { .. } | PreprocessError::OverBudget(_),
            ) => StatusCode::PAYLOAD_TOO_LARGE,
            // Nobody reads the answer (client gone, or FC answered its timeout already):
            // the status is for the log.
            ClassifyError::Image(PreprocessError::Interrupted(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ClassifyError::Image(_) | ClassifyError::InvalidTopK { .. } => StatusCode::BAD_REQUEST,
            ClassifyError::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
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

/// The 200 answer of `/classify` and of a classify `/invoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    /// Always [`MODEL_NAME`].
    pub model: String,
    /// Best first.
    pub predictions: Vec<PredictionJson>,
    /// Where the time went.
    pub timing_ms: TimingMs,
    /// The FC request id (or a local one).
    pub request_id: String,
}

/// One ranked class in a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionJson {
    /// 1 for the most probable class.
    pub rank: usize,
    /// ImageNet class index.
    pub index: usize,
    /// Category name, in the language the request asked for (English by default).
    pub label: String,
    /// The English name, present when `label` is in another language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_en: Option<String>,
    /// The Chinese name, present where both names are recorded (OSS result objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_zh: Option<String>,
    /// Softmax probability.
    pub score: f32,
}

impl From<&Class> for PredictionJson {
    fn from(c: &Class) -> Self {
        Self {
            rank: c.rank,
            index: c.index,
            label: c.label.to_string(),
            label_en: None,
            label_zh: None,
            score: c.score,
        }
    }
}

impl PredictionJson {
    /// This prediction with `label` in `lang`; for any language but English the English name
    /// moves to `label_en`. English leaves it unchanged (no extra field).
    pub fn in_lang(self, lang: Lang) -> Self {
        let Some(name) = lang.label(self.index).filter(|_| lang != Lang::En) else {
            return self;
        };
        Self {
            label_en: Some(self.label),
            label: name.to_string(),
            ..self
        }
    }

    /// This prediction with the English `label` and the Chinese `label_zh`.
    pub fn with_both_names(self) -> Self {
        Self {
            label_zh: labels::label_zh(self.index).map(str::to_string),
            ..self
        }
    }
}

/// Milliseconds per stage, rounded to 0.1 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimingMs {
    /// Fetching the image from a URL (0 for inline images).
    pub fetch: f64,
    /// Decoding and preprocessing (resize, crop, normalise).
    pub decode: f64,
    /// The forward pass.
    pub inference: f64,
    /// Whole request, from arrival to answer (includes queueing).
    pub total: f64,
}

/// `d` in milliseconds, rounded to 0.1 ms.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// How a request body is to be read, from its Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (or `*+json`).
    Json,
    /// `image/*` or `application/octet-stream`: the body is the image.
    Raw,
    /// `multipart/form-data` with a field `image`.
    Multipart,
    /// Anything else: answered with 415.
    Unsupported(String),
}

/// The UTF-8 byte order mark some editors and Windows tools put before JSON text.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `body` without a leading UTF-8 byte order mark (RFC 8259 §8.1 lets a parser ignore it).
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(UTF8_BOM).unwrap_or(body)
}

/// Classifies a Content-Type. Without one, a body starting with `{` (after an optional UTF-8
/// byte order mark and white space) is JSON, anything else raw.
pub fn body_kind(content_type: Option<&str>, body: &[u8]) -> BodyKind {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty());
    let Some(essence) = essence else {
        return match strip_bom(body).iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => BodyKind::Json,
            _ => BodyKind::Raw,
        };
    };
    match essence.as_str() {
        "application/json" | "text/json" => BodyKind::Json,
        "application/octet-stream" => BodyKind::Raw,
        "multipart/form-data" => BodyKind::Multipart,
        e if e.ends_with("+json") => BodyKind::Json,
        e if e.starts_with("image/") => BodyKind::Raw,
        _ => BodyKind::Unsupported(essence),
    }
}

/// Where the image of a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// The encoded image itself.
    Bytes(Bytes),
    /// A JSON `image` field: base64 or a `data:` URL, not yet decoded.
    Inline(String),
    /// A JSON `url` field (OSS); needs an [`crate::server::ImageFetcher`].
    Url(String),
}

impl ImageSource {
    /// The encoded image bytes; decodes base64 / data URLs. `Url` is an error: fetch it first.
    pub fn into_bytes(self) -> Result<Bytes, ApiError> {
        match self {
            Self::Bytes(b) => Ok(b),
            Self::Inline(text) => decode_inline_image(&text).map(Bytes::from),
            Self::Url(_) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "a URL image reached the decoder without being fetched",
            )),
        }
    }
}

/// A classify request: an image, an optional `top_k` (validated, `1..=10`) and an optional
/// label language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The image.
    pub source: ImageSource,
    /// Requested k, if any.
    pub top_k: Option<usize>,
    /// Requested label language, if any.
    pub lang: Option<Lang>,
}

/// What an `/invoke` body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeEvent {
    /// `{"image": ...}` or `{"url": ...}`: answered like `POST /classify`.
    Classify(ImageRequest),
    /// `{"events": [...]}` (OSS trigger): the whole raw body, for an event handler.
    Events(Bytes),
}

/// The JSON fields we look at; anything else is ignored.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    top_k: Option<serde_json::Value>,
    #[serde(default)]
    lang: Option<serde_json::Value>,
    #[serde(default)]
    events: Option<serde::de::IgnoredAny>,
}

fn parse_envelope(body: &[u8]) -> Result<Envelope, ApiError> {
    let body = strip_bom(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::empty_body());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not a valid JSON object: {e}; send {{\"image\": \"<base64>\", \"top_k\": 3}}"
            ),
        )
    })
}

fn image_request(envelope: Envelope) -> Result<ImageRequest, ApiError> {
    let top_k = envelope.top_k.as_ref().map(top_k_from_json).transpose()?;
    let lang = envelope.lang.as_ref().map(lang_from_json).transpose()?;
    let source = match (envelope.image, envelope.url) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "ambiguous_image",
                "send either `image` or `url`, not both",
            ));
        }
        (Some(image), None) => ImageSource::Inline(image),
        (None, Some(url)) => ImageSource::Url(url),
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_image",
                "the JSON body has no `image` field (base64 or data: URL) and no `url` field",
            ));
        }
    };
    Ok(ImageRequest {
        source,
        top_k,
        lang,
    })
}

/// Parses a `/classify` JSON body.
pub fn parse_json_request(body: &[u8]) -> Result<ImageRequest, ApiError> {
    image_request(parse_envelope(body)?)
}

/// Parses an `/invoke` body, whatever its Content-Type: an object with `events` is an event for
/// the event handler (passed on without a UTF-8 byte order mark), anything else must be a
/// classify request.
pub fn parse_invoke(body: Bytes) -> Result<InvokeEvent, ApiError> {
    let envelope = parse_envelope(&body)?;
    if envelope.events.is_some() {
        let bom = body.len() - strip_bom(&body).len();
        return Ok(InvokeEvent::Events(body.slice(bom..)));
    }
    image_request(envelope).map(InvokeEvent::Classify)
}

/// Longest piece of client input quoted back in an error message (and so in the logs).
const QUOTE_LIMIT: usize = 40;

fn invalid_top_k(shown: &str) -> ApiError {
    let quoted: String = shown.chars().take(QUOTE_LIMIT).collect();
    let ellipsis = if quoted.len() < shown.len() {
        "…"
    } else {
        ""
    };
    ApiError::bad_request(
        "invalid_top_k",
        format!("top_k must be an integer between 1 and {MAX_TOP_K}, got {quoted}{ellipsis}"),
    )
}

fn top_k_from_json(value: &serde_json::Value) -> Result<usize, ApiError> {
    value
        .as_u64()
        .and_then(|k| usize::try_from(k).ok())
        .filter(|k| (1..=MAX_TOP_K).contains(k))
        .ok_or_else(|| invalid_top_k(&value.to_string()))
}

/// Parses a `top_k` given as text (query string or multipart field).
pub fn parse_top_k(text: &str) -> Result<usize, ApiError> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|k| (1..=MAX_TOP_K).contains(k))
        .ok_or_else(|| invalid_top_k(&format!("{text:?}")))
}

/// The `top_k` query parameter, if present (`?top_k=5`).
pub fn top_k_from_query(query: Option<&str>) -> Result<Option<usize>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == "top_k")
        .map(|(_, value)| parse_top_k(value))
        .transpose()
}

/// The k to use: the query parameter wins over the body field, default [`DEFAULT_TOP_K`].
pub fn choose_top_k(query: Option<usize>, body: Option<usize>) -> usize {
    query.or(body).unwrap_or(DEFAULT_TOP_K)
}

fn invalid_lang(shown: &str) -> ApiError {
    let quoted: String = shown.chars().take(QUOTE_LIMIT).collect();
    let ellipsis = if quoted.len() < shown.len() {
        "…"
    } else {
        ""
    };
    ApiError::bad_request(
        "invalid_lang",
        format!(
            "lang must be \"en\" (English, the default) or \"zh\" (Simplified Chinese), \
             got {quoted}{ellipsis}"
        ),
    )
}

fn lang_from_json(value: &serde_json::Value) -> Result<Lang, ApiError> {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid_lang(&value.to_string()))
}

/// Parses a `lang` given as text (query string or multipart field): `en` or `zh`.
pub fn parse_lang(text: &str) -> Result<Lang, ApiError> {
    text.parse().map_err(|_| invalid_lang(&format!("{text:?}")))
}

/// The `lang` query parameter, if present (`?lang=zh`).
pub fn lang_from_query(query: Option<&str>) -> Result<Option<Lang>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(name, _)| *name == "lang")
        .map(|(_, value)| parse_lang(value))
        .transpose()
}

/// The label language to use: the query parameter wins over the body field, default English.
pub fn choose_lang(query: Option<Lang>, body: Option<Lang>) -> Lang {
    query.or(body).unwrap_or_default()
}

/// Decodes a JSON `image` field: plain base64 (standard or URL-safe alphabet, padding optional,
/// whitespace ignored) or a `data:[<image type>];base64,<data>` URL (`data:` in any case).
pub fn decode_inline_image(text: &str) -> Result<Vec<u8>, ApiError> {
    let trimmed = text.trim_start();
    let payload = match trimmed.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("data:") => data_url_payload(&trimmed[5..])?,
        _ => text,
    };
    let mut compact: Vec<u8> = payload
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(ApiError::bad_request(
            "empty_image",
            "the `image` field is empty",
        ));
    }
    // The URL-safe alphabet (RFC 4648 §5) differs only in these two symbols.
    for b in &mut compact {
        match *b {
            b'-' => *b = b'+',
            b'_' => *b = b'/',
            _ => {}
        }
    }
    STANDARD_PAD_INDIFFERENT
        .decode(&compact)
        .map_err(|e| invalid_base64(&e))
}

/// A 400 `invalid_base64` that says what is wrong in words (offsets count non-space characters).
fn invalid_base64(e: &base64::DecodeError) -> ApiError {
    use base64::DecodeError as E;
    let shown = |byte: u8| match byte {
        0x21..=0x7e => format!("{:?}", char::from(byte)),
        _ => format!("byte 0x{byte:02x}"),
    };
    let detail = match *e {
        E::InvalidByte(offset, b'=') => format!("misplaced `=` padding at character {offset}"),
        E::InvalidByte(offset, byte) => format!(
            "{} at character {offset} is not a base64 character (A-Z, a-z, 0-9, + and /, or \
             - and _)",
            shown(byte)
        ),
        E::InvalidLength(length) => format!(
            "{length} base64 characters cannot be a whole number of bytes (a character is \
             missing or extra)"
        ),
        E::InvalidLastSymbol { offset, symbol, .. } => format!(
            "the last character {} (at {offset}) has bits set that encode nothing; the text \
             is probably cut off",
            shown(symbol)
        ),
        E::InvalidPadding => "the `=` padding is wrong".to_string(),
    };
    ApiError::bad_request(
        "invalid_base64",
        format!("the `image` field is not valid base64: {detail}"),
    )
}

/// The data part of a data URL (after `data:`), checking it is base64 and of an image type.
fn data_url_payload(rest: &str) -> Result<&str, ApiError> {
    let (meta, data) = rest.split_once(',').ok_or_else(|| {
        ApiError::bad_request("invalid_base64", "the data: URL has no `,` before its data")
    })?;
    let mut params = meta.split(';').map(str::trim);
    let media_type = params.next().unwrap_or("").to_ascii_lowercase();
    if !params.any(|p| p.eq_ignore_ascii_case("base64")) {
        return Err(ApiError::bad_request(
            "invalid_base64",
            "only base64 data: URLs are supported (data:image/jpeg;base64,...)",
        ));
    }
    let acceptable = media_type.is_empty()
        || media_type.starts_with("image/")
        || media_type == "application/octet-stream";
    if !acceptable {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the data: URL has type {media_type:?}; send an image/* data URL"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_body_kinds() {
        assert_eq!(body_kind(Some("application/json"), b""), BodyKind::Json);
        assert_eq!(
            body_kind(Some("Application/JSON; charset=utf-8"), b""),
            BodyKind::Json
        );
        assert_eq!(body_kind(Some("application/ld+json"), b""), BodyKind::Json);
        assert_eq!(body_kind(Some("image/png"), b""), BodyKind::Raw);
        assert_eq!(
            body_kind(Some("application/octet-stream"), b"{"),
            BodyKind::Raw
        );
        assert_eq!(
            body_kind(Some("multipart/form-data; boundary=x"), b""),
            BodyKind::Multipart
        );
        assert_eq!(
            body_kind(Some("text/plain"), b""),
            BodyKind::Unsupported("text/plain".into())
        );
        assert_eq!(body_kind(None, b"  {\"image\":1}"), BodyKind::Json);
        assert_eq!(body_kind(None, b"\x89PNG"), BodyKind::Raw);
    }

    #[test]
    fn json_request_reads_image_and_top_k() {
        let r = parse_json_request(br#"{"image": "aGVsbG8=", "top_k": 5}"#).unwrap();
        assert_eq!(r.source, ImageSource::Inline("aGVsbG8=".into()));
        assert_eq!(r.top_k, Some(5));
        let r = parse_json_request(br#"{"url": "oss://b/k.jpg"}"#).unwrap();
        assert_eq!(r.source, ImageSource::Url("oss://b/k.jpg".into()));
        assert_eq!(r.top_k, None);
    }

    #[test]
    fn malformed_json_bodies_are_400_with_codes() {
        let code = |body: &[u8]| parse_json_request(body).unwrap_err().code;
        assert_eq!(code(b"{not json"), "invalid_json");
        assert_eq!(code(b"[1, 2]"), "invalid_json");
        assert_eq!(code(b"{}"), "missing_image");
        assert_eq!(code(b"   "), "empty_body");
        assert_eq!(code(br#"{"image": "x", "url": "y"}"#), "ambiguous_image");
        for bad in [r#"0"#, r#"11"#, r#"-1"#, r#"2.5"#, r#""3""#] {
            let body = format!(r#"{{"image": "aGk=", "top_k": {bad}}}"#);
            let err = parse_json_request(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, "invalid_top_k", "top_k {bad}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn invoke_tells_events_from_classify_requests() {
        let events =
            Bytes::from_static(br#"{"events": [{"eventName": "ObjectCreated:PutObject"}]}"#);
        assert_eq!(
            parse_invoke(events.clone()).unwrap(),
            InvokeEvent::Events(events)
        );
        let classify = parse_invoke(Bytes::from_static(br#"{"image": "aGk="}"#)).unwrap();
        assert!(matches!(classify, InvokeEvent::Classify(_)));
    }

    #[test]
    fn long_invalid_top_k_values_are_not_echoed_in_full() {
        let long = "9".repeat(10_000);
        let body = format!(r#"{{"image": "aGk=", "top_k": "{long}"}}"#);
        let err = parse_json_request(body.as_bytes()).unwrap_err();
        assert_eq!(err.code, "invalid_top_k");
        assert!(err.message.len() < 200, "{}", err.message);
        assert!(err.message.ends_with('…'), "{}", err.message);
    }

    #[test]
    fn top_k_from_query_string() {
        assert_eq!(top_k_from_query(None), Ok(None));
        assert_eq!(top_k_from_query(Some("a=1&top_k=7")), Ok(Some(7)));
        assert_eq!(top_k_from_query(Some("x=1")), Ok(None));
        assert_eq!(
            top_k_from_query(Some("top_k=")).unwrap_err().code,
            "invalid_top_k"
        );
        assert_eq!(
            top_k_from_query(Some("top_k=11")).unwrap_err().code,
            "invalid_top_k"
        );
        assert_eq!(choose_top_k(Some(2), Some(5)), 2);
        assert_eq!(choose_top_k(None, Some(5)), 5);
        assert_eq!(choose_top_k(None, None), 3);
    }

    #[test]
    fn lang_comes_from_query_or_json_and_defaults_to_english() {
        assert_eq!(lang_from_query(None), Ok(None));
        assert_eq!(lang_from_query(Some("top_k=2&lang=zh")), Ok(Some(Lang::Zh)));
        assert_eq!(lang_from_query(Some("lang=EN")), Ok(Some(Lang::En)));
        assert_eq!(lang_from_query(Some("language=zh")), Ok(None));
        let r = parse_json_request(br#"{"image": "aGk=", "lang": "zh"}"#).unwrap();
        assert_eq!(r.lang, Some(Lang::Zh));
        let r = parse_json_request(br#"{"image": "aGk="}"#).unwrap();
        assert_eq!(r.lang, None);
        assert_eq!(choose_lang(Some(Lang::En), Some(Lang::Zh)), Lang::En);
        assert_eq!(choose_lang(None, Some(Lang::Zh)), Lang::Zh);
        assert_eq!(choose_lang(None, None), Lang::En);
    }

    #[test]
    fn unknown_langs_are_400_invalid_lang() {
        for query in ["lang=fr", "lang=", "lang", "lang=zh-CN"] {
            let err = lang_from_query(Some(query)).unwrap_err();
            assert_eq!(err.code, "invalid_lang", "{query}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains("\"zh\""), "{}", err.message);
        }
        for bad in [r#""fr""#, r#"1"#, r#"true"#, r#"["zh"]"#] {
            let body = format!(r#"{{"image": "aGk=", "lang": {bad}}}"#);
            let err = parse_json_request(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, "invalid_lang", "lang {bad}");
        }
        let long = "x".repeat(10_000);
        let err = parse_lang(&long).unwrap_err();
        assert!(err.message.len() < 200, "{}", err.message);
    }

    fn tabby() -> PredictionJson {
        PredictionJson::from(&Class {
            rank: 1,
            index: 281,
            label: "tabby",
            score: 0.5,
        })
    }

    #[test]
    fn english_predictions_keep_their_wire_shape() {
        let json = serde_json::to_value(tabby().in_lang(Lang::En)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rank": 1, "index": 281, "label": "tabby", "score": 0.5})
        );
    }

    #[test]
    fn chinese_predictions_carry_the_english_name_too() {
        let json = serde_json::to_value(tabby().in_lang(Lang::Zh)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rank": 1, "index": 281, "label": "虎斑猫", "label_en": "tabby", "score": 0.5})
        );
        let json = serde_json::to_value(tabby().with_both_names()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rank": 1, "index": 281, "label": "tabby", "label_zh": "虎斑猫", "score": 0.5})
        );
    }

    #[test]
    fn inline_images_decode_from_base64_and_data_urls() {
        // "hello" in base64 is aGVsbG8= (RFC 4648 alphabet).
        assert_eq!(decode_inline_image("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_inline_image("aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(
            decode_inline_image("data:image/png;base64,aGVsbG8=").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode_inline_image("data:;base64,aGVsbG8=").unwrap(),
            b"hello"
        );
    }

    #[test]
    fn url_safe_base64_upper_case_data_urls_and_byte_order_marks_are_accepted() {
        // Bytes fb ff fe encode as "+//+" in the standard alphabet and "-__-" URL-safe.
        let bytes = [0xfb, 0xff, 0xfe];
        assert_eq!(decode_inline_image("+//+").unwrap(), bytes);
        assert_eq!(decode_inline_image("-__-").unwrap(), bytes);
        assert_eq!(
            decode_inline_image("DATA:IMAGE/JPEG;BASE64,aGVsbG8=").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode_inline_image("  Data:image/png;Base64,-__-").unwrap(),
            bytes
        );
        let with_bom = b"\xEF\xBB\xBF{\"image\": \"aGk=\", \"top_k\": 2}";
        let request = parse_json_request(with_bom).unwrap();
        assert_eq!(request.source, ImageSource::Inline("aGk=".into()));
        assert_eq!(body_kind(None, with_bom), BodyKind::Json);
        let event = Bytes::from_static(b"\xEF\xBB\xBF{\"events\": []}");
        assert_eq!(
            parse_invoke(event).unwrap(),
            InvokeEvent::Events(Bytes::from_static(b"{\"events\": []}"))
        );
    }

    #[test]
    fn base64_errors_say_what_is_wrong_in_words() {
        let message = |t: &str| decode_inline_image(t).unwrap_err().message;
        let bad_symbol = message("aGV%bG8=");
        assert!(bad_symbol.contains("'%' at character 3"), "{bad_symbol}");
        assert!(!bad_symbol.contains("Invalid symbol"), "{bad_symbol}");
        assert!(message("aGVsb").contains("5 base64 characters"));
        assert!(message("aG=Vs").contains("misplaced `=`"));
    }

    #[test]
    fn bad_inline_images_are_rejected_with_codes() {
        let err = |t: &str| decode_inline_image(t).unwrap_err();
        assert_eq!(err("not base64!").code, "invalid_base64");
        assert_eq!(err("").code, "empty_image");
        assert_eq!(err("data:image/png,rawdata").code, "invalid_base64");
        assert_eq!(err("data:image/png;base64").code, "invalid_base64");
        let text = err("data:text/plain;base64,aGVsbG8=");
        assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn classifier_errors_map_to_documented_statuses() {
        let status = |e: ClassifyError| ApiError::from(e).status;
        assert_eq!(
            status(PreprocessError::Empty.into()),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(PreprocessError::UnsupportedFormat.into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            status(
                PreprocessError::TooManyPixels {
                    width: 10,
                    height: 10,
                    pixels: 100,
                    limit: 50
                }
                .into()
            ),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(PreprocessError::Corrupt("x".into()).into()),
            StatusCode::BAD_REQUEST
        );
        let over = ApiError::from(ClassifyError::from(PreprocessError::OverBudget(
            "the JPEG has 101 scans".into(),
        )));
        assert_eq!(
            (over.status, over.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large")
        );
        let late = ApiError::from(ClassifyError::from(PreprocessError::Interrupted(
            crate::preprocess::Interrupted::DeadlineExceeded,
        )));
        assert_eq!(
            (late.status, late.code),
            (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded")
        );
    }

    #[test]
    fn error_body_has_the_contract_shape() {
        let e = ApiError::bad_request("invalid_image", "bad");
        let json = serde_json::to_value(e.body("req-1")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "invalid_image", "message": "bad"}, "request_id": "req-1"})
        );
    }

    #[test]
    fn millis_rounds_to_a_tenth() {
        assert_eq!(millis(Duration::from_micros(3_149)), 3.1);
        assert_eq!(millis(Duration::from_micros(3_160)), 3.2);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }
}
