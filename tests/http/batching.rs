//! Micro-batching end to end over loopback: concurrent `/classify` and `/invoke` requests are
//! merged into one forward pass, each gets exactly the answer it would get alone, a bad image
//! in a burst fails alone, `--batch-max 1` turns batching off, and the flags / environment
//! variables reach the server.
//!
//! How batching is made deterministic without timing: the test server has one inference worker
//! and the test holds it ([`InferencePool::worker`]) while it sends a burst, until every
//! request of the burst has been admitted (`InferencePool::admitted`). Then it lets go: the
//! images are preprocessed one after another, and the forming batch waits (the wait bound is
//! set to minutes) until every admitted request has either queued its image or failed. Batch
//! sizes are read from the batcher's counters ([`Batcher::stats`], also in `/healthz` under
//! `batching`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use resnet18_fc::engine::{BatchOptions, Engine};
use resnet18_fc::preprocess::Limits;
use serde_json::{Value, json};

/// Classes compared per image.
const K: usize = 5;
/// Largest difference allowed between a batched score and the score of the image alone.
const SCORE_TOLERANCE: f32 = 1e-5;

/// A server with one worker and the given batching, plus a handle on its pool and batcher.
fn start(max: usize) -> (SocketAddr, Engine) {
    let options = ServerOptions {
        workers: 1,
        batch: BatchOptions {
            max,
            // Only a bound: the batch is complete long before (see the module doc).
            wait: Duration::from_secs(600),
        },
        ..options()
    };
    let server = server_with_model(options, Limits::default());
    let handle = server.engine().clone();
    (start_in_process(server), handle)
}

/// One request of a burst.
#[derive(Clone)]
struct Request {
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// The image, for classifying it alone (`None` for a bad image).
    image: Option<Vec<u8>>,
}

fn raw(image: Vec<u8>, content_type: &'static str) -> Request {
    Request {
        path: "/classify?top_k=5",
        content_type,
        body: image.clone(),
        image: Some(image),
    }
}

fn json_to(path: &'static str, image: Vec<u8>) -> Request {
    let body = json!({"image": STANDARD.encode(&image), "top_k": K});
    Request {
        path,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        image: Some(image),
    }
}

fn bad(body: Vec<u8>) -> Request {
    Request {
        path: "/classify?top_k=5",
        content_type: "image/png",
        body,
        image: None,
    }
}

/// Sends `requests` at once while the only worker is held, releases it once all are admitted,
/// and returns (status, body) in request order.
async fn burst(addr: SocketAddr, handle: &Engine, requests: &[Request]) -> Vec<(u16, Value)> {
    let held = handle.pool().worker().await.expect("worker");
    let tasks: Vec<_> = requests
        .iter()
        .map(|r| {
            let request = client()
                .post(format!("http://{addr}{}", r.path))
                .header("content-type", r.content_type)
                .body(r.body.clone());
            tokio::spawn(async move {
                let response = request.send().await.expect("send");
                let status = response.status().as_u16();
                (status, response.json_body().await)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while handle.pool().admitted() < requests.len()
        || handle.batcher().stats().preparing < requests.len()
    {
        assert!(
            Instant::now() < deadline,
            "only {} of {} requests were admitted",
            handle.pool().admitted(),
            requests.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(held);
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("request task"));
    }
    results
}

/// Asserts that `body` holds the same top-K classes as `image` classified alone by
/// `Classifier::classify`, scores within [`SCORE_TOLERANCE`].
fn assert_same_as_alone(body: &Value, image: &[u8]) {
    let alone = classifier(Limits::default())
        .classify(image, K)
        .expect("classify alone");
    let predictions = body["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), K, "{body}");
    for (got, want) in predictions.iter().zip(&alone.classes) {
        assert_eq!(got["index"], want.index, "{body}");
        assert_eq!(got["label"], want.label, "{body}");
        assert_eq!(got["rank"], want.rank, "{body}");
        let score = got["score"].as_f64().expect("score") as f32;
        assert!(
            (score - want.score).abs() <= SCORE_TOLERANCE,
            "class {}: batched {score}, alone {}",
            want.index,
            want.score
        );
    }
}

fn sizes(handle: &Engine) -> BTreeMap<usize, u64> {
    handle.batcher().stats().sizes
}

/// Eight different images in five request forms: JPEG and PNG bodies, JSON, `/invoke`.
fn eight_images() -> Vec<Request> {
    vec![
        raw(png(300, 200), "image/png"),
        raw(jpeg(640, 480), "image/jpeg"),
        json_to("/classify", png(224, 224)),
        json_to("/invoke", jpeg(500, 375)),
        raw(png(97, 311), "application/octet-stream"),
        json_to("/invoke", png(1024, 768)),
        raw(jpeg(256, 256), "image/jpeg"),
        json_to("/classify", png(40, 30)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_forward_and_get_the_answers_they_would_get_alone() {
    let (addr, handle) = start(8);
    let requests = eight_images();
    let results = burst(addr, &handle, &requests).await;
    assert_eq!(
        sizes(&handle),
        BTreeMap::from([(8, 1)]),
        "one forward of all 8"
    );
    for ((status, body), request) in results.iter().zip(&requests) {
        assert_eq!(*status, 200, "{body}");
        assert_same_as_alone(body, request.image.as_deref().expect("image"));
    }
    // The shared forward is every request's inference time.
    let inference: Vec<&Value> = results
        .iter()
        .map(|(_, b)| &b["timing_ms"]["inference"])
        .collect();
    assert!(
        inference.iter().all(|t| *t == inference[0]),
        "{inference:?}"
    );
    // The counters are visible in /healthz.
    let health: Value = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("healthz")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("JSON"))
        .expect("body");
    let batching = &health["batching"];
    assert_eq!(batching["max"], 8, "{health}");
    assert_eq!(batching["forwards"], 1, "{health}");
    assert_eq!(batching["images"], 8, "{health}");
    assert_eq!(batching["sizes"], json!({"8": 1}), "{health}");
    assert_eq!(
        (&batching["queued"], &health["admitted"]),
        (&json!(0), &json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_batch_max_is_cut_into_full_batches() {
    let (addr, handle) = start(3);
    let requests = eight_images();
    let results = burst(addr, &handle, &requests).await;
    assert_eq!(sizes(&handle), BTreeMap::from([(2, 1), (3, 2)]));
    for ((status, body), request) in results.iter().zip(&requests) {
        assert_eq!(*status, 200, "{body}");
        assert_same_as_alone(body, request.image.as_deref().expect("image"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_in_a_burst_gets_its_4xx_and_the_others_are_batched_and_answered() {
    let (addr, handle) = start(8);
    let mut truncated = png(64, 64);
    truncated.truncate(truncated.len() / 2);
    let mut requests = eight_images();
    requests[2] = bad(truncated);
    requests[5] = bad(b"definitely not an image".to_vec());
    let results = burst(addr, &handle, &requests).await;
    assert_eq!(
        sizes(&handle),
        BTreeMap::from([(6, 1)]),
        "the 6 good images in one forward"
    );
    for (i, ((status, body), request)) in results.iter().zip(&requests).enumerate() {
        match i {
            2 => assert_eq!(
                (*status, &body["error"]["code"]),
                (400, &json!("invalid_image")),
                "{body}"
            ),
            5 => assert_eq!(
                (*status, &body["error"]["code"]),
                (415, &json!("unsupported_image_type")),
                "{body}"
            ),
            _ => {
                assert_eq!(*status, 200, "{body}");
                assert_same_as_alone(body, request.image.as_deref().expect("image"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_max_one_runs_every_request_in_its_own_forward() {
    let (addr, handle) = start(1);
    let requests = eight_images()[..4].to_vec();
    let results = burst(addr, &handle, &requests).await;
    assert_eq!(sizes(&handle), BTreeMap::from([(1, 4)]));
    for ((status, body), request) in results.iter().zip(&requests) {
        assert_eq!(*status, 200, "{body}");
        assert_same_as_alone(body, request.image.as_deref().expect("image"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_flags_and_environment_variables_configure_the_server() {
    let server = Spawned::start(&["--batch-max", "3", "--batch-wait-ms", "9"], &[]);
    server.wait_ready();
    let batching = server.healthz().await["batching"].clone();
    assert_eq!(
        (&batching["max"], &batching["wait_ms"]),
        (&json!(3), &json!(9))
    );
    drop(server);

    let env = [
        ("RESNET18_FC_BATCH_MAX", "2"),
        ("RESNET18_FC_BATCH_WAIT_MS", "0"),
    ];
    let server = Spawned::start(&[], &env);
    server.wait_ready();
    let batching = server.healthz().await["batching"].clone();
    assert_eq!(
        (&batching["max"], &batching["wait_ms"]),
        (&json!(2), &json!(0))
    );
    let response = client()
        .post(server.url("/classify"))
        .header("content-type", "image/png")
        .body(png(64, 48))
        .send()
        .await
        .expect("classify");
    assert_eq!(response.status().as_u16(), 200);
    let batching = server.healthz().await["batching"].clone();
    assert_eq!(batching["images"], 1, "{batching}");
}

#[test]
fn a_batch_max_of_zero_is_refused_at_startup() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_resnet18-fc"))
        .args(["serve", "--port", "0", "--batch-max", "0"])
        .output()
        .expect("run resnet18-fc");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--batch-max"), "{stderr}");
}
