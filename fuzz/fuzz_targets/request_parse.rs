//! The API's input parsing without HTTP: JSON bodies (classify and `/invoke`), base64 and
//! `data:` URLs, `top_k` in query strings, Content-Type classification. The first byte picks
//! the parser. Every error must be a 4xx with a code; every accepted `top_k` must be 1..=10.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use resnet18_fc::engine::{EngineError, Image, decode_inline_image};
use resnet18_fc::http::ApiError;
use resnet18_fc::http::request::{
    self as api, ImageSource, InvokeEvent, MAX_TOP_K, body_kind, parse_invoke, parse_json_request,
    parse_top_k, top_k_from_query,
};

fn check_error(e: &ApiError) {
    assert!(e.status.is_client_error(), "{e:?}");
    assert!(!e.code.is_empty());
}

fn check_k(k: usize) {
    assert!((1..=MAX_TOP_K).contains(&k), "top_k {k}");
}

fn check_source(source: ImageSource) {
    let image = match source {
        ImageSource::Inline(text) => Image::Base64(text),
        ImageSource::Bytes(bytes) => Image::Encoded(bytes),
        ImageSource::Url(_) => return,
    };
    if let Err(e) = image.into_bytes() {
        check_error(&ApiError::from(EngineError::from(e)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector % 5 {
        0 => match parse_json_request(rest) {
            Ok(request) => {
                request.top_k.map(check_k);
                check_source(request.source);
            }
            Err(e) => check_error(&e),
        },
        1 => match parse_invoke(Bytes::copy_from_slice(rest)) {
            Ok(InvokeEvent::Classify(request)) => {
                request.top_k.map(check_k);
                check_source(request.source);
            }
            Ok(InvokeEvent::Events(body)) => assert_eq!(&body[..], rest),
            Err(e) => check_error(&e),
        },
        2 => match decode_inline_image(&text) {
            Ok(bytes) => assert!(!bytes.is_empty()),
            Err(e) => check_error(&ApiError::from(EngineError::from(e))),
        },
        3 => {
            match top_k_from_query(Some(&text)) {
                Ok(k) => k.map(check_k).unwrap_or_default(),
                Err(e) => check_error(&e),
            }
            match parse_top_k(&text) {
                Ok(k) => check_k(k),
                Err(e) => check_error(&e),
            }
        }
        _ => {
            let (content_type, body) = text.split_once('\n').unwrap_or((&text, ""));
            let _ = body_kind(Some(content_type), body.as_bytes());
            let _ = body_kind(None, rest);
            let _ = api::choose_top_k(None, None);
        }
    }
});
