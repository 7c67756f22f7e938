//! HTTP API of the server, end to end over loopback: every input form of `POST /classify`,
//! `top_k`, every documented error (status + JSON body), limits, 503s, `/healthz` and `GET /`.
//! The server runs in-process on 127.0.0.1:0 with synthetic weights.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use resnet18_fc::classifier::Precision;
use resnet18_fc::engine::FileLoader;
use resnet18_fc::http::CorsPolicy;
use resnet18_fc::preprocess::Limits;
use serde_json::{Value, json};

/// One server shared by the tests of this file.
fn shared() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_in_process(server_with_model(options(), Limits::default())))
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn post(path: &str, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    post_to(shared(), path, content_type, body).await
}

async fn post_to(
    addr: SocketAddr,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = client().post(url(addr, path)).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.expect("send");
    (response.status(), response.json_body().await)
}

async fn post_json(body: Value) -> (StatusCode, Value) {
    post(
        "/classify",
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await
}

/// Asserts the 200 contract shape of an English (default) answer — each prediction exactly
/// `rank`, `index`, `label`, `score` — and returns the predicted class indices.
fn assert_prediction_shape(body: &Value, k: usize) -> Vec<u64> {
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["model", "predictions", "timing_ms", "request_id"]),
        "{body}"
    );
    assert_eq!(body["model"], "resnet18");
    let timing = body["timing_ms"].as_object().expect("timing object");
    let timing_keys: BTreeSet<&str> = timing.keys().map(String::as_str).collect();
    assert_eq!(
        timing_keys,
        BTreeSet::from(["fetch", "decode", "inference", "total"])
    );
    assert_eq!(timing["fetch"], 0.0);
    assert!(timing["inference"].as_f64().expect("inference") > 0.0);
    assert!(timing["total"].as_f64() >= timing["inference"].as_f64());
    let predictions = body["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), k, "{body}");
    let mut previous = f64::INFINITY;
    for (i, p) in predictions.iter().enumerate() {
        let keys: BTreeSet<&str> = p
            .as_object()
            .expect("prediction object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["rank", "index", "label", "score"]),
            "{body}"
        );
        assert_eq!(p["rank"], i as u64 + 1);
        assert!(p["index"].as_u64().expect("index") < 1000);
        assert!(!p["label"].as_str().expect("label").is_empty());
        let score = p["score"].as_f64().expect("score");
        assert!((0.0..=1.0).contains(&score) && score <= previous, "{body}");
        previous = score;
    }
    assert!(!body["request_id"].as_str().expect("request id").is_empty());
    predictions
        .iter()
        .map(|p| p["index"].as_u64().expect("index"))
        .collect()
}

/// Asserts the error contract `{"error": {"code", "message"[, "remedy"]}, "request_id"}`
/// (`remedy` only on `model_not_ready`).
fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["error", "request_id"]), "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        !body["error"]["message"]
            .as_str()
            .expect("message")
            .is_empty()
    );
    let fields = body["error"].as_object().expect("error").len();
    let with_remedy = want_code == "model_not_ready" && body["error"]["remedy"].is_string();
    assert_eq!(fields, if with_remedy { 3 } else { 2 }, "{body}");
}

#[tokio::test]
async fn json_base64_image_answers_the_contract_with_three_predictions() {
    let image = STANDARD.encode(png(64, 48));
    let (status, body) = post_json(json!({"image": image})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_prediction_shape(&body, 3);
    assert!(body["request_id"].as_str().unwrap().starts_with("local-"));
}

#[tokio::test]
async fn every_input_form_of_the_same_image_gives_the_same_classes() {
    let jpeg = jpeg(80, 60);
    let b64 = STANDARD.encode(&jpeg);
    let (s1, base64_body) = post_json(json!({"image": b64, "top_k": 5})).await;
    let data_url = format!("data:image/jpeg;base64,{b64}");
    let (s2, data_url_body) = post_json(json!({"image": data_url, "top_k": 5})).await;
    let (s3, raw_body) = post("/classify?top_k=5", Some("image/jpeg"), jpeg.clone()).await;
    let (s4, octet_body) = post(
        "/classify?top_k=5",
        Some("application/octet-stream"),
        jpeg.clone(),
    )
    .await;
    let form = multipart_body(&[
        Part {
            name: "top_k",
            filename: None,
            content_type: None,
            data: b"5",
        },
        Part {
            name: "image",
            filename: Some("cat.jpg"),
            content_type: Some("image/jpeg"),
            data: &jpeg,
        },
    ]);
    let (s5, multipart) = post("/classify", Some(&multipart_content_type()), form).await;
    for s in [s1, s2, s3, s4, s5] {
        assert_eq!(s, StatusCode::OK);
    }
    let reference = assert_prediction_shape(&base64_body, 5);
    for other in [&data_url_body, &raw_body, &octet_body, &multipart] {
        assert_eq!(assert_prediction_shape(other, 5), reference, "{other}");
    }
}

#[tokio::test]
async fn top_k_comes_from_query_or_body_and_must_be_1_to_10() {
    let image = png(32, 32);
    let (status, body) = post("/classify?top_k=10", Some("image/png"), image.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_prediction_shape(&body, 10);
    let (status, body) = post_json(json!({"image": STANDARD.encode(&image), "top_k": 1})).await;
    assert_eq!(status, StatusCode::OK);
    assert_prediction_shape(&body, 1);
    // The query parameter wins over the body field.
    let json_body = json!({"image": STANDARD.encode(&image), "top_k": 1}).to_string();
    let (status, body) = post(
        "/classify?top_k=4",
        Some("application/json"),
        json_body.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_prediction_shape(&body, 4);
    for bad in ["0", "11", "abc", "-2", ""] {
        let (status, body) = post(
            &format!("/classify?top_k={bad}"),
            Some("image/png"),
            image.clone(),
        )
        .await;
        assert_error(status, &body, 400, "invalid_top_k");
    }
    for bad in [json!(0), json!(11), json!("3"), json!(2.5)] {
        let (status, body) =
            post_json(json!({"image": STANDARD.encode(&image), "top_k": bad})).await;
        assert_error(status, &body, 400, "invalid_top_k");
    }
}

/// Asserts that `chinese` answers with the classes of `english` (same ranks, indices, scores
/// within the batching tolerance), each `label` the class's Chinese name and `label_en` the
/// English label of the default answer.
fn assert_chinese_version_of(chinese: &Value, english: &Value) {
    let (Some(zh), Some(en)) = (
        chinese["predictions"].as_array(),
        english["predictions"].as_array(),
    ) else {
        panic!("no predictions: {chinese} / {english}");
    };
    assert_eq!(zh.len(), en.len(), "{chinese} / {english}");
    for (z, e) in zh.iter().zip(en) {
        let keys: BTreeSet<&str> = z
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["rank", "index", "label", "label_en", "score"]),
            "{chinese}"
        );
        assert_eq!(z["rank"], e["rank"]);
        assert_eq!(z["index"], e["index"]);
        assert_eq!(z["label_en"], e["label"], "{z} / {e}");
        let index = z["index"].as_u64().expect("index");
        assert_eq!(z["label"], chinese_name(index), "{z}");
        assert_ne!(z["label"], e["label"]);
        let (Some(a), Some(b)) = (z["score"].as_f64(), e["score"].as_f64()) else {
            panic!("scores: {z} / {e}");
        };
        assert!((a - b).abs() <= BATCHING_SCORE_TOLERANCE, "{z} / {e}");
    }
}

#[tokio::test]
async fn lang_zh_gives_chinese_labels_in_every_input_form() {
    let jpeg = jpeg(72, 56);
    let b64 = STANDARD.encode(&jpeg);
    let (status, english) = post_json(json!({"image": b64, "top_k": 4})).await;
    assert_eq!(status, StatusCode::OK, "{english}");
    assert_prediction_shape(&english, 4);
    let (status, explicit_en) = post_json(json!({"image": b64, "top_k": 4, "lang": "en"})).await;
    assert_eq!(status, StatusCode::OK, "{explicit_en}");
    assert_prediction_shape(&explicit_en, 4);

    let (s1, json_zh) = post_json(json!({"image": b64, "top_k": 4, "lang": "zh"})).await;
    let (s2, query_zh) = post(
        "/classify?top_k=4&lang=zh",
        Some("image/jpeg"),
        jpeg.clone(),
    )
    .await;
    let form = multipart_body(&[
        Part {
            name: "lang",
            filename: None,
            content_type: None,
            data: b"zh",
        },
        Part {
            name: "top_k",
            filename: None,
            content_type: None,
            data: b"4",
        },
        Part {
            name: "image",
            filename: Some("cat.jpg"),
            content_type: Some("image/jpeg"),
            data: &jpeg,
        },
    ]);
    let (s3, multipart_zh) = post("/classify", Some(&multipart_content_type()), form).await;
    // The query wins over the body, as for top_k.
    let (s4, query_wins) = post(
        "/classify?lang=zh",
        Some("application/json"),
        json!({"image": b64, "top_k": 4, "lang": "en"})
            .to_string()
            .into_bytes(),
    )
    .await;
    // The tags clients send for Simplified Chinese mean the same.
    let (s5, tag_zh_cn) = post(
        "/classify?top_k=4&lang=zh-CN",
        Some("image/jpeg"),
        jpeg.clone(),
    )
    .await;
    let (s6, tag_zh_hans) = post_json(json!({"image": b64, "top_k": 4, "lang": "zh-Hans"})).await;
    for (s, body) in [
        (s1, &json_zh),
        (s2, &query_zh),
        (s3, &multipart_zh),
        (s4, &query_wins),
        (s5, &tag_zh_cn),
        (s6, &tag_zh_hans),
    ] {
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_chinese_version_of(body, &english);
    }
}

#[tokio::test]
async fn unknown_lang_is_400_invalid_lang_in_every_input_form() {
    let image = png(32, 32);
    let b64 = STANDARD.encode(&image);
    let (status, body) = post_json(json!({"image": b64, "lang": "fr"})).await;
    assert_error(status, &body, 400, "invalid_lang");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"en\"") && message.contains("\"zh\"") && message.contains("fr"),
        "{message}"
    );
    let (status, body) = post_json(json!({"image": b64, "lang": 7})).await;
    assert_error(status, &body, 400, "invalid_lang");
    let (status, body) = post("/classify?lang=xx", Some("image/png"), image.clone()).await;
    assert_error(status, &body, 400, "invalid_lang");
    // Traditional Chinese is refused rather than answered in Simplified characters.
    let (status, body) = post("/classify?lang=zh-TW", Some("image/png"), image.clone()).await;
    assert_error(status, &body, 400, "invalid_lang");
    let form = multipart_body(&[
        Part {
            name: "lang",
            filename: None,
            content_type: None,
            data: "中文".as_bytes(),
        },
        Part {
            name: "image",
            filename: Some("x.png"),
            content_type: Some("image/png"),
            data: &image,
        },
    ]);
    let (status, body) = post("/classify", Some(&multipart_content_type()), form).await;
    assert_error(status, &body, 400, "invalid_lang");
}

#[tokio::test]
async fn bad_inputs_get_documented_statuses_and_codes() {
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (Some("image/png"), Vec::new(), 400, "empty_body"),
        (Some("application/json"), Vec::new(), 400, "empty_body"),
        (
            Some("application/json"),
            b"{\"image\": ".to_vec(),
            400,
            "invalid_json",
        ),
        (
            Some("application/json"),
            b"[1,2,3]".to_vec(),
            400,
            "invalid_json",
        ),
        (
            Some("application/json"),
            br#"{"image": "***not base64***"}"#.to_vec(),
            400,
            "invalid_base64",
        ),
        (
            Some("application/json"),
            br#"{"image": ""}"#.to_vec(),
            400,
            "empty_image",
        ),
        (
            Some("application/json"),
            br#"{"top_k": 3}"#.to_vec(),
            400,
            "missing_image",
        ),
        (
            Some("application/json"),
            br#"{"image": "data:text/plain;base64,aGVsbG8="}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Some("text/plain"),
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"a=b".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Some("image/png"),
            b"this is not an image".to_vec(),
            415,
            "unsupported_image_type",
        ),
        (
            Some("image/png"),
            png(40, 40)[..60].to_vec(),
            400,
            "invalid_image",
        ),
        (
            Some("application/json"),
            br#"{"url": "oss://bucket/cat.jpg"}"#.to_vec(),
            400,
            "url_not_supported",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let (got_status, got) = post("/classify", content_type, body).await;
        assert_error(got_status, &got, status, code);
    }
}

#[tokio::test]
async fn multipart_errors_are_400() {
    let no_image = multipart_body(&[Part {
        name: "other",
        filename: None,
        content_type: None,
        data: b"x",
    }]);
    let (status, body) = post("/classify", Some(&multipart_content_type()), no_image).await;
    assert_error(status, &body, 400, "missing_image");
    let (status, body) = post(
        "/classify",
        Some("multipart/form-data"),
        b"--x\r\n".to_vec(),
    )
    .await;
    assert_error(status, &body, 400, "invalid_multipart");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let response = client()
        .get(url(shared(), "/classify"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json_body().await;
    assert_error(status, &body, 405, "method_not_allowed");
    let response = client().get(url(shared(), "/nope")).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json_body().await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn request_id_comes_from_the_fc_header() {
    let response = client()
        .post(url(shared(), "/classify"))
        .header("content-type", "image/png")
        .header("x-fc-request-id", "1-67a720bd-15933561-8ab9b99753be")
        .body(png(20, 20))
        .send()
        .await
        .unwrap();
    let body: Value = response.json_body().await;
    assert_eq!(body["request_id"], "1-67a720bd-15933561-8ab9b99753be");
}

#[tokio::test]
async fn healthz_reports_ready_model_and_version_and_index_is_html() {
    let response = client()
        .get(url(shared(), "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json_body().await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["model"]["name"], "resnet18");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["workers"], 2);
    let response = client().get(url(shared(), "/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("classify"), "{page}");
}

#[tokio::test]
async fn bodies_over_the_configured_limit_are_413() {
    let small = ServerOptions {
        max_body_bytes: 4096,
        ..options()
    };
    let addr = start_in_process(server_with_model(small, Limits::default()));
    let (status, body) = post_to(addr, "/classify", Some("image/png"), vec![7u8; 5000]).await;
    assert_error(status, &body, 413, "body_too_large");
    let big_part = vec![7u8; 5000];
    let form = multipart_body(&[Part {
        name: "image",
        filename: Some("a.png"),
        content_type: Some("image/png"),
        data: &big_part,
    }]);
    let (status, body) = post_to(addr, "/classify", Some(&multipart_content_type()), form).await;
    assert_error(status, &body, 413, "body_too_large");
    // Below the limit still works.
    let (status, _) = post_to(addr, "/classify", Some("image/png"), png(16, 16)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn images_over_the_pixel_cap_are_413() {
    let addr = start_in_process(server_with_model(
        options(),
        Limits {
            max_pixels: 1000,
            ..Limits::default()
        },
    ));
    let (status, body) = post_to(addr, "/classify", Some("image/png"), png(40, 30)).await;
    assert_error(status, &body, 413, "image_too_large");
    let (status, _) = post_to(addr, "/classify", Some("image/png"), png(30, 30)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let tight = ServerOptions {
        workers: 1,
        queue: 0,
        ..options()
    };
    let server = server_with_model(tight, Limits::default());
    let pool = server.engine().pool().clone();
    let addr = start_in_process(server);
    let held = pool.try_admit().expect("the only place");
    let response = client()
        .post(url(addr, "/classify"))
        .header("content-type", "image/png")
        .body(png(16, 16))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let status = response.status();
    let body: Value = response.json_body().await;
    assert_error(status, &body, 503, "overloaded");
    drop(held);
    let (status, _) = post_to(addr, "/classify", Some("image/png"), png(16, 16)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_model_is_503_until_initialize_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    let loader = Arc::new(FileLoader {
        path: path.clone(),
        limits: Limits::default(),
        precision: Precision::F32,
    });
    let server = server_with_loader(loader, options());
    let addr = start_in_process(server);
    let (status, body) = post_to(addr, "/classify", Some("image/png"), png(16, 16)).await;
    assert_error(status, &body, 503, "model_not_ready");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{body}"
    );
    let remedy = body["error"]["remedy"].as_str().unwrap_or_default();
    assert!(remedy.contains("--model"), "{body}");
    let health = client().get(url(addr, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = health.json_body().await;
    assert_eq!(health["status"], "unavailable");

    std::fs::copy(model_file(), &path).unwrap();
    let (status, body) = post_to(addr, "/initialize", None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    let (status, body) = post_to(addr, "/classify", Some("image/png"), png(16, 16)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_prediction_shape(&body, 3);
}

/// CORS: a server configured for one origin (the way `serve` reads `RESNET18_FC_CORS_ORIGINS`).
fn cors_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let lookup = |name: &str| {
            (name == resnet18_fc::config::CORS_ORIGINS_VAR)
                .then(|| "https://app.example/, http://localhost:5173".to_string())
        };
        let policy = CorsPolicy::from_origins(resnet18_fc::config::cors_origins(&lookup));
        assert!(policy.is_some(), "two origins configured");
        start_in_process(server_with_model(options(), Limits::default()).with_cors(policy))
    })
}

async fn preflight(addr: SocketAddr, origin: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, url(addr, "/classify"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("send preflight")
}

async fn classify_from(addr: SocketAddr, origin: &str) -> reqwest::Response {
    client()
        .post(url(addr, "/classify"))
        .header("origin", origin)
        .header("content-type", "image/png")
        .body(png(20, 20))
        .send()
        .await
        .expect("send")
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn cors_configured_origin_gets_allow_origin_and_its_preflight_is_answered() {
    let addr = cors_server();
    let response = preflight(addr, "https://app.example").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.eq_ignore_ascii_case("content-type"), "{allowed}");
    assert_eq!(headers["vary"], "Origin");

    let response = classify_from(addr, "http://localhost:5173").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let body: Value = response.json_body().await;
    assert_prediction_shape(&body, 3);
}

#[tokio::test]
async fn cors_other_origin_gets_no_allow_header() {
    let addr = cors_server();
    let response = preflight(addr, "https://evil.example").await;
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = classify_from(addr, "https://app.example.evil.example").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the call itself is served"
    );
    assert_eq!(cors_headers(&response), Vec::<String>::new());
}

#[tokio::test]
async fn cors_unset_sends_no_cors_headers() {
    let unset = |_: &str| None;
    assert_eq!(
        CorsPolicy::from_origins(resnet18_fc::config::cors_origins(&unset)),
        None
    );
    let response = preflight(shared(), "https://app.example").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    let response = classify_from(shared(), "https://app.example").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cors_headers(&response), Vec::<String>::new());
}
