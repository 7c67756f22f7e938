//! OSS upload events end to end against the local OSS-compatible server, with the real
//! `Classifier` on synthetic weights: the three payloads of docs/function-compute.md §2
//! (tests/data/oss_event_*.json: (a) the FC template, (b) a captured PostObject from cn-beijing,
//! (c) a real ap-south-1 event for a 15-byte text file), the trigger-loop guard, idempotent
//! re-delivery, permanent versus transient failures.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::OSS_EVENT_TEMPLATE as TEMPLATE;
use crate::support::oss_server::{Fault, OssTestServer, ServerKeys};
use bytes::Bytes;
use http::Method;
use resnet18_fc::classifier::{Classifier, ClassifyError, Prediction, StageTimes};
use resnet18_fc::oss::event::{ClassifyFailure, EventReport, RecordStatus, process_event};
use resnet18_fc::oss::{Access, Credentials, OssConfig, OssService};
use resnet18_fc::preprocess::Limits;
use serde::Serialize;
use serde_json::Value;

const POSTOBJECT: &str = include_str!("../data/oss_event_postobject_beijing.json");
const TEXT_FILE: &str = include_str!("../data/oss_event_text_ap_south.json");
const TOP_K: usize = 3;

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        Classifier::from_source(crate::support::weights(), "synthetic", Limits::default())
            .expect("synthetic classifier")
    })
}

/// What the callback hands back: the fields a result object carries about the model.
#[derive(Serialize)]
struct Output {
    model: &'static str,
    predictions: Vec<Prediction>,
    timing_ms: StageTimes,
}

async fn classify(bytes: Bytes) -> Result<Output, ClassifyFailure> {
    let outcome = tokio::task::spawn_blocking(move || classifier().classify(&bytes, TOP_K))
        .await
        .map_err(|e| ClassifyFailure::Unavailable(e.to_string()))?;
    match outcome {
        Ok(p) => Ok(Output {
            model: "resnet18",
            predictions: p.classes,
            timing_ms: p.timing,
        }),
        Err(e @ ClassifyError::Image(_)) => Err(ClassifyFailure::Rejected {
            code: e.code().into(),
            message: e.to_string(),
        }),
        Err(e) => Err(ClassifyFailure::Unavailable(e.to_string())),
    }
}

fn image(format: image::ImageFormat, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(80, 60, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(3).wrapping_add(seed),
            (y as u8).wrapping_mul(4),
            seed,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

/// The predictions the classifier gives for `bytes`, computed directly (not through OSS).
fn expected_predictions(bytes: &[u8]) -> Value {
    let prediction = classifier().classify(bytes, TOP_K).expect("classifiable");
    // Through JSON text, as in the result object (f32 scores print with f32 precision).
    let text = serde_json::to_string(&prediction.classes).expect("json");
    serde_json::from_str(&text).expect("json")
}

fn keys() -> ServerKeys {
    ServerKeys {
        id: "STS.NEventKey".into(),
        secret: "event-secret".into(),
        token: Some("CAIS-event-token".into()),
    }
}

fn access() -> Access {
    let k = keys();
    Access {
        credentials: Some(Credentials::new(&k.id, &k.secret, k.token.as_deref())),
        region: Some("cn-hangzhou".into()),
    }
}

fn service(server: &OssTestServer, extra: &[(&str, &str)]) -> OssService {
    let mut vars: HashMap<String, String> = [
        ("OSS_ENDPOINT", server.endpoint()),
        ("OSS_ALLOWED_HOSTS", server.host_port()),
        ("OSS_READ_TIMEOUT_MS", "400".into()),
        ("OSS_RETRY_BASE_MS", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    OssService::new(OssConfig::from_lookup(|k| vars.get(k).cloned()).expect("config"))
        .expect("service")
}

async fn run(event: &str, oss: &OssService) -> EventReport {
    process_event(event.as_bytes(), &access(), oss, classify)
        .await
        .expect("a valid event")
}

fn result_json(server: &OssTestServer, bucket: &str, key: &str) -> Value {
    let stored = server
        .object(bucket, key)
        .unwrap_or_else(|| panic!("no result object {bucket}/{key}"));
    assert_eq!(stored.content_type.as_deref(), Some("application/json"));
    serde_json::from_slice(&stored.body).expect("result object is JSON")
}

fn assert_timing(v: &Value) {
    for field in ["decode", "preprocess", "inference"] {
        assert!(v["timing_ms"][field].is_f64(), "timing_ms.{field} in {v}");
    }
    assert!(v["fetch_ms"].as_f64().is_some_and(|t| t >= 0.0), "{v}");
    assert!(v["processing_ms"].as_f64().is_some_and(|t| t >= 0.0), "{v}");
}

/// Everything but durations, for comparing two runs.
fn without_timing(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        for field in ["timing_ms", "fetch_ms", "processing_ms"] {
            map.remove(field);
        }
    }
    v
}

#[tokio::test]
async fn fc_template_event_writes_the_result_next_to_the_upload() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    let jpeg = image(image::ImageFormat::Jpeg, 10);
    server.put("testbucket", "image/a.jpg", jpeg.clone());
    let oss = service(&server, &[]);

    let report = run(TEMPLATE, &oss).await;
    assert!(report.succeeded());
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.records[0].status, RecordStatus::Classified);
    assert_eq!(
        report.records[0].result.as_deref(),
        Some("testbucket/results/image/a.jpg.json")
    );

    let v = result_json(&server, "testbucket", "results/image/a.jpg.json");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["model"], "resnet18");
    assert_eq!(v["source"]["bucket"], "testbucket");
    assert_eq!(v["source"]["key"], "image/a.jpg");
    assert_eq!(v["source"]["eTag"], "688A7BF4F233DC9C88A80BF985AB7329");
    assert_eq!(v["source"]["size"], 122539);
    assert_eq!(v["source"]["eventName"], "ObjectCreated:PutObject");
    assert_eq!(v["predictions"], expected_predictions(&jpeg));
    assert_eq!(v["predictions"].as_array().map(Vec::len), Some(TOP_K));
    assert_timing(&v);
    // Signed for the bucket's region (cn-shanghai, from the event), as the server checked.
    assert!(server.requests().iter().all(|r| r.verdict.is_ok()));
}

#[tokio::test]
async fn captured_postobject_event_is_classified() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testjian", "cn-beijing");
    let png = image(image::ImageFormat::Png, 200);
    server.put("testjian", "timg.jpg", png.clone());
    let oss = service(&server, &[]);

    let report = run(POSTOBJECT, &oss).await;
    assert!(report.succeeded());
    assert_eq!(report.records[0].status, RecordStatus::Classified);
    let v = result_json(&server, "testjian", "results/timg.jpg.json");
    assert_eq!(v["source"]["eTag"], "137138904F2E18D307D04EB38EA44CDA");
    assert_eq!(v["source"]["size"], 12990);
    assert_eq!(v["source"]["eventName"], "ObjectCreated:PostObject");
    assert_eq!(v["predictions"], expected_predictions(&png));
    assert_timing(&v);
}

#[tokio::test]
async fn a_text_file_gets_a_permanent_error_result() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("storage-bucket-20190329", "ap-south-1");
    let text = b"Hello OSS text\n";
    assert_eq!(text.len(), 15, "the event says 15 bytes");
    server.put("storage-bucket-20190329", "test.txt", &text[..]);
    let oss = service(&server, &[]);

    let report = run(TEXT_FILE, &oss).await;
    assert!(
        report.succeeded(),
        "a permanent failure must not make FC retry"
    );
    assert_eq!(report.records[0].status, RecordStatus::Rejected);
    assert_eq!(
        report.records[0].code.as_deref(),
        Some("unsupported_image_type")
    );
    let v = result_json(&server, "storage-bucket-20190329", "results/test.txt.json");
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"]["code"], "unsupported_image_type");
    assert_eq!(v["source"]["key"], "test.txt");
    assert_eq!(v["source"]["eTag"], "032447899E6C18DD3E30388764C0FF21");
    assert_eq!(v["source"]["size"], 15);
    assert!(v.get("predictions").is_none(), "{v}");
}

#[tokio::test]
async fn keys_under_the_result_prefix_are_skipped_without_any_request() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    let oss = service(&server, &[]);
    let event = TEMPLATE.replace("\"image/a.jpg\"", "\"results/image/a.jpg.json\"");
    let report = run(&event, &oss).await;
    assert!(report.succeeded());
    assert_eq!(report.records[0].status, RecordStatus::Skipped);
    assert_eq!(
        report.records[0].code.as_deref(),
        Some("under_result_prefix")
    );
    assert_eq!(server.connections(), 0);
    assert!(server.keys("testbucket").is_empty());
}

#[tokio::test]
async fn non_creation_events_are_skipped() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    let oss = service(&server, &[]);
    let event = TEMPLATE.replace("ObjectCreated:PutObject", "ObjectRemoved:DeleteObject");
    let report = run(&event, &oss).await;
    assert_eq!(report.records[0].status, RecordStatus::Skipped);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn redelivery_rewrites_one_identical_result() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    let jpeg = image(image::ImageFormat::Jpeg, 99);
    server.put("testbucket", "image/a.jpg", jpeg);
    let oss = service(&server, &[]);

    run(TEMPLATE, &oss).await;
    let first = result_json(&server, "testbucket", "results/image/a.jpg.json");
    run(TEMPLATE, &oss).await;
    let second = result_json(&server, "testbucket", "results/image/a.jpg.json");
    assert_eq!(
        server.keys("testbucket"),
        ["image/a.jpg", "results/image/a.jpg.json"]
    );
    let puts = server
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 2, "both deliveries wrote the same key");
    // Same content; only the measured durations may differ between runs.
    assert_eq!(without_timing(first), without_timing(second));
}

#[tokio::test]
async fn odd_keys_round_trip_through_events() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    let key = "uploads/测试 1+1.jpg";
    let png = image(image::ImageFormat::Png, 5);
    server.put("testbucket", key, png.clone());
    let oss = service(&server, &[]);
    let event = TEMPLATE.replace("\"image/a.jpg\"", &format!("\"{key}\""));
    let report = run(&event, &oss).await;
    assert_eq!(report.records[0].status, RecordStatus::Classified);
    let v = result_json(&server, "testbucket", "results/uploads/测试 1+1.jpg.json");
    assert_eq!(v["source"]["key"], key);
    assert_eq!(v["predictions"], expected_predictions(&png));
}

#[tokio::test]
async fn a_percent_encoded_event_key_falls_back_to_the_decoded_key() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    server.put(
        "testbucket",
        "up/a b.png",
        image(image::ImageFormat::Png, 1),
    );
    let oss = service(&server, &[]);
    let event = TEMPLATE.replace("\"image/a.jpg\"", "\"up/a%20b.png\"");
    let report = run(&event, &oss).await;
    assert_eq!(report.records[0].status, RecordStatus::Classified);
    let v = result_json(&server, "testbucket", "results/up/a b.png.json");
    assert_eq!(v["source"]["key"], "up/a b.png");
}

#[tokio::test]
async fn result_bucket_setting_moves_results_elsewhere() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    server.create_bucket("results-bucket", "cn-shanghai");
    server.put(
        "testbucket",
        "image/a.jpg",
        image(image::ImageFormat::Png, 3),
    );
    let oss = service(
        &server,
        &[
            ("RESULT_BUCKET", "results-bucket"),
            ("RESULT_PREFIX", "out/"),
        ],
    );
    let report = run(TEMPLATE, &oss).await;
    assert_eq!(report.records[0].status, RecordStatus::Classified);
    assert_eq!(server.keys("results-bucket"), ["out/image/a.jpg.json"]);
    assert_eq!(server.keys("testbucket"), ["image/a.jpg"]);
}

/// Runs the template event with `fault` injected three times on `method` (every attempt).
async fn run_with_fault(method: Method, fault: Fault) -> (OssTestServer, EventReport) {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    server.put(
        "testbucket",
        "image/a.jpg",
        image(image::ImageFormat::Png, 4),
    );
    for _ in 0..3 {
        server.inject(method.clone(), fault.clone());
    }
    let oss = service(&server, &[]);
    let report = run(TEMPLATE, &oss).await;
    (server, report)
}

#[tokio::test]
async fn oss_5xx_fails_the_invocation_and_writes_nothing() {
    let (server, report) = run_with_fault(Method::GET, Fault::Status(500)).await;
    assert!(!report.succeeded(), "FC must retry");
    assert_eq!(report.records[0].status, RecordStatus::Failed);
    assert_eq!(
        report.records[0].code.as_deref(),
        Some("oss_upstream_error")
    );
    assert_eq!(server.keys("testbucket"), ["image/a.jpg"]);
}

#[tokio::test]
async fn a_stalled_download_fails_the_invocation_and_writes_nothing() {
    let (server, report) =
        run_with_fault(Method::GET, Fault::StallHeaders(Duration::from_secs(30))).await;
    assert!(!report.succeeded());
    assert_eq!(report.records[0].code.as_deref(), Some("oss_timeout"));
    assert_eq!(server.keys("testbucket"), ["image/a.jpg"]);
}

#[tokio::test]
async fn a_truncated_download_writes_nothing() {
    let (server, report) = run_with_fault(Method::GET, Fault::Truncate).await;
    assert!(!report.succeeded());
    assert_eq!(server.keys("testbucket"), ["image/a.jpg"]);
}

#[tokio::test]
async fn a_failing_result_write_fails_the_invocation() {
    let (_server, report) = run_with_fault(Method::PUT, Fault::Status(503)).await;
    assert!(!report.succeeded());
    assert_eq!(report.records[0].status, RecordStatus::Failed);
}

#[tokio::test]
async fn a_vanished_object_gets_an_error_result() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    let oss = service(&server, &[]);
    let report = run(TEMPLATE, &oss).await;
    assert!(report.succeeded());
    assert_eq!(report.records[0].status, RecordStatus::Rejected);
    let v = result_json(&server, "testbucket", "results/image/a.jpg.json");
    assert_eq!(v["error"]["code"], "oss_not_found");
}

#[tokio::test]
async fn records_of_one_event_are_handled_independently() {
    let server = OssTestServer::start(keys()).await;
    server.create_bucket("testbucket", "cn-shanghai");
    server.put(
        "testbucket",
        "image/a.jpg",
        image(image::ImageFormat::Png, 8),
    );
    let oss = service(&server, &[]);
    let mut event: Value = serde_json::from_str(TEMPLATE).expect("fixture");
    let mut skipped = event["events"][0].clone();
    skipped["oss"]["object"]["key"] = "results/x.json".into();
    let mut invalid = event["events"][0].clone();
    invalid["oss"]["bucket"]["name"] = "Bad_Bucket".into();
    if let Some(records) = event["events"].as_array_mut() {
        records.push(skipped);
        records.push(invalid);
    }
    let report = run(&event.to_string(), &oss).await;
    let statuses: Vec<RecordStatus> = report.records.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            RecordStatus::Classified,
            RecordStatus::Skipped,
            RecordStatus::Invalid
        ]
    );
    assert!(report.succeeded());
}
