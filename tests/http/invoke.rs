//! Event invocations (`/invoke`) and the plug-in seams, over loopback against an in-process
//! server: a classify JSON sent as octet-stream answers like `/classify`; failures a retry may
//! fix carry `x-fc-status: 404`, failures of the event itself `x-fc-status: 200` with the error
//! body (FC does not retry them); `{"events": [...]}` reaches an `EventHandler`;
//! `{"url": ...}` reaches an `ImageFetcher`; control-path dispatch keeps HTTP-trigger clients
//! away from the hooks, and a request with two control paths is refused.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::StatusCode as HttpStatus;
use reqwest::StatusCode;
use resnet18_fc::engine::{ClassifyOptions, Engine, Image};
use resnet18_fc::fc::FcContext;
use resnet18_fc::http::{ApiError, BoxFuture, EventHandler, ImageFetcher};
use resnet18_fc::preprocess::Limits;
use serde_json::{Value, json};

/// Counts OSS-like event records and classifies an image named in each record's `key`.
struct CountingEvents;

impl EventHandler for CountingEvents {
    fn handle<'a>(
        &'a self,
        event: Bytes,
        context: &'a FcContext,
        engine: &'a Engine,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            let parsed: Value = serde_json::from_slice(&event)
                .map_err(|e| ApiError::bad_request("bad_event", e.to_string()))?;
            let records = parsed["events"].as_array().cloned().unwrap_or_default();
            let mut tops = Vec::new();
            for _ in &records {
                let image = Image::Encoded(Bytes::from(png(24, 24)));
                let result = engine.classify(image, ClassifyOptions::top_k(1)).await?;
                tops.push(result.predictions[0].index);
            }
            Ok(json!({"records": records.len(), "top": tops, "request_id": context.request_id}))
        })
    }
}

/// Serves `test://ok` with a PNG, fails `test://down` with 503 `upstream_down` and everything
/// else with 404 `object_not_found`.
struct FakeFetcher;

impl ImageFetcher for FakeFetcher {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        _context: &'a FcContext,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>> {
        Box::pin(async move {
            match url {
                "test://ok" => Ok(Bytes::from(png(50, 40))),
                "test://down" => Err(ApiError::new(
                    HttpStatus::SERVICE_UNAVAILABLE,
                    "upstream_down",
                    "try later",
                )),
                _ => Err(ApiError::new(
                    HttpStatus::NOT_FOUND,
                    "object_not_found",
                    format!("{url} does not exist"),
                )),
            }
        })
    }
}

/// Plain server (no plug-ins).
fn plain() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_in_process(server_with_model(options(), Limits::default())))
}

/// Server with both plug-ins.
fn plugged() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let server = server_with_model(options(), Limits::default())
            .with_event_handler(Arc::new(CountingEvents))
            .with_fetcher(Arc::new(FakeFetcher));
        start_in_process(server)
    })
}

struct Answer {
    status: StatusCode,
    fc_status: Option<String>,
    body: Value,
}

async fn send(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut request = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let fc_status = response.fc_status();
    let body = response.json_body().await;
    Answer {
        status,
        fc_status,
        body,
    }
}

const INVOKE: [(&str, &str); 2] = [
    ("x-fc-control-path", "/invoke"),
    ("x-fc-request-id", "1-invoke-test"),
];

#[tokio::test]
async fn invoke_with_octet_stream_classify_json_answers_like_classify() {
    let image = jpeg(70, 50);
    let event = json!({"image": STANDARD.encode(&image), "top_k": 4}).to_string();
    let invoked = send(
        plain(),
        "/invoke",
        &INVOKE,
        "application/octet-stream",
        event.into_bytes(),
    )
    .await;
    let classified = send(plain(), "/classify?top_k=4", &[], "image/jpeg", image).await;
    assert_eq!(invoked.status, StatusCode::OK, "{}", invoked.body);
    assert_eq!(invoked.fc_status.as_deref(), Some("200"));
    assert_eq!(classified.status, StatusCode::OK);
    assert_eq!(invoked.body["model"], "resnet18");
    assert_eq!(invoked.body["request_id"], "1-invoke-test");
    crate::support::assert_same_predictions(
        &invoked.body["predictions"],
        &classified.body["predictions"],
    );
    assert_eq!(invoked.body["predictions"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn invoke_honours_lang_like_classify() {
    let image = jpeg(66, 44);
    let event = json!({"image": STANDARD.encode(&image), "lang": "zh"}).to_string();
    let invoked = send(
        plain(),
        "/invoke",
        &INVOKE,
        "application/octet-stream",
        event.into_bytes(),
    )
    .await;
    let classified = send(plain(), "/classify?lang=zh", &[], "image/jpeg", image).await;
    assert_eq!(invoked.status, StatusCode::OK, "{}", invoked.body);
    assert_eq!(classified.status, StatusCode::OK, "{}", classified.body);
    crate::support::assert_same_predictions(
        &invoked.body["predictions"],
        &classified.body["predictions"],
    );
    let first = &invoked.body["predictions"][0];
    assert_eq!(
        first["label_en"],
        classified.body["predictions"][0]["label_en"]
    );
    assert!(first["label_en"].is_string(), "{first}");
    assert_ne!(first["label"], first["label_en"], "{first}");

    let bad = json!({"image": STANDARD.encode(png(20, 20)), "lang": "de"}).to_string();
    let refused = send(
        plain(),
        "/invoke",
        &INVOKE,
        "application/json",
        bad.into_bytes(),
    )
    .await;
    // A bad `lang` is the body's own fault: a final answer FC does not retry.
    assert_eq!(
        refused.fc_status.as_deref(),
        Some("200"),
        "{}",
        refused.body
    );
    assert_eq!(
        refused.body["error"]["code"], "invalid_lang",
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn local_post_invoke_without_header_is_an_event_too() {
    let event = json!({"image": STANDARD.encode(png(30, 30))}).to_string();
    let answer = send(
        plain(),
        "/invoke",
        &[],
        "application/octet-stream",
        event.into_bytes(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.fc_status.as_deref(), Some("200"));
    assert_eq!(answer.body["predictions"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn invocations_the_event_itself_fails_answer_x_fc_status_200_with_their_error() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "invalid_json"),
        (br#"{"image": "%%%"}"#.to_vec(), "invalid_base64"),
        (br#"{"something": 1}"#.to_vec(), "missing_image"),
        (
            br#"{"events": [{"eventName": "ObjectCreated:PutObject"}]}"#.to_vec(),
            "unsupported_event",
        ),
        (
            json!({"image": STANDARD.encode(b"no image")})
                .to_string()
                .into_bytes(),
            "unsupported_image_type",
        ),
        (Vec::new(), "empty_body"),
    ];
    for (body, code) in cases {
        let answer = send(plain(), "/", &INVOKE, "application/octet-stream", body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.fc_status.as_deref(), Some("200"), "{}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
        assert_eq!(answer.body["request_id"], "1-invoke-test");
    }
    // Through a plug-in: a missing object is final too.
    let body = br#"{"url": "test://missing"}"#.to_vec();
    let answer = send(plugged(), "/invoke", &INVOKE, "text/plain", body).await;
    assert_eq!(answer.fc_status.as_deref(), Some("200"), "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "object_not_found");
}

#[tokio::test]
async fn invocations_a_retry_may_fix_answer_404_with_x_fc_status_404() {
    let answer = send(
        plugged(),
        "/invoke",
        &INVOKE,
        "application/octet-stream",
        br#"{"url": "test://down"}"#.to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert_eq!(answer.fc_status.as_deref(), Some("404"));
    assert_eq!(answer.body["error"]["code"], "upstream_down");
}

/// FC sends `x-fc-control-path` once; with two, neither is trusted (the first used to win, so
/// `/pre-stop` followed by `/http-invoke` stopped the server).
#[tokio::test]
async fn two_control_path_headers_are_refused_and_trigger_nothing() {
    let addr = start_in_process(server_with_model(options(), Limits::default()));
    for pair in [["/pre-stop", "/http-invoke"], ["/http-invoke", "/pre-stop"]] {
        let response = client()
            .get(format!("http://{addr}/pre-stop"))
            .header("x-fc-control-path", pair[0])
            .header("x-fc-control-path", pair[1])
            .header("x-fc-request-id", "1-two-paths")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-request-id"], "1-two-paths");
        let body: Value = response.json_body().await;
        assert_eq!(body["error"]["code"], "duplicate_control_path", "{body}");
    }
    // Still serving: the stop was never requested.
    let answer = send(addr, "/classify", &[], "image/png", png(20, 20)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn events_reach_the_plugged_event_handler() {
    let event = json!({"events": [{"eventName": "ObjectCreated:PutObject"}, {"eventName": "ObjectCreated:PutObject"}]});
    let answer = send(
        plugged(),
        "/invoke",
        &INVOKE,
        "application/octet-stream",
        event.to_string().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.fc_status.as_deref(), Some("200"));
    assert_eq!(answer.body["records"], 2);
    assert_eq!(answer.body["top"].as_array().unwrap().len(), 2);
    assert_eq!(answer.body["request_id"], "1-invoke-test");
}

#[tokio::test]
async fn urls_reach_the_plugged_fetcher_and_its_errors_pass_through() {
    let ok = send(
        plugged(),
        "/classify",
        &[],
        "application/json",
        br#"{"url": "test://ok", "top_k": 2}"#.to_vec(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["predictions"].as_array().unwrap().len(), 2);
    assert!(ok.body["timing_ms"]["fetch"].as_f64().is_some());
    let direct = send(
        plugged(),
        "/classify?top_k=2",
        &[],
        "image/png",
        png(50, 40),
    )
    .await;
    crate::support::assert_same_predictions(&ok.body["predictions"], &direct.body["predictions"]);

    let missing = send(
        plugged(),
        "/classify",
        &[],
        "application/json",
        br#"{"url": "test://missing"}"#.to_vec(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["code"], "object_not_found");
}

#[tokio::test]
async fn http_trigger_requests_cannot_reach_lifecycle_hooks() {
    let http = [("x-fc-control-path", "/http-invoke")];
    let answer = send(
        plain(),
        "/initialize",
        &http,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["error"]["code"], "not_found");
    let answer = send(
        plain(),
        "/invoke",
        &http,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.fc_status, None);
}

#[tokio::test]
async fn initialize_control_path_loads_and_reports_ready() {
    let headers = [
        ("x-fc-control-path", "/initialize"),
        ("x-fc-request-id", "1-init"),
    ];
    let answer = send(
        plain(),
        "/",
        &headers,
        "application/octet-stream",
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "ready");
    assert_eq!(answer.body["request_id"], "1-init");
    assert_eq!(answer.body["model"]["name"], "resnet18");
}
