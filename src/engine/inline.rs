//! Images sent as text (a JSON `image` field): plain base64 or a `data:` URL. Decoded by the
//! engine on its pool, in the same job as the image decoding, so a large base64 body costs no
//! time on the async runtime.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use bytes::Bytes;

/// An image as the engine takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// The encoded image itself (JPEG, PNG, …).
    Encoded(Bytes),
    /// Base64 text or a `data:` URL, not yet decoded ([`decode_inline_image`]).
    Base64(String),
}

impl Image {
    /// The encoded image bytes; decodes base64 / data URLs.
    pub fn into_bytes(self) -> Result<Bytes, InlineImageError> {
        match self {
            Self::Encoded(bytes) => Ok(bytes),
            Self::Base64(text) => decode_inline_image(&text).map(Bytes::from),
        }
    }
}

/// Why an inline image is not an image's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InlineImageError {
    /// Nothing but white space.
    #[error("the `image` field is empty")]
    Empty,
    /// Not base64, or a malformed data URL; the message says what is wrong, in words.
    #[error("{0}")]
    InvalidBase64(String),
    /// A data URL of a type that is not an image.
    #[error("the data: URL has type {0:?}; send an image/* data URL")]
    UnsupportedType(String),
}

impl InlineImageError {
    /// Stable machine-readable code, used in JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_image",
            Self::InvalidBase64(_) => "invalid_base64",
            Self::UnsupportedType(_) => "unsupported_media_type",
        }
    }
}

/// Decodes a JSON `image` field: plain base64 (standard or URL-safe alphabet, padding optional,
/// whitespace ignored) or a `data:[<image type>];base64,<data>` URL (`data:` in any case).
pub fn decode_inline_image(text: &str) -> Result<Vec<u8>, InlineImageError> {
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
        return Err(InlineImageError::Empty);
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

/// An `invalid_base64` that says what is wrong in words (offsets count non-space characters).
fn invalid_base64(e: &base64::DecodeError) -> InlineImageError {
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
    InlineImageError::InvalidBase64(format!("the `image` field is not valid base64: {detail}"))
}

/// The data part of a data URL (after `data:`), checking it is base64 and of an image type.
fn data_url_payload(rest: &str) -> Result<&str, InlineImageError> {
    let (meta, data) = rest.split_once(',').ok_or_else(|| {
        InlineImageError::InvalidBase64("the data: URL has no `,` before its data".into())
    })?;
    let mut params = meta.split(';').map(str::trim);
    let media_type = params.next().unwrap_or("").to_ascii_lowercase();
    if !params.any(|p| p.eq_ignore_ascii_case("base64")) {
        return Err(InlineImageError::InvalidBase64(
            "only base64 data: URLs are supported (data:image/jpeg;base64,...)".into(),
        ));
    }
    let acceptable = media_type.is_empty()
        || media_type.starts_with("image/")
        || media_type == "application/octet-stream";
    if !acceptable {
        return Err(InlineImageError::UnsupportedType(media_type));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn url_safe_base64_and_upper_case_data_urls_are_accepted() {
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
    }

    #[test]
    fn base64_errors_say_what_is_wrong_in_words() {
        let message = |t: &str| decode_inline_image(t).unwrap_err().to_string();
        let bad_symbol = message("aGV%bG8=");
        assert!(bad_symbol.contains("'%' at character 3"), "{bad_symbol}");
        assert!(!bad_symbol.contains("Invalid symbol"), "{bad_symbol}");
        assert!(message("aGVsb").contains("5 base64 characters"));
        assert!(message("aG=Vs").contains("misplaced `=`"));
    }

    #[test]
    fn bad_inline_images_are_rejected_with_codes() {
        let err = |t: &str| decode_inline_image(t).unwrap_err();
        assert_eq!(err("not base64!").code(), "invalid_base64");
        assert_eq!(err("").code(), "empty_image");
        assert_eq!(err("data:image/png,rawdata").code(), "invalid_base64");
        assert_eq!(err("data:image/png;base64").code(), "invalid_base64");
        let text = err("data:text/plain;base64,aGVsbG8=");
        assert_eq!(text, InlineImageError::UnsupportedType("text/plain".into()));
        assert_eq!(text.code(), "unsupported_media_type");
    }

    #[test]
    fn images_give_their_bytes() {
        let raw = Bytes::from_static(b"\x89PNG");
        assert_eq!(Image::Encoded(raw.clone()).into_bytes(), Ok(raw));
        assert_eq!(
            Image::Base64("aGVsbG8=".into()).into_bytes(),
            Ok(Bytes::from_static(b"hello"))
        );
    }
}
