//! OSS through the real HTTP server with FC-style headers: `POST /classify {"url"}` in both URL
//! forms, OSS errors as HTTP statuses, SSRF refusals, the size cap, timeouts, and `/invoke` with
//! OSS upload events — against the local OSS-compatible server, which checks every signature.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::support::OSS_EVENT_TEMPLATE as TEMPLATE;
use crate::support::oss_server::{Fault, OssTestServer, ServerKeys};
use crate::support::{
    ResponseExt, client, jpeg, options, png, server_with_model, start_in_process,
};
use base64::Engine as _;
use http::Method;
use resnet18_fc::app::oss::{OssPlugin, RESULT_TOP_K};
use resnet18_fc::oss::{OssConfig, OssService};
use resnet18_fc::preprocess::Limits;
use serde_json::{Value, json};

const TEXT_FILE: &str = include_str!("../data/oss_event_text_ap_south.json");
const CAP: u64 = 1024 * 1024;

struct World {
    oss: &'static OssTestServer,
    app: SocketAddr,
}

fn keys() -> ServerKeys {
    ServerKeys {
        id: "STS.NHttpKey".into(),
        secret: "http-secret-value".into(),
        token: Some("CAIS-http-token".into()),
    }
}

fn start_oss() -> &'static OssTestServer {
    OssTestServer::start_for_binary(keys())
}

/// One OSS server and one function server (synthetic model, OSS plug-in) per test binary.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let oss = start_oss();
        for (bucket, region) in [
            ("images", "cn-hangzhou"),
            ("testbucket", "cn-shanghai"),
            ("storage-bucket-20190329", "ap-south-1"),
        ] {
            oss.create_bucket(bucket, region);
        }
        let vars: HashMap<&str, String> = HashMap::from([
            ("OSS_ENDPOINT", oss.endpoint()),
            ("OSS_ALLOWED_HOSTS", oss.host_port()),
            ("OSS_MAX_OBJECT_BYTES", CAP.to_string()),
            ("OSS_READ_TIMEOUT_MS", "500".into()),
            ("OSS_RETRY_BASE_MS", "1".into()),
        ]);
        let config = OssConfig::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let plugin = Arc::new(OssPlugin::new(OssService::new(config).expect("service")));
        let server = server_with_model(options(), Limits::default())
            .with_fetcher(plugin.clone())
            .with_event_handler(plugin);
        World {
            oss,
            app: start_in_process(server),
        }
    })
}

/// A request as FC forwards it: control path, request id, STS credentials, region.
fn fc_request(control_path: &str, path: &str, secret: &str) -> reqwest::RequestBuilder {
    let k = keys();
    client()
        .post(format!("http://{}{path}", world().app))
        .header("x-fc-control-path", control_path)
        .header("x-fc-request-id", "1-67a720bd-15933561-8ab9b99753be")
        .header("x-fc-access-key-id", k.id)
        .header("x-fc-access-key-secret", secret)
        .header("x-fc-security-token", k.token.unwrap_or_default())
        .header("x-fc-region", "cn-hangzhou")
}

async fn classify(body: Value) -> (u16, Value) {
    classify_with_secret(body, &keys().secret).await
}

async fn classify_with_secret(body: Value, secret: &str) -> (u16, Value) {
    let response = fc_request("/http-invoke", "/classify", secret)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("classify request");
    let status = response.status().as_u16();
    (status, response.json_body().await)
}

/// `/invoke` with a raw event body; returns status, `x-fc-status` and the JSON body.
async fn invoke(body: &str) -> (u16, String, Value) {
    let response = fc_request("/invoke", "/invoke", &keys().secret)
        .header("content-type", "application/octet-stream")
        .body(body.to_string())
        .send()
        .await
        .expect("invoke request");
    let status = response.status().as_u16();
    let fc_status = response.fc_status().unwrap_or_default();
    (status, fc_status, response.json_body().await)
}

/// Predictions for `bytes` sent inline, the reference for URL-fetched answers.
async fn inline_predictions(bytes: &[u8], top_k: usize) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let (status, body) = classify(json!({"image": b64, "top_k": top_k})).await;
    assert_eq!(status, 200, "{body}");
    body["predictions"].clone()
}

/// Like [`inline_predictions`], with `lang` in the request.
async fn inline_predictions_in(bytes: &[u8], top_k: usize, lang: &str) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let (status, body) = classify(json!({"image": b64, "top_k": top_k, "lang": lang})).await;
    assert_eq!(status, 200, "{body}");
    body["predictions"].clone()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn classify_by_oss_url_in_both_forms_matches_the_inline_image() {
    let image = png(96, 64);
    world().oss.put("images", "http/cat 1+1.png", image.clone());
    let expected = inline_predictions(&image, 3).await;
    for url in [
        "oss://images/http/cat 1+1.png",
        "https://images.oss-cn-hangzhou.aliyuncs.com/http/cat%201+1.png",
    ] {
        let (status, body) = classify(json!({ "url": url })).await;
        assert_eq!(status, 200, "{url}: {body}");
        crate::support::assert_same_predictions(&body["predictions"], &expected);
        assert!(
            body["timing_ms"]["fetch"].as_f64().is_some_and(|t| t > 0.0),
            "{body}"
        );
        assert_eq!(body["request_id"], "1-67a720bd-15933561-8ab9b99753be");
    }
}

#[tokio::test]
async fn oss_404_and_403_become_clear_404_and_403() {
    let (status, body) = classify(json!({"url": "oss://images/http/missing.png"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "oss_not_found"),
        "{body}"
    );

    world().oss.put("images", "http/private.png", png(8, 8));
    let (status, body) = classify_with_secret(
        json!({"url": "oss://images/http/private.png"}),
        "wrong-secret",
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "oss_forbidden"),
        "{body}"
    );
    assert!(body.to_string().contains("SignatureDoesNotMatch"), "{body}");
    assert!(!body.to_string().contains("wrong-secret"), "{body}");
}

#[tokio::test]
async fn unsafe_urls_are_400_and_nothing_is_contacted() {
    let bystander = TcpListener::bind("127.0.0.1:0").expect("bind");
    bystander.set_nonblocking(true).expect("nonblocking");
    let port = bystander.local_addr().expect("addr").port();
    for url in [
        "http://169.254.169.254/latest/meta-data".to_string(),
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}/images/a.png"),
        "file:///etc/passwd".to_string(),
        "oss://Bad_Bucket/a.png".to_string(),
    ] {
        let (status, body) = classify(json!({ "url": url })).await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_url"),
            "{url}: {body}"
        );
    }
    let accepted = bystander.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the bystander saw a connection: {accepted:?}"
    );
}

#[tokio::test]
async fn an_object_over_the_cap_is_413() {
    let total = 16 * CAP as usize;
    world().oss.inject_for(
        Method::GET,
        "http/huge.jpg",
        Fault::Oversize {
            total,
            declare_length: false,
        },
    );
    let (status, body) = classify(json!({"url": "oss://images/http/huge.jpg"})).await;
    assert_eq!(
        (status, error_code(&body)),
        (413, "object_too_large"),
        "{body}"
    );
}

#[tokio::test]
async fn a_stalled_oss_is_504_on_classify_and_a_failed_invoke() {
    world().oss.put("images", "http/slow.jpg", jpeg(32, 32));
    let stall = || Fault::StallHeaders(Duration::from_secs(30));
    world()
        .oss
        .inject_for(Method::GET, "http/slow.jpg", stall());
    let (status, body) = classify(json!({"url": "oss://images/http/slow.jpg"})).await;
    assert_eq!((status, error_code(&body)), (504, "oss_timeout"), "{body}");

    world()
        .oss
        .inject_for(Method::GET, "http/slow.jpg", stall());
    let (status, fc_status, body) = invoke(r#"{"url": "oss://images/http/slow.jpg"}"#).await;
    assert_eq!((status, fc_status.as_str()), (404, "404"), "{body}");
    assert_eq!(error_code(&body), "oss_timeout", "{body}");
}

#[tokio::test]
async fn an_upload_event_writes_its_result_object() {
    let image = jpeg(120, 90);
    world().oss.put("testbucket", "image/a.jpg", image.clone());
    let (status, fc_status, body) = invoke(TEMPLATE).await;
    assert_eq!((status, fc_status.as_str()), (200, "200"), "{body}");
    assert_eq!(body["records"][0]["status"], "classified", "{body}");
    assert_eq!(
        body["records"][0]["result"],
        "testbucket/results/image/a.jpg.json"
    );
    let stored = world()
        .oss
        .object("testbucket", "results/image/a.jpg.json")
        .expect("result object");
    assert_eq!(stored.content_type.as_deref(), Some("application/json"));
    let result: Value = serde_json::from_slice(&stored.body).expect("JSON");
    assert_eq!(result["model"], "resnet18");
    assert_eq!(result["source"]["eTag"], "688A7BF4F233DC9C88A80BF985AB7329");
    // Both names: the English `label` of a default answer, the `label` of a `lang: zh` one.
    let mut expected = inline_predictions(&image, RESULT_TOP_K).await;
    let chinese = inline_predictions_in(&image, RESULT_TOP_K, "zh").await;
    let (Some(expected_list), Some(chinese_list)) = (expected.as_array_mut(), chinese.as_array())
    else {
        panic!("predictions are not arrays: {chinese}");
    };
    for (e, z) in expected_list.iter_mut().zip(chinese_list) {
        assert_eq!(z["label_en"], e["label"], "{z} / {e}");
        e["label_zh"] = z["label"].clone();
    }
    assert_eq!(result["predictions"], expected);
    let first = &result["predictions"][0];
    assert_ne!(first["label_zh"], first["label"], "{result}");
}

#[tokio::test]
async fn a_text_upload_gets_an_error_result_and_the_invocation_succeeds() {
    world().oss.put(
        "storage-bucket-20190329",
        "test.txt",
        &b"Hello OSS text\n"[..],
    );
    let (status, fc_status, body) = invoke(TEXT_FILE).await;
    assert_eq!((status, fc_status.as_str()), (200, "200"), "{body}");
    assert_eq!(body["records"][0]["status"], "rejected", "{body}");
    let stored = world()
        .oss
        .object("storage-bucket-20190329", "results/test.txt.json")
        .expect("error result object");
    let result: Value = serde_json::from_slice(&stored.body).expect("JSON");
    assert_eq!(result["status"], "error");
}

#[tokio::test]
async fn oss_5xx_during_an_event_fails_the_invocation_so_fc_retries() {
    world()
        .oss
        .put("testbucket", "image/flaky.jpg", jpeg(40, 40));
    for _ in 0..3 {
        world()
            .oss
            .inject_for(Method::GET, "image/flaky.jpg", Fault::Status(500));
    }
    let event = TEMPLATE.replace("\"image/a.jpg\"", "\"image/flaky.jpg\"");
    let (status, fc_status, body) = invoke(&event).await;
    assert_eq!((status, fc_status.as_str()), (404, "404"), "{body}");
    assert_eq!(error_code(&body), "event_failed", "{body}");
    assert!(
        world()
            .oss
            .object("testbucket", "results/image/flaky.jpg.json")
            .is_none()
    );
}

#[tokio::test]
async fn the_binary_reads_oss_settings_and_falls_back_to_env_credentials() {
    let oss = world().oss;
    oss.put("images", "spawn/cat.png", png(64, 64));
    let k = keys();
    let token = k.token.clone().unwrap_or_default();
    let (endpoint, allowed) = (oss.endpoint(), oss.host_port());
    let env = [
        ("OSS_ENDPOINT", endpoint.as_str()),
        ("OSS_ALLOWED_HOSTS", allowed.as_str()),
        ("FC_REGION", "cn-hangzhou"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", k.id.as_str()),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", k.secret.as_str()),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", token.as_str()),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    let spawned = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let spawned = crate::support::Spawned::start(&[], &env);
        spawned.wait_ready();
        spawned
    })
    .await
    .expect("spawn");
    // No x-fc-access-key-* headers: the binary must sign with the ALIBABA_CLOUD_* variables.
    let response = client()
        .post(spawned.url("/classify"))
        .header("x-fc-control-path", "/http-invoke")
        .header("content-type", "application/json")
        .body(json!({"url": "oss://images/spawn/cat.png"}).to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json_body().await;
    assert_eq!(status, 200, "{body}\n{}", spawned.output());
    assert_eq!(body["predictions"].as_array().map(Vec::len), Some(3));
    let seen = oss.requests();
    let fetch = seen
        .iter()
        .rev()
        .find(|r| r.path == "/images/spawn/cat.png")
        .expect("the binary fetched the object");
    assert_eq!(fetch.verdict, Ok(()));
    let output = spawned.output();
    assert!(
        !output.contains(&k.secret) && !output.contains(&token),
        "{output}"
    );
}

#[test]
fn the_binary_refuses_a_non_oss_endpoint_at_startup() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_resnet18-fc"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
        .arg(crate::support::model_file())
        .env("OSS_ENDPOINT", "http://10.0.0.1:80")
        .env_remove("OSS_ALLOWED_HOSTS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "still running or succeeded"
    );
    assert!(stderr.contains("OSS_ENDPOINT"), "{stderr}");
}
