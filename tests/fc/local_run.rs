//! Local run with missing weights, through the real binary: `serve` downloads
//! a missing model once (sha256-checked, progress as log lines when stderr is not a terminal),
//! and when it cannot — download refused, or `--offline` — it stays up and answers 503
//! `model_not_ready` with a message saying what to do next.
//!
//! The "checkpoint" served here is the tiny TorchVision-format fixture
//! `tests/fixtures/checkpoints/resnet18_tiny.pth` (every ResNet-18 tensor, constant values), so
//! the full download → verify → convert → load path runs without internet.

use crate::support::ResponseExt;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::support::Spawned;
use sha2::{Digest, Sha256};

const URL_ENV: &str = "RESNET18_FC_MODEL_URL";
const SHA256_ENV: &str = "RESNET18_FC_MODEL_SHA256";

fn checkpoint() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints/resnet18_tiny.pth");
    std::fs::read(path).expect("fixture checkpoint")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A one-file HTTP server on 127.0.0.1:0 answering every GET with `body`; counts the requests.
fn serve_file(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let body = Arc::new(body);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = Arc::clone(&body);
            thread::spawn(move || answer(stream, &body));
        }
    });
    (format!("http://{addr}/models/resnet18.pth"), hits)
}

fn answer(mut stream: TcpStream, body: &[u8]) {
    if !crate::support::read_request_head(&mut stream) {
        return;
    }
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(body);
}

/// A loopback URL nobody listens on (the port was bound, then released): connection refused.
fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/models/resnet18.pth")
}

fn start(model: &Path, extra: &[&str], url: &str, sha256: &str) -> Spawned {
    Spawned::start_with_model(model, extra, &[(URL_ENV, url), (SHA256_ENV, sha256)])
}

fn model_path(dir: &Path) -> PathBuf {
    dir.join("model").join("resnet18.safetensors")
}

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = crate::support::client()
        .get(url)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json_body().await)
}

async fn classify(server: &Spawned) -> (u16, serde_json::Value) {
    let response = crate::support::client()
        .post(server.url("/classify"))
        .header("content-type", "image/png")
        .body(crate::support::png(64, 48))
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json_body().await)
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

/// Starts a server whose weights are missing from a fresh temporary model dir and waits until it
/// has given up loading them. Returns the dir (keep it alive), the model path and the server.
fn start_without_weights(
    extra: &[&str],
    url: &str,
    sha256: &str,
) -> (tempfile::TempDir, PathBuf, Spawned) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model_path(dir.path());
    let server = start(&model, extra, url, sha256);
    assert!(
        server.wait_for_output(|o| o.contains("model not loaded"), 120),
        "{}",
        server.output()
    );
    (dir, model, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_weights_are_downloaded_once_with_progress_lines_then_served() {
    let body = checkpoint();
    let (url, hits) = serve_file(body.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model_path(dir.path());

    let mut first = start(&model, &[], &url, &sha256_hex(&body));
    first.wait_ready();
    let output = first.output();
    assert_mentions(
        &output,
        &[
            "weights missing: downloading them once",
            &format!("downloading weights: {0}/{0} bytes (100%)", body.len()),
            "weights downloaded, verified and installed",
        ],
    );
    assert!(model.is_file(), "model installed at {}", model.display());
    assert!(model.with_file_name("MANIFEST").is_file());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let (status, health) = get_json(&first.url("/healthz")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ready");
    first.terminate();
    assert!(first.wait_exit(30).is_some(), "first server stopped");

    // Second start: the weights are there, nothing is downloaded.
    let second = start(&model, &[], &url, &sha256_hex(&body));
    second.wait_ready();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "downloaded only once");
    assert!(
        !second.output().contains("downloading weights"),
        "{}",
        second.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_download_answers_503_with_the_next_steps() {
    let (_dir, model, server) =
        start_without_weights(&[], &refused_url(), &sha256_hex(b"anything"));

    let (status, health) = get_json(&server.url("/healthz")).await;
    assert_eq!(status, 503, "{health}");
    let message = health["error"].as_str().expect("error message").to_owned();
    let remedy = health["remedy"].as_str().expect("remedy").to_owned();
    let model_text = model.display().to_string();
    let dir_text = model.parent().expect("dir").display().to_string();
    assert_mentions(
        &message,
        &[&model_text, "could not be downloaded", "Connection refused"],
    );
    assert_mentions(
        &remedy,
        &[
            &format!("resnet18-fc fetch-model --model-dir {dir_text}"),
            "resnet18-fc convert",
            "--model <file>",
            "--offline",
        ],
    );

    let (status, body) = classify(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "model_not_ready");
    let classify_message = body["error"]["message"].as_str().expect("message");
    assert_mentions(classify_message, &[&model_text]);
    let classify_remedy = body["error"]["remedy"].as_str().expect("remedy");
    assert_mentions(classify_remedy, &["fetch-model"]);
    assert!(!model.exists(), "nothing installed");
    assert!(
        !model.parent().expect("dir").exists(),
        "no empty model dir left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_with_the_wrong_sha256_is_refused_and_not_installed() {
    let body = checkpoint();
    let (url, hits) = serve_file(body.clone());
    let (_dir, model, server) = start_without_weights(&[], &url, &"0".repeat(64));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let (status, health) = get_json(&server.url("/healthz")).await;
    assert_eq!(status, 503, "{health}");
    let message = health["error"].as_str().expect("error message");
    assert_mentions(
        message,
        &[
            "sha256 mismatch",
            &sha256_hex(&body),
            "nothing was installed",
        ],
    );
    let remedy = health["remedy"].as_str().expect("remedy");
    assert_mentions(remedy, &["fetch-model"]);
    assert!(!model.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_never_connects_and_names_the_file_and_the_ways_to_get_it() {
    let body = checkpoint();
    let (url, hits) = serve_file(body.clone());
    let (_dir, model, server) = start_without_weights(&["--offline"], &url, &sha256_hex(&body));
    let (status, body_json) = classify(&server).await;
    assert_eq!(status, 503, "{body_json}");
    assert_eq!(body_json["error"]["code"], "model_not_ready");
    let message = body_json["error"]["message"].as_str().expect("message");
    assert_mentions(
        message,
        &[&model.display().to_string(), "downloads are disabled"],
    );
    let remedy = body_json["error"]["remedy"].as_str().expect("remedy");
    assert_mentions(
        remedy,
        &[
            "resnet18-fc fetch-model",
            "--model <file>",
            "start without --offline",
            "scripts/package.sh",
            "synthetic_weights",
        ],
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "offline made no request");
    assert!(!model.exists());
}
