//! The real binary as FC runs it: log markers on stdout with the request id (the `End` marker
//! even when the client leaves first), the request id on every log line of a request and in the
//! `x-request-id` header of every answer, no credential (from headers or environment) anywhere
//! in the captured stdout/stderr or in any response, and a concise `model_not_ready` whose
//! remedy is logged once.

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// Credential values injected through the environment and through FC headers.
const ENV_KEY_ID: &str = "STS.EnvKeyId4Q9rT2";
const ENV_SECRET: &str = "EnvSecretZx81LmQpWv";
const ENV_TOKEN: &str = "CAISEnvTokenKk3Jd77Hs";
const HDR_KEY_ID: &str = "STS.HdrKeyIdP0u8Yc";
const HDR_SECRET: &str = "HdrSecretNn5Rb2EeTa";
const HDR_TOKEN: &str = "CAISHdrTokenQw6Ve1Cx";
const SECRETS: [&str; 6] = [
    ENV_KEY_ID, ENV_SECRET, ENV_TOKEN, HDR_KEY_ID, HDR_SECRET, HDR_TOKEN,
];

/// Request id of the `GET /` sent after the table.
const PAGE_ID: &str = "1-aaaa0005-page";

struct Sent {
    request_id: &'static str,
    control_path: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    want_status: u16,
}

#[tokio::test]
async fn markers_request_ids_and_no_secrets_in_logs_or_responses() {
    let server = Spawned::start(
        &[],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", ENV_KEY_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ENV_SECRET),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", ENV_TOKEN),
            // Debug level too, so more lines must carry the request id.
            ("RUST_LOG", "debug"),
        ],
    );
    server.wait_ready();
    let ready_at = server.output().len();
    let classify_json = json!({"image": STANDARD.encode(png(40, 30))}).to_string();
    let requests = vec![
        Sent {
            request_id: "1-aaaa0001-http",
            control_path: "/http-invoke",
            path: "/classify",
            content_type: "image/png",
            body: png(40, 30),
            want_status: 200,
        },
        Sent {
            request_id: "1-aaaa0002-invoke",
            control_path: "/invoke",
            path: "/invoke",
            content_type: "application/octet-stream",
            body: classify_json.into_bytes(),
            want_status: 200,
        },
        Sent {
            request_id: "1-aaaa0003-badinvoke",
            control_path: "/invoke",
            path: "/invoke",
            content_type: "application/octet-stream",
            body: b"{broken".to_vec(),
            // Final (the same bytes fail again): 200 + x-fc-status 200, error in the body.
            want_status: 200,
        },
        Sent {
            request_id: "1-aaaa0004-init",
            control_path: "/initialize",
            path: "/initialize",
            content_type: "application/octet-stream",
            body: Vec::new(),
            want_status: 200,
        },
    ];
    let http = client();
    for sent in &requests {
        let response = http
            .post(server.url(sent.path))
            .header("content-type", sent.content_type)
            .header("x-fc-request-id", sent.request_id)
            .header("x-fc-control-path", sent.control_path)
            .header("x-fc-access-key-id", HDR_KEY_ID)
            .header("x-fc-access-key-secret", HDR_SECRET)
            .header("x-fc-security-token", HDR_TOKEN)
            .body(sent.body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), sent.want_status);
        assert_eq!(response.headers()["x-request-id"], sent.request_id);
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.expect("body");
        assert!(body.contains(sent.request_id), "{body}");
        for secret in SECRETS {
            assert!(!body.contains(secret) && !headers.contains(secret));
        }
    }
    // The web page carries its request id too.
    let page = http
        .get(server.url("/"))
        .header("x-fc-request-id", PAGE_ID)
        .header("x-fc-control-path", "/http-invoke")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["x-request-id"], PAGE_ID);
    assert!(server.wait_for_output(
        |o| o.contains(&format!("FC Invoke End RequestId: {PAGE_ID}")),
        30
    ));
    let last_end = "FC Initialize End RequestId: 1-aaaa0004-init";
    assert!(server.wait_for_output(|o| o.contains(last_end), 30));
    let output = server.output();

    for secret in SECRETS {
        assert!(
            !output.contains(secret),
            "secret {secret} leaked:\n{output}"
        );
    }
    let lines: Vec<&str> = output.lines().collect();
    for sent in &requests {
        let phase = if sent.control_path == "/initialize" {
            "Initialize"
        } else {
            "Invoke"
        };
        let start = format!("FC {phase} Start RequestId: {}", sent.request_id);
        let end = format!("FC {phase} End RequestId: {}", sent.request_id);
        let start_at = lines.iter().position(|l| *l == start);
        let end_at = lines.iter().position(|l| *l == end);
        assert!(
            matches!((start_at, end_at), (Some(s), Some(e)) if s < e),
            "markers for {} missing or out of order:\n{output}",
            sent.request_id
        );
    }
    // After the model was ready, every log line belongs to one of the requests: a marker or a
    // tracing line inside the request span.
    let after_ready = &output[ready_at..];
    let mut checked = 0;
    for line in after_ready.lines().filter(|l| !l.is_empty()) {
        let owner = requests.iter().find(|s| line.contains(s.request_id));
        assert!(
            owner.is_some() || line.contains(PAGE_ID),
            "log line without a request id: {line:?}"
        );
        checked += 1;
    }
    // 4 requests × (2 markers + at least the "answered" line).
    assert!(checked >= 12, "only {checked} lines:\n{after_ready}");
}

#[tokio::test]
async fn offline_without_weights_the_server_stays_up_and_answers_503() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("resnet18.safetensors");
    let server = Spawned::start_with_model(&missing, &["--offline"], &[]);
    assert!(server.wait_for_output(|o| o.contains("model not loaded"), 60));
    for _ in 0..3 {
        let response = client()
            .post(server.url("/classify"))
            .header("content-type", "image/png")
            .body(png(16, 16))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        let body: serde_json::Value = response.json_body().await;
        assert_eq!(body["error"]["code"], "model_not_ready");
        // One concise sentence; the ways out are a field of their own.
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("resnet18.safetensors"), "{message}");
        assert!(!message.contains("fetch-model"), "{message}");
        let remedy = body["error"]["remedy"].as_str().expect("remedy");
        assert!(remedy.contains("fetch-model"), "{remedy}");
    }
    let health = client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 503);
    assert!(!missing.exists(), "offline mode must not create the model");
    // The log has the remedy once (with the start-up failure), not once per refused request.
    assert!(server.wait_for_output(|o| o.matches("FC Invoke End").count() == 4, 10));
    let output = server.output();
    assert_eq!(output.matches("synthetic_weights").count(), 1, "{output}");
    assert_eq!(
        output.matches("code=\"model_not_ready\"").count(),
        3,
        "{output}"
    );
}

/// A client that sends half a body and leaves: its request future is dropped, and the `End`
/// marker must still follow its `Start` (FC's console pairs them).
#[test]
fn a_client_that_leaves_mid_body_still_gets_its_end_marker() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        Spawned::start_with_model(&dir.path().join("none.safetensors"), &["--offline"], &[]);
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream
        .write_all(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nx-fc-request-id: 1-gone-1\r\n\
              Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n0123456789",
        )
        .expect("write");
    assert!(
        server.wait_for_output(|o| o.contains("FC Invoke Start RequestId: 1-gone-1"), 30),
        "{}",
        server.output()
    );
    drop(stream);
    assert!(
        server.wait_for_output(|o| o.contains("FC Invoke End RequestId: 1-gone-1"), 30),
        "no End marker after the client left:\n{}",
        server.output()
    );
    // Still serving.
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    let health =
        raw_exchange(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("healthz");
    assert_eq!(health.status, 503, "{health:?}");
    assert!(health.header("x-request-id").is_some(), "{health:?}");
}

#[tokio::test]
async fn without_a_subcommand_it_serves_with_the_limit_flags_applied() {
    let args: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        "0".into(),
        "--model".into(),
        model_file().into(),
        "--max-body-bytes".into(),
        "2048".into(),
        "--max-pixels".into(),
        "1000".into(),
    ];
    let server = Spawned::start_args(&args, &[]);
    server.wait_ready();
    let post = |body: Vec<u8>| {
        client()
            .post(server.url("/classify"))
            .header("content-type", "image/png")
            .body(body)
            .send()
    };
    let code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json_body().await;
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    let too_big = code(post(vec![0u8; 3000]).await.expect("send")).await;
    assert_eq!(too_big, (413, "body_too_large".to_string()));
    let too_many_pixels = code(post(png(40, 30)).await.expect("send")).await;
    assert_eq!(too_many_pixels, (413, "image_too_large".to_string()));
    let fine = code(post(png(20, 20)).await.expect("send")).await;
    assert_eq!(fine, (200, String::new()));
}
