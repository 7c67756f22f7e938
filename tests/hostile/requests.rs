//! Hostile input through the real `resnet18-fc serve` binary (default limits: 32 MiB bodies,
//! 40 MP images, 120 MB decoded, 100 JPEG scans): decompression bombs, absurd declared sizes,
//! CPU bombs (JPEG scans), metadata bombs (PNG colour profiles), degenerate shapes, truncated
//! files, absurd EXIF, and hostile request bodies; and abandoned or late requests, whose work
//! must stop. Every case has the status the API contract gives it
//! (the error contract of README.md "API"): too many pixels → 413 `image_too_large`, corrupt or
//! truncated → 400 `invalid_image`, not an image → 415, a valid image → 200.
//!
//! Peak memory is measured on the server process (`VmHWM` in `/proc/<pid>/status`): the bombs
//! would need gigabytes if their pixels were ever allocated, so a bound of a few hundred MB
//! above the warmed-up baseline proves they were refused from their headers.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Spawned, client, raw_exchange};
use base64::Engine as _;
use image::ImageFormat;
use serde_json::Value;

/// Peak-memory allowance over the warmed-up baseline: about twice the decoded-bytes limit
/// (120 MB), which is what a decoder may allocate in all. The largest images the suite lets
/// through are the 36 MP bomb (1-bit PNG, 36 MB of grey) and the 4096x4096 progressive JPEG
/// (34 MB of coefficients). One 2.5 GP bomb decoded to 1 byte per pixel would alone need
/// 2.5 GB; the 1 GB colour profile, read as decoders read it, 1 GB.
const PEAK_ALLOWANCE_KB: u64 = 256 * 1024;

struct Case {
    name: &'static str,
    body: Vec<u8>,
    content_type: &'static str,
    /// Exactly this status and (for errors) this code.
    expect: (u16, Option<&'static str>),
}

fn case(name: &'static str, body: Vec<u8>, status: u16, code: Option<&'static str>) -> Case {
    Case {
        name,
        body,
        content_type: "application/octet-stream",
        expect: (status, code),
    }
}

const TOO_LARGE: Option<&str> = Some("image_too_large");
const CORRUPT: Option<&str> = Some("invalid_image");

/// The bomb and degenerate-image table.
fn image_cases() -> Vec<Case> {
    use crate::images::*;
    let orientation = |value: u32| exif_ifd(&[(0x0112, 3, 1, value)], None);
    vec![
        // Declared sizes far over the limit, with almost no data behind them.
        case(
            "png declaring 100000x100000",
            png_declaring(100_000, 100_000),
            413,
            TOO_LARGE,
        ),
        case(
            "png declaring 2^31-1 x 2^31-1",
            png_declaring(0x7FFF_FFFF, 0x7FFF_FFFF),
            413,
            TOO_LARGE,
        ),
        case(
            "gif screen 65535x65535",
            gif_with_screen(65_535, 65_535),
            413,
            TOO_LARGE,
        ),
        case(
            "tiff declaring 100000x100000",
            tiff_declaring(100_000, 100_000),
            413,
            TOO_LARGE,
        ),
        case(
            "webp canvas 16777216x16777216",
            webp_declaring(1 << 24, 1 << 24),
            413,
            TOO_LARGE,
        ),
        case(
            "jpeg sof 65535x65535",
            jpeg_declaring(65_535, 65_535),
            413,
            TOO_LARGE,
        ),
        case(
            "bmp declaring 100000x100000",
            bmp_declaring(100_000, 100_000),
            413,
            TOO_LARGE,
        ),
        case(
            "bmp declaring 100000x-100000 (top-down)",
            bmp_declaring(100_000, -100_000),
            413,
            TOO_LARGE,
        ),
        // Decoder work: a JPEG pass per scan over the whole image. 30 001 scans of a
        // 4096x4096 image, 1.2 MB: refused from its markers on either JPEG path (zune-jpeg
        // itself stops at 100; jpeg-decoder, the reduced-size path, has no limit).
        case(
            "jpeg 4096x4096 with 30001 scans",
            jpeg_scan_bomb(4096, 30_000),
            413,
            TOO_LARGE,
        ),
        case(
            "jpeg 1000x1000 with 30001 scans (exact path)",
            jpeg_scan_bomb(1000, 30_000),
            413,
            TOO_LARGE,
        ),
        // At the limit (1 DC + 99 AC scans = 100): decoded, on both paths.
        case(
            "jpeg 4096x4096 with 100 scans",
            jpeg_scan_bomb(4096, 99),
            200,
            None,
        ),
        case(
            "jpeg 1000x1000 with 100 scans (exact path)",
            jpeg_scan_bomb(1000, 99),
            200,
            None,
        ),
        // Decoded bytes: a progressive JPEG keeps every coefficient (2 bytes a sample) until
        // its last scan; 6000x6000 4:4:4 needs 216 MB before any pixel, whichever path.
        case(
            "progressive jpeg 6000x6000 4:4:4 (216 MB of coefficients)",
            jpeg_progressive_declaring(6_000, 6_000, 3),
            413,
            TOO_LARGE,
        ),
        case(
            "png 16-bit rgba 5000x5000 zlib bomb (200 MB decoded)",
            png_rgba16_bomb(5_000, 5_000),
            413,
            TOO_LARGE,
        ),
        // Metadata: a colour profile inflating to 1 GB in a 6 MB file. Pillow's
        // convert("RGB") never applies it, and neither do we: not read at all.
        case(
            "png 8x8 with a 1 GB iCCP profile",
            png_iccp_bomb(8, 8, 1 << 30),
            200,
            None,
        ),
        // Real decompression bombs: complete zlib streams of zeros.
        case(
            "png bomb 50000x50000 1-bit (2.5 GP, ~2 MB)",
            png_zero_bomb(50_000, 50_000),
            413,
            TOO_LARGE,
        ),
        case(
            "png bomb 6000x6000 1-bit (36 MP, within limit)",
            png_zero_bomb(6_000, 6_000),
            200,
            None,
        ),
        // Many frames: only the first is decoded.
        case("gif with 3000 frames", gif_frames(16, 3_000), 200, None),
        // Degenerate shapes.
        case(
            "png 100000x1",
            encode(100_000, 1, ImageFormat::Png),
            200,
            None,
        ),
        case(
            "png 1x100000",
            encode(1, 100_000, ImageFormat::Png),
            200,
            None,
        ),
        case("png 1x1", encode(1, 1, ImageFormat::Png), 200, None),
        case("png width 0", png_declaring(0, 16), 400, CORRUPT),
        case("png height 0", png_declaring(16, 0), 400, CORRUPT),
        // Truncated files. A cut JPEG is refused as PIL refuses it ("image file is truncated");
        // zune-jpeg alone would fill the missing rows with grey.
        case(
            "png cut at 1/2",
            truncated(&encode(300, 200, ImageFormat::Png), 1, 2),
            400,
            CORRUPT,
        ),
        case(
            "png cut after the header",
            truncated(&encode(300, 200, ImageFormat::Png), 1, 20),
            400,
            CORRUPT,
        ),
        case(
            "gif cut at 1/2",
            truncated(&gif_frames(64, 1), 1, 2),
            400,
            CORRUPT,
        ),
        case(
            "jpeg cut at 1/2",
            truncated(&encode(300, 200, ImageFormat::Jpeg), 1, 2),
            400,
            CORRUPT,
        ),
        case(
            "webp cut at 1/2",
            truncated(&encode(300, 200, ImageFormat::WebP), 1, 2),
            400,
            CORRUPT,
        ),
        case(
            "tiff cut at 1/2",
            truncated(&encode(300, 200, ImageFormat::Tiff), 1, 2),
            400,
            CORRUPT,
        ),
        case(
            "bmp cut at 1/2",
            truncated(&encode(300, 200, ImageFormat::Bmp), 1, 2),
            400,
            CORRUPT,
        ),
        // Absurd EXIF: ignored (no orientation applied) rather than trusted.
        case(
            "jpeg exif ifd declaring 65535 entries",
            jpeg_with_exif(64, 48, &exif_ifd(&[], Some(0xFFFF))),
            200,
            None,
        ),
        case(
            "jpeg exif orientation 9 (undefined)",
            jpeg_with_exif(64, 48, &orientation(9)),
            200,
            None,
        ),
        case(
            "jpeg exif orientation 65535",
            jpeg_with_exif(64, 48, &orientation(0xFFFF)),
            200,
            None,
        ),
        case(
            "jpeg exif orientation 8 on a 1000x1",
            jpeg_with_exif(1000, 1, &orientation(8)),
            200,
            None,
        ),
        case(
            "jpeg exif 64 KB of garbage",
            jpeg_with_exif(64, 48, &vec![0xA5; 65_000]),
            200,
            None,
        ),
        case(
            "jpeg exif pointing outside itself",
            jpeg_with_exif(
                64,
                48,
                &exif_ifd(&[(0x0112, 3, 1_000_000, 0xFFFF_FFF0)], None),
            ),
            200,
            None,
        ),
        // Not an image at all.
        case(
            "text",
            b"hello, this is not an image".to_vec(),
            415,
            Some("unsupported_image_type"),
        ),
        case(
            "png signature only",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            400,
            CORRUPT,
        ),
    ]
}

/// `VmHWM` (peak resident set) of `pid` in kB.
fn peak_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// Posts `body` to `/classify` (no Content-Type header when `content_type` is empty); returns
/// status and error code (None on 200 or non-JSON). Every answer must carry its request id in
/// `x-request-id`, the same as in the JSON body.
async fn post(server: &Spawned, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let mut request = client().post(server.url("/classify")).body(body);
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let code = json["error"]["code"].as_str().map(str::to_string);
    assert!(
        request_id.is_some() && json["request_id"].as_str() == request_id.as_deref(),
        "x-request-id {request_id:?} does not match the body {json}"
    );
    (status, code, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_and_degenerate_images_get_their_statuses_with_bounded_memory() {
    let cases = tokio::task::spawn_blocking(image_cases)
        .await
        .expect("cases");
    let server = tokio::task::spawn_blocking(|| {
        let s = Spawned::start(&[], &[]);
        s.wait_ready();
        s
    })
    .await
    .expect("spawn");
    let warm = crate::images::encode(640, 480, ImageFormat::Jpeg);
    let (status, _, body) = post(&server, "image/jpeg", warm).await;
    assert_eq!(status, 200, "{body}");
    let baseline = peak_kb(server.pid());
    let mut failures = Vec::new();
    for c in cases {
        let size = c.body.len();
        let started = Instant::now();
        let (status, code, body) = post(&server, c.content_type, c.body).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "{:<52} {:>9} B  {status}  {:<24} {ms:>8.1} ms",
            c.name,
            size,
            code.as_deref().unwrap_or("-")
        );
        let (want_status, want_code) = c.expect;
        if status != want_status || (want_code.is_some() && code.as_deref() != want_code) {
            failures.push(format!(
                "{}: expected {:?}, got {status} {body}",
                c.name, c.expect
            ));
        }
        if status == 200 && body["predictions"].as_array().map(Vec::len) != Some(3) {
            failures.push(format!("{}: 200 without 3 predictions: {body}", c.name));
        }
    }
    let peak = peak_kb(server.pid());
    eprintln!("server VmHWM: baseline {baseline} kB, after the suite {peak} kB");
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        server.output()
    );
    assert!(
        peak <= baseline + PEAK_ALLOWANCE_KB,
        "peak memory grew from {baseline} kB to {peak} kB"
    );
    let (status, _, _) = post(
        &server,
        "image/png",
        crate::images::encode(64, 64, ImageFormat::Png),
    )
    .await;
    assert_eq!(status, 200, "server no longer classifies after the suite");
}

/// Sends raw bytes on a fresh connection and reads one response.
fn raw(server: &Spawned, request: &[u8]) -> crate::support::RawResponse {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    raw_exchange(&mut stream, request).expect("response")
}

fn raw_post(server: &Spawned, head_extra: &str, body: &[u8]) -> crate::support::RawResponse {
    let mut request = format!(
        "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{head_extra}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw(server, &request)
}

fn code_of(response: &crate::support::RawResponse) -> String {
    serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_bodies_are_clear_4xx_and_the_server_keeps_serving() {
    let server = tokio::task::spawn_blocking(|| {
        let s = Spawned::start(&["--max-body-bytes", "4194304"], &[]);
        s.wait_ready();
        s
    })
    .await
    .expect("spawn");
    let json = "application/json";
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"image\":{}1{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    let zeros_b64 = format!("{{\"image\":\"{}\"}}", "A".repeat(3_000_000));
    let multipart = crate::support::multipart_content_type();
    let png = crate::images::encode(64, 64, ImageFormat::Png);
    let part = |data| crate::support::Part {
        name: "image",
        filename: Some("a.png"),
        content_type: Some("image/png"),
        data,
    };
    let two_images = crate::support::multipart_body(&[part(&png[..]), part(&png[..])]);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "json nested 100000 deep",
            json,
            deep.into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "json object nested 50000 deep",
            json,
            deep_object.into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "json top_k 1e400",
            json,
            br#"{"image":"aGk=","top_k":1e400}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "json top_k 2^64",
            json,
            br#"{"image":"aGk=","top_k":18446744073709551616}"#.to_vec(),
            400,
            "invalid_top_k",
        ),
        (
            "json duplicate image",
            json,
            br#"{"image":"aGk=","image":"aGk="}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "json invalid utf-8",
            json,
            b"{\"image\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "json image is a number",
            json,
            br#"{"image":12}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "json 3 MB of base64 zeros",
            json,
            zeros_b64.into_bytes(),
            415,
            "unsupported_image_type",
        ),
        (
            "data url with a 100 KB type",
            json,
            format!(
                "{{\"image\":\"data:image/{};base64,aGk=\"}}",
                "x".repeat(100_000)
            )
            .into_bytes(),
            415,
            "unsupported_image_type",
        ),
        (
            "data url of text",
            json,
            br#"{"image":"data:text/html;base64,PGgxPg=="}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "base64 with NULs",
            json,
            b"{\"image\":\"aG\\u0000k=\"}".to_vec(),
            400,
            "invalid_base64",
        ),
        (
            "multipart without boundary",
            "multipart/form-data",
            b"--x\r\n\r\n".to_vec(),
            400,
            "invalid_multipart",
        ),
        (
            "multipart garbage",
            "multipart/form-data; boundary=zz",
            b"\x00\x01garbage".to_vec(),
            400,
            "invalid_multipart",
        ),
        (
            "multipart 5000 empty fields",
            "multipart/form-data; boundary=zz",
            many_fields(5_000),
            400,
            "missing_image",
        ),
        (
            "multipart with two image parts",
            multipart.as_str(),
            two_images.clone(),
            400,
            "ambiguous_image",
        ),
        (
            "url-safe base64 with a stray %",
            json,
            br#"{"image":"aGV%bG8-_w"}"#.to_vec(),
            400,
            "invalid_base64",
        ),
        (
            "unknown content type",
            "application/x-www-form-urlencoded",
            b"image=1".to_vec(),
            415,
            "unsupported_media_type",
        ),
    ];
    let mut failures = Vec::new();
    for (name, content_type, body, status, code) in cases {
        let (got, got_code, json) = post(&server, content_type, body).await;
        eprintln!("{name:<36} {got} {}", got_code.as_deref().unwrap_or("-"));
        if got != status || got_code.as_deref() != Some(code) {
            failures.push(format!(
                "{name}: expected {status} {code}, got {got} {json}"
            ));
        }
        // Messages say what is wrong in words, not the decoder's internals.
        let message = json["error"]["message"].as_str().unwrap_or_default();
        if message.contains("Invalid symbol") || message.contains("offset") {
            failures.push(format!("{name}: unclear message {message:?}"));
        }
    }
    // Spellings of a valid image that clients and tools produce: URL-safe base64, an upper-case
    // data: URL, JSON with a UTF-8 byte order mark (with and without a Content-Type).
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&png);
    let standard = base64::engine::general_purpose::STANDARD.encode(&png);
    assert!(
        url_safe.contains(['-', '_']),
        "the test image must use - or _"
    );
    let bom_json = |image: &str| {
        let mut body = b"\xEF\xBB\xBF".to_vec();
        body.extend_from_slice(format!("{{\"image\": \"{image}\"}}").as_bytes());
        body
    };
    let accepted: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "url-safe base64",
            json,
            format!("{{\"image\":\"{url_safe}\"}}").into_bytes(),
        ),
        (
            "DATA:IMAGE/PNG;BASE64, prefix",
            json,
            format!("{{\"image\":\"DATA:IMAGE/PNG;BASE64,{standard}\"}}").into_bytes(),
        ),
        ("json with a byte order mark", json, bom_json(&standard)),
        (
            "json with a byte order mark, no content type",
            "",
            bom_json(&url_safe),
        ),
    ];
    for (name, content_type, body) in accepted {
        let (got, _, json) = post(&server, content_type, body).await;
        eprintln!("{name:<36} {got}");
        if got != 200 || json["predictions"].as_array().map(Vec::len) != Some(3) {
            failures.push(format!(
                "{name}: expected 200 with predictions, got {got} {json}"
            ));
        }
    }
    // Oversized bodies, declared and chunked (the server drains them, so reqwest gets its 413
    // although it writes the whole body before reading).
    let big = vec![0u8; 5 * 1024 * 1024];
    let (got, got_code, _) = post(&server, "image/png", big.clone()).await;
    if (got, got_code.as_deref()) != (413, Some("body_too_large")) {
        failures.push(format!("declared 5 MB body: got {got} {got_code:?}"));
    }
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![0u8; 64 * 1024])).collect();
    let streamed = client()
        .post(server.url("/classify"))
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The server drains the rest of the stream before its 413, so the answer arrives.
    match streamed {
        Ok(response) if response.status().as_u16() == 413 => {}
        Ok(response) => failures.push(format!("chunked 5 MB body: got {}", response.status())),
        Err(e) => failures.push(format!("chunked 5 MB body: no answer ({e})")),
    }
    // Header-level abuse answered by hyper itself.
    let server_ref = &server;
    let header_cases = tokio::task::spawn_blocking({
        let addr = server_ref.addr;
        move || {
            let huge_header = format!("X-Big: {}\r\n", "a".repeat(1024 * 1024));
            let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
            let send = |path: &str, extra: &str, body: &[u8]| {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .expect("timeout");
                let mut request = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{extra}\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(body);
                // The server may close while we are still writing: only the answer matters.
                let _ = stream.write_all(&request);
                raw_exchange(&mut stream, b"")
                    .map(|r| (r.status, r.header("x-request-id").map(str::to_string)))
                    .unwrap_or((0, None))
            };
            let long_uri = format!("/classify?{}", "q".repeat(70_000));
            vec![
                ("1 MB header", send("/classify", &huge_header, b"x")),
                ("500 headers", send("/classify", &many_headers, b"x")),
                ("70 KB URI", send(&long_uri, "", b"x")),
                (
                    "malformed header line",
                    send("/classify", "no colon here\r\n", b"x"),
                ),
            ]
        }
    })
    .await
    .expect("header cases");
    for (name, (status, request_id)) in header_cases {
        eprintln!("{name:<36} {status} {request_id:?}");
        if !(400..500).contains(&status) {
            failures.push(format!(
                "{name}: expected a 4xx from the HTTP layer, got {status}"
            ));
        }
        // hyper's own answer carries a request id too, and the log names it.
        match request_id {
            Some(id) if id.starts_with("local-") => {
                let logged = server.wait_for_output(|o| o.contains(&id), 10);
                if !logged {
                    failures.push(format!("{name}: request id {id} not in the log"));
                }
            }
            other => failures.push(format!("{name}: x-request-id {other:?}")),
        }
    }
    let bad_chunk = raw_post(&server, "Content-Type: image/png\r\n", b"");
    eprintln!(
        "empty raw body                       {} {}",
        bad_chunk.status,
        code_of(&bad_chunk)
    );
    if (bad_chunk.status, code_of(&bad_chunk).as_str()) != (400, "empty_body") {
        failures.push(format!("empty raw body: got {}", bad_chunk.status));
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        server.output()
    );
    let (status, _, body) = post(
        &server,
        "image/png",
        crate::images::encode(64, 64, ImageFormat::Png),
    )
    .await;
    assert_eq!(status, 200, "server no longer classifies: {body}");
    assert!(
        !server.output().contains("panicked"),
        "a handler panicked:\n{}",
        server.output()
    );
}

/// A client that writes its whole request before reading (reqwest, wrk, Python `requests`) must
/// get the 413 for a body declared over the limit, not a reset connection: the server drains the
/// unread body before answering (src/http/oversize.rs). 16 MB is far more than loopback's
/// socket buffers, so without the drain `write_all` fails with EPIPE / ECONNRESET; a chunked
/// upload that runs over the limit is drained the same way. With
/// `Expect: 100-continue` the client sends no body: the 413 comes at once, with no `100`.
#[test]
fn oversized_uploads_get_their_413_even_when_the_client_writes_before_reading() {
    let server = Spawned::start(&["--max-body-bytes", "1048576"], &[]);
    server.wait_ready();
    let body = vec![0u8; 16 * 1024 * 1024];
    for content_type in ["image/png", "application/json"] {
        let response = raw_post(&server, &format!("Content-Type: {content_type}\r\n"), &body);
        assert_eq!(
            (response.status, code_of(&response).as_str()),
            (413, "body_too_large"),
            "{content_type}"
        );
    }
    let multipart = format!(
        "Content-Type: {}\r\n",
        crate::support::multipart_content_type()
    );
    let response = raw_post(&server, &multipart, &body);
    assert_eq!(
        (response.status, code_of(&response).as_str()),
        (413, "body_too_large")
    );

    let mut chunked =
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = raw(&server, &chunked);
    assert_eq!(
        (response.status, code_of(&response).as_str()),
        (413, "body_too_large"),
        "chunked upload without a Content-Length"
    );

    let head = "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
                Content-Length: 16777216\r\nExpect: 100-continue\r\n\r\n";
    let response = raw(&server, head.as_bytes());
    assert_eq!(
        (response.status, code_of(&response).as_str()),
        (413, "body_too_large"),
        "Expect: 100-continue must get the 413 without sending the body"
    );
}

/// A multipart body of `n` empty text fields (none named `image`).
fn many_fields(n: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..n {
        body.extend_from_slice(
            format!("--zz\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\n\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(b"--zz--\r\n");
    body
}

/// A request for `/classify` with `extra` header lines and `body`.
fn classify_request(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\
         Content-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// `admitted` of `/healthz`: requests holding a place in the pool (running or waiting).
fn admitted(server: &Spawned) -> u64 {
    let response = raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["admitted"].as_u64())
        .expect("admitted in /healthz")
}

/// A CPU bomb stops costing once its client has gone or its deadline has passed, and the CPU
/// goes to the next request. The scan limit is raised out of the way so that the bomb (a
/// 4096x4096 progressive JPEG of 60 001 scans, 2.4 MB) is really decoded, on the reduced-size
/// path: minutes of CPU if let run (its 30 001-scan half took 63 s of CPU in the release
/// build, docs/performance.md). Two of them occupy both workers; without cancellation the next
/// request waits for one to finish. The bounds compare against the same request on the idle
/// server plus one second, and against a small fraction of the bomb's own cost: a cancelled
/// decode stops at its next read, within one scan (about 2 ms at this size), so neither bound
/// is tight.
#[test]
fn abandoned_and_late_bombs_stop_and_free_the_workers() {
    let server = Spawned::start(&["--workers", "2", "--max-jpeg-scans", "1000000"], &[]);
    server.wait_ready();
    let bomb = crate::images::jpeg_scan_bomb(4096, 60_000);
    let normal = crate::images::encode(640, 480, ImageFormat::Jpeg);
    let timed_normal = || {
        let started = Instant::now();
        let response = raw(&server, &classify_request("", &normal));
        assert_eq!(response.status, 200, "{}", server.output());
        started.elapsed()
    };
    timed_normal(); // warm
    let idle = timed_normal();

    // Two bombs sent whole, then abandoned while they are being decoded.
    let streams: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            stream
                .write_all(&classify_request("", &bomb))
                .expect("send bomb");
            stream
        })
        .collect();
    let started = Instant::now();
    while admitted(&server) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the bombs were never admitted:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(streams);
    let after = timed_normal();
    eprintln!("normal request: idle {idle:?}, after two abandoned bombs {after:?}");
    assert!(
        after < idle + Duration::from_secs(1),
        "a normal request took {after:?} after two abandoned bombs (idle: {idle:?})\n{}",
        server.output()
    );
    assert!(
        server.wait_for_output(|o| o.matches("decoding stopped").count() >= 2, 10),
        "the abandoned decodes did not stop:\n{}",
        server.output()
    );
    assert_eq!(admitted(&server), 0);

    // Late: the same bomb with a 2 s function timeout is answered once the timeout passes.
    let started = Instant::now();
    let late = raw(
        &server,
        &classify_request("x-fc-function-timeout: 2\r\n", &bomb),
    );
    let took = started.elapsed();
    eprintln!(
        "bomb with a 2 s function timeout: {} after {took:?}",
        late.status
    );
    assert_eq!(
        (late.status, code_of(&late).as_str()),
        (503, "deadline_exceeded"),
        "{}",
        server.output()
    );
    assert!(
        took < Duration::from_secs(8),
        "answered after {took:?}, the deadline was 2 s"
    );
    let after = timed_normal();
    assert!(after < idle + Duration::from_secs(1), "{after:?}");
    assert!(!server.output().contains("panicked"), "{}", server.output());
}
