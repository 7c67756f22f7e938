//! What a classify request asks for, read from its body and query without any web framework:
//! which image it carries (JSON base64 / data URL, raw body, multipart, URL), which `top_k` and
//! `lang`, and what an `/invoke` body is. The wire format is described in README.md ("API").
//!
//! Parsing here is cheap and synchronous; base64 is decoded later by the engine
//! ([`crate::engine::Image::Base64`]), off the async runtime, together with image decoding.

use bytes::Bytes;
use serde::Deserialize;

use super::error::ApiError;
use crate::labels::Lang;

/// Number of classes returned when the request does not say.
pub const DEFAULT_TOP_K: usize = 3;
/// Largest `top_k` the API accepts (the engine itself allows up to 1000).
pub const MAX_TOP_K: usize = 10;

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
    /// A JSON `url` field (OSS); needs an [`ImageFetcher`](super::ImageFetcher).
    Url(String),
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
            "lang must be \"en\" (English, the default) or \"zh\" (Simplified Chinese; \
             zh-CN and zh-Hans too), got {quoted}{ellipsis}"
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

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
        assert_eq!(lang_from_query(Some("lang=zh-CN")), Ok(Some(Lang::Zh)));
        for query in ["lang=fr", "lang=", "lang", "lang=zh-TW"] {
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

    #[test]
    fn byte_order_marks_are_accepted() {
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
}
