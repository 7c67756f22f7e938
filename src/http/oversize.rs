//! Reading request bodies within the body limit, and refusing larger ones so that the client
//! actually receives the 413.
//!
//! Answering before the body has been read and then closing the connection makes the kernel
//! reset it while a client that writes the whole request before reading (reqwest, wrk, Python
//! `requests`, most SDKs) is still sending: the client sees `EPIPE` / `ECONNRESET` instead of
//! the 413. So, like a web server's lingering close, the unread body is read and discarded
//! first, within [`LINGER_MAX_BYTES`] and [`LINGER_TIMEOUT`]; nothing of it is kept in memory.
//! The same goes for a chunked body that runs past the limit ([`collect_within`]). Multipart
//! bodies are read by axum's multipart reader: a declared oversize is drained here, a chunked
//! one that runs over is answered 413 without the drain.
//! A client that sent `Expect: 100-continue` has not sent the body yet and never will once it
//! gets the 413, so nothing is drained for it.

use std::time::Duration;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{CONTENT_LENGTH, EXPECT};

use super::error::ApiError;
use crate::config::MAX_BODY_BYTES;

/// The most bytes read and thrown away to deliver a 413: FC's own 32 MB request limit, so a
/// request that passed the FC gateway is always drained.
pub const LINGER_MAX_BYTES: u64 = MAX_BODY_BYTES as u64;

/// How long reading the unread body may take before the connection is closed anyway (a slow
/// sender). Independent of a stop's drain budget (`fc::Lifecycle`), whose deadline closes the
/// connection even in the middle of this.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(10);

/// Passes `request` through unless it declares a body larger than `limit`; then drains the body
/// (see the module documentation) and returns the 413.
pub async fn refuse_declared_oversize(request: Request, limit: usize) -> Result<Request, ApiError> {
    let Some(declared) = declared_length(&request) else {
        return Ok(request);
    };
    if declared <= limit as u64 {
        return Ok(request);
    }
    if !expects_continue(&request) && declared <= LINGER_MAX_BYTES {
        let drained = drain(request.into_body().into_data_stream()).await;
        tracing::debug!(declared, drained, "oversized body drained before the 413");
    }
    Err(ApiError::body_too_large(limit))
}

/// Collects `body` up to `limit` bytes. A body that turns out longer (a chunked upload without a
/// `Content-Length`) is drained like a declared one and answered 413; a body that breaks off (the
/// client went away) is a 400 `body_read_failed`.
pub async fn collect_within(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // A declared length (within the limit by now) sizes the buffer once.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut stream = body.into_data_stream();
    let mut collected = BytesMut::with_capacity(expected.min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("body_read_failed", format!("reading the body failed: {e}"))
        })?;
        if collected.len() + chunk.len() > limit {
            let drained = drain(stream).await;
            tracing::debug!(drained, "oversized chunked body drained before the 413");
            return Err(ApiError::body_too_large(limit));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

/// The `Content-Length` header, when present and a number.
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the client waits for `100 Continue` before sending the body.
fn expects_continue(request: &Request) -> bool {
    request
        .headers()
        .get(EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Reads and discards a body's `stream` up to [`LINGER_MAX_BYTES`] or [`LINGER_TIMEOUT`],
/// whichever comes first, or until it ends or fails; returns the bytes read.
async fn drain<E>(mut stream: impl Stream<Item = Result<Bytes, E>> + Unpin) -> u64 {
    let mut total = 0u64;
    let read_all = async {
        while let Some(Ok(chunk)) = stream.next().await {
            total += chunk.len() as u64;
            if total >= LINGER_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, read_all).await;
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: Vec<u8>) -> Request {
        let mut builder = http::Request::builder().method("POST").uri("/classify");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::from(body)).expect("request")
    }

    #[tokio::test]
    async fn a_declared_length_within_the_limit_passes_with_its_body() {
        let req = request(&[("content-length", "3")], b"abc".to_vec());
        let passed = refuse_declared_oversize(req, 3).await.map_err(|e| e.code);
        let body = axum::body::to_bytes(passed.expect("passes").into_body(), 10)
            .await
            .expect("body");
        assert_eq!(&body[..], b"abc");
    }

    #[tokio::test]
    async fn no_declared_length_passes() {
        let req = request(&[], vec![0; 100]);
        assert!(refuse_declared_oversize(req, 10).await.is_ok());
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_whatever_the_expect_header() {
        for headers in [
            vec![("content-length", "11")],
            vec![("content-length", " 11 "), ("expect", "100-Continue")],
        ] {
            let req = request(&headers, vec![0; 11]);
            let refused = refuse_declared_oversize(req, 10).await.err();
            assert_eq!(refused.map(|e| e.status.as_u16()), Some(413), "{headers:?}");
        }
    }

    fn chunked(chunks: usize, size: usize) -> Body {
        let parts = (0..chunks).map(move |_| Ok::<_, std::io::Error>(vec![1u8; size]));
        Body::from_stream(futures_util::stream::iter(parts))
    }

    #[tokio::test]
    async fn collect_within_keeps_a_body_up_to_the_limit() {
        let body = collect_within(chunked(4, 25), 100)
            .await
            .map_err(|e| e.code);
        assert_eq!(body.map(|b| b.len()), Ok(100));
    }

    #[tokio::test]
    async fn collect_within_refuses_a_body_one_byte_over_the_limit() {
        let refused = collect_within(chunked(101, 1), 100).await.err();
        assert_eq!(refused.map(|e| e.code), Some("body_too_large"));
    }

    #[tokio::test]
    async fn collect_within_reports_a_broken_body_as_a_read_failure() {
        let parts: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(vec![1; 10]), Err(std::io::Error::other("reset"))];
        let body = Body::from_stream(futures_util::stream::iter(parts));
        let failed = collect_within(body, 100).await.err();
        assert_eq!(failed.map(|e| e.code), Some("body_read_failed"));
    }

    #[tokio::test]
    async fn drain_reads_the_whole_body() {
        let body = Body::from(vec![7u8; 300_000]);
        assert_eq!(drain(body.into_data_stream()).await, 300_000);
    }

    #[test]
    fn expect_continue_is_recognised_case_insensitively() {
        assert!(expects_continue(&request(
            &[("expect", "100-continue")],
            vec![]
        )));
        assert!(expects_continue(&request(
            &[("expect", "100-CONTINUE")],
            vec![]
        )));
        assert!(!expects_continue(&request(&[], vec![])));
    }
}
