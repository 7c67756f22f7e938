//! SSRF through the region: the OSS endpoint host is built from a region name
//! (`oss-<region>-internal.aliyuncs.com`), and the region comes from the request
//! (`x-fc-region`) or from an event record's `region` field, not only from validated URLs.
//! A region like `x@127.0.0.1:<port>/` would turn `https://bucket.oss-<region>-internal.…`
//! into a URL whose host is 127.0.0.1 — and the signed request, STS token included, would go
//! there. Such regions must be refused before any connection.
//!
//! Upload events no record of which may vanish: keys whose `results/<key>.json` would pass OSS's
//! 1023-byte limit get the hashed result name, keys this client cannot fetch get an error
//! object, malformed event bodies are answered as final (not retried), and a `%`-encoded key
//! under the result prefix is skipped like the plain one — against the local OSS-compatible
//! server.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};

use crate::support::OSS_EVENT_TEMPLATE as TEMPLATE;
use crate::support::oss_server::{OssTestServer, ServerKeys};
use crate::support::{ResponseExt, client, options, png, server_with_model, start_in_process};
use resnet18_fc::app::OssPlugin;
use resnet18_fc::oss::{Access, OssConfig, OssService};
use resnet18_fc::preprocess::Limits;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Regions an attacker might send, each of which would move the host off `*.aliyuncs.com` or
/// inject URL syntax if pasted into the endpoint name.
fn hostile_regions(port: u16) -> Vec<String> {
    vec![
        format!("x@127.0.0.1:{port}/"),
        "evil.example.com#".into(),
        "cn-hangzhou.evil.example.com/".into(),
        "cn-hangzhou?x=".into(),
        "a b".into(),
        "cn-hangzhou\\@evil".into(),
        // Found by fuzz/oss_url (seed region-oss mutated): tabs, control bytes and '='.
        "cn-hangzho\t\t\u{4}\0\0\t=".into(),
        String::new(),
    ]
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// An in-process server whose fetcher and event handler are the real OSS plugin, in the default
/// configuration (no OSS_ENDPOINT, so the region picks the endpoint); returns its address.
fn start_oss_server() -> std::net::SocketAddr {
    let plugin = Arc::new(OssPlugin::new(
        OssService::new(OssConfig::default()).expect("service"),
    ));
    let server = server_with_model(options(), Limits::default())
        .with_fetcher(plugin.clone())
        .with_event_handler(plugin);
    start_in_process(server)
}

#[test]
fn a_hostile_request_region_never_yields_a_non_oss_url() {
    let service = OssService::new(OssConfig::default()).expect("service");
    for region in hostile_regions(9) {
        let access = Access {
            credentials: None,
            region: Some(region.clone()),
        };
        match service.resolve("oss://bucket/key.jpg", &access) {
            Ok(location) => {
                let url = location.endpoint.object_url(&location.object);
                let host = host_of(&url);
                assert!(
                    host.ends_with(".aliyuncs.com") && !url.contains('#') && !url.contains('@'),
                    "region {region:?} produced {url:?} (host {host:?})"
                );
            }
            Err(e) => assert_eq!(e.status(), 400, "region {region:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_regions_in_headers_and_events_contact_nothing() {
    let bystander = TcpListener::bind("127.0.0.1:0").expect("bind");
    bystander.set_nonblocking(true).expect("nonblocking");
    let port = bystander.local_addr().expect("addr").port();
    let addr = start_oss_server();
    let region = format!("x@127.0.0.1:{port}/");

    let response = client()
        .post(format!("http://{addr}/classify"))
        .header("x-fc-control-path", "/http-invoke")
        .header("x-fc-region", &region)
        .header("x-fc-access-key-id", "STS.id")
        .header("x-fc-access-key-secret", "secret")
        .header("x-fc-security-token", "token-that-must-not-travel")
        .header("content-type", "application/json")
        .body(json!({"url": "oss://bucket/key.jpg"}).to_string())
        .send()
        .await
        .expect("classify");
    let status = response.status().as_u16();
    let body: Value = response.json_or_null().await;
    assert_eq!(status, 400, "{body}");

    let event = json!({"events": [{
        "eventName": "ObjectCreated:PutObject",
        "region": region,
        "oss": {"bucket": {"name": "bucket"}, "object": {"key": "a.jpg", "size": 1}}
    }]});
    let response = client()
        .post(format!("http://{addr}/invoke"))
        .header("x-fc-control-path", "/invoke")
        .header("x-fc-region", "cn-hangzhou")
        .header("x-fc-access-key-id", "STS.id")
        .header("x-fc-access-key-secret", "secret")
        .header("x-fc-security-token", "token-that-must-not-travel")
        .body(event.to_string())
        .send()
        .await
        .expect("invoke");
    let body: Value = response.json_or_null().await;
    assert_eq!(body["records"][0]["status"], "invalid", "{body}");

    let accepted = bystander.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the bystander on 127.0.0.1:{port} saw a connection: {accepted:?}"
    );
}

/// Found by fuzz/oss_url (the dictionary token `xn--` spliced into the seed
/// `oss://bucket/...`): `xn--bucket` passes the bucket character rules, but as a host label it
/// is invalid Punycode, so no request URL can be built for it. It used to be accepted; the
/// request then failed inside the HTTP client, which the OSS client treats as a transient
/// upstream failure (502, retried, an event redelivered). It is the caller's mistake: 400.
const NOT_A_HOST_LABEL: &str = "xn--bucket";

#[test]
fn a_bucket_that_cannot_be_a_host_label_is_refused_before_any_request() {
    let shanghai = OssConfig::from_lookup(|name| {
        (name == "OSS_ENDPOINT").then(|| "oss-cn-shanghai.aliyuncs.com".to_string())
    })
    .expect("config");
    let services = [
        OssService::new(OssConfig::default()).expect("service"),
        OssService::new(shanghai).expect("service"),
    ];
    let access = Access {
        credentials: None,
        region: Some("cn-hangzhou".into()),
    };
    for service in &services {
        let url = format!("oss://{NOT_A_HOST_LABEL}/key.jpg");
        match service.resolve(&url, &access) {
            Ok(location) => panic!(
                "{url} was accepted, request URL {:?}",
                location.endpoint.object_url(&location.object)
            ),
            Err(e) => {
                assert_eq!(e.status(), 400, "{e}");
                assert!(e.to_string().contains(NOT_A_HOST_LABEL), "{e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_cannot_be_a_host_label_is_a_400_and_an_invalid_record() {
    let addr = start_oss_server();

    let response = client()
        .post(format!("http://{addr}/classify"))
        .header("x-fc-control-path", "/http-invoke")
        .header("x-fc-region", "cn-hangzhou")
        .header("content-type", "application/json")
        .body(json!({"url": format!("oss://{NOT_A_HOST_LABEL}/key.jpg")}).to_string())
        .send()
        .await
        .expect("classify");
    let status = response.status().as_u16();
    let body: Value = response.json_or_null().await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_url")),
        "{body}"
    );

    let event = json!({"events": [{
        "eventName": "ObjectCreated:PutObject",
        "region": "cn-hangzhou",
        "oss": {"bucket": {"name": NOT_A_HOST_LABEL}, "object": {"key": "a.jpg", "size": 1}}
    }]});
    let response = client()
        .post(format!("http://{addr}/invoke"))
        .header("x-fc-control-path", "/invoke")
        .header("x-fc-region", "cn-hangzhou")
        .body(event.to_string())
        .send()
        .await
        .expect("invoke");
    let body: Value = response.json_or_null().await;
    assert_eq!(body["records"][0]["status"], "invalid", "{body}");
}

fn oss_keys() -> ServerKeys {
    ServerKeys {
        id: "STS.NHostileKey".into(),
        secret: "hostile-secret".into(),
        token: Some("CAIS-hostile-token".into()),
    }
}

/// The local OSS server (bucket `testbucket`) and a function server whose OSS plug-in talks to
/// it; one pair per test binary.
fn oss_world() -> &'static (&'static OssTestServer, SocketAddr) {
    static WORLD: OnceLock<(&'static OssTestServer, SocketAddr)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let oss = OssTestServer::start_for_binary(oss_keys());
        oss.create_bucket("testbucket", "cn-shanghai");
        let vars: HashMap<&str, String> = HashMap::from([
            ("OSS_ENDPOINT", oss.endpoint()),
            ("OSS_ALLOWED_HOSTS", oss.host_port()),
            ("OSS_RETRY_BASE_MS", "1".into()),
        ]);
        let config = OssConfig::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let plugin = Arc::new(OssPlugin::new(OssService::new(config).expect("service")));
        let server = server_with_model(options(), Limits::default())
            .with_fetcher(plugin.clone())
            .with_event_handler(plugin);
        (oss, start_in_process(server))
    })
}

/// `/invoke` as FC sends an OSS event; returns status, `x-fc-status` and the JSON body.
async fn invoke_event(body: Vec<u8>) -> (u16, String, Value) {
    let k = oss_keys();
    let response = client()
        .post(format!("http://{}/invoke", oss_world().1))
        .header("x-fc-control-path", "/invoke")
        .header("x-fc-request-id", "1-hostile-event")
        .header("x-fc-access-key-id", k.id)
        .header("x-fc-access-key-secret", k.secret)
        .header("x-fc-security-token", k.token.unwrap_or_default())
        .header("x-fc-region", "cn-shanghai")
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("invoke");
    let status = response.status().as_u16();
    let fc_status = response.fc_status().unwrap_or_default();
    (status, fc_status, response.json_or_null().await)
}

fn event_for(key: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_str(TEMPLATE).expect("fixture");
    event["events"][0]["oss"]["object"]["key"] = key.into();
    event.to_string().into_bytes()
}

/// `results/<sha256 of key, hex>.json`, computed here from the rule, not by the code under test.
fn hashed_name(key: &str) -> String {
    format!(
        "results/{}.json",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

fn stored_json(bucket: &str, key: &str) -> Value {
    let stored = oss_world()
        .0
        .object(bucket, key)
        .unwrap_or_else(|| panic!("no object {bucket}/{key}"));
    serde_json::from_slice(&stored.body).expect("JSON result object")
}

/// The function still classifies after the hostile cases.
async fn assert_still_classifies() {
    let response = client()
        .post(format!("http://{}/classify", oss_world().1))
        .header("content-type", "image/png")
        .body(png(24, 24))
        .send()
        .await
        .expect("classify");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_too_long_for_results_key_json_get_the_hashed_result_name() {
    let (oss, _) = oss_world();
    // 1015 and 1023 bytes: valid OSS keys whose `results/<key>.json` has 1028 and 1036 bytes.
    for length in [1015, 1023] {
        let key = format!("up/{}.png", "k".repeat(length - 7));
        assert_eq!(key.len(), length);
        oss.put("testbucket", &key, png(40, 30));
        let (status, fc_status, body) = invoke_event(event_for(&key)).await;
        assert_eq!((status, fc_status.as_str()), (200, "200"), "{body}");
        let record = &body["records"][0];
        assert_eq!(record["status"], "classified", "{body}");
        let name = hashed_name(&key);
        assert_eq!(record["result"], format!("testbucket/{name}"), "{body}");
        let result = stored_json("testbucket", &name);
        assert_eq!(result["status"], "ok", "{result}");
        assert_eq!(result["source"]["key"], key.as_str());
        assert_eq!(result["predictions"].as_array().map(Vec::len), Some(5));
    }
    assert_still_classifies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_this_client_cannot_fetch_gets_an_error_object_not_silence() {
    // OSS accepts `..` segments in keys; HTTP clients would collapse them, so it is not fetched.
    let key = "up/../dots.png";
    let (status, fc_status, body) = invoke_event(event_for(key)).await;
    assert_eq!((status, fc_status.as_str()), (200, "200"), "{body}");
    assert_eq!(body["records"][0]["status"], "rejected", "{body}");
    assert_eq!(body["records"][0]["code"], "invalid_url", "{body}");
    let result = stored_json("testbucket", &hashed_name(key));
    assert_eq!(result["status"], "error", "{result}");
    assert_eq!(result["error"]["code"], "invalid_url", "{result}");
    assert_eq!(result["source"]["key"], key);
    assert_still_classifies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_event_bodies_are_final_answers_not_retried_failures() {
    let bodies: [&[u8]; 3] = [
        br#"{"events":[1,2]}"#,
        br#"{"events":{"oss":1}}"#,
        br#"{"events":[{"eventName":"ObjectCreated:PutObject","oss":{"bucket":{}}}]}"#,
    ];
    for body in bodies {
        let (status, fc_status, answer) = invoke_event(body.to_vec()).await;
        // FC retries x-fc-status 404; the same bytes would fail again, so: 200 with the error.
        assert_eq!((status, fc_status.as_str()), (200, "200"), "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_event", "{answer}");
        assert_eq!(answer["request_id"], "1-hostile-event");
    }
    assert_still_classifies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_a_byte_order_mark_is_processed() {
    let (oss, _) = oss_world();
    oss.put("testbucket", "bom/a.png", png(32, 32));
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(&event_for("bom/a.png"));
    let (status, fc_status, answer) = invoke_event(body).await;
    assert_eq!((status, fc_status.as_str()), (200, "200"), "{answer}");
    assert_eq!(answer["records"][0]["status"], "classified", "{answer}");
    assert!(oss.object("testbucket", "results/bom/a.png.json").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_key_under_the_result_prefix_is_skipped_without_a_request() {
    let (oss, _) = oss_world();
    // A result object exists: a decoded retry of `results%2F…` would find and classify it, and
    // write `results/results/…`.
    oss.put("testbucket", "results/loop.png", png(16, 16));
    let loop_requests = || {
        let seen = oss.requests();
        seen.iter().filter(|r| r.path.contains("loop")).count()
    };
    for key in ["results%2Floop.png", "%72esults/loop.png"] {
        let (status, fc_status, body) = invoke_event(event_for(key)).await;
        assert_eq!((status, fc_status.as_str()), (200, "200"), "{body}");
        assert_eq!(body["records"][0]["status"], "skipped", "{body}");
        assert_eq!(body["records"][0]["code"], "under_result_prefix", "{body}");
        assert_eq!(loop_requests(), 0, "{key}: OSS was contacted");
    }
    assert!(
        oss.object("testbucket", "results/results/loop.png.json")
            .is_none()
    );
}
