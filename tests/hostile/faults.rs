//! Faults, end to end: clients that disconnect mid-upload and mid-inference (nothing leaks, no
//! worker stays stuck, the pool's capacity is intact afterwards), panics inside a handler and
//! inside an inference job (500 JSON / 503 for that request, the server keeps serving), OSS
//! PutObject failing after GetObject succeeded (the event fails, FC's retry writes the result
//! exactly once), and OSS's clock-skew refusal (403 `RequestTimeTooSkewed`) reported clearly.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::OSS_EVENT_TEMPLATE as TEMPLATE;
use crate::support::oss_server::{Fault, OssTestServer, ServerKeys};
use crate::support::*;
use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use resnet18_fc::app::oss::{OssPlugin, RESULT_TOP_K};
use resnet18_fc::classifier::Classifier;
use resnet18_fc::engine::{Engine, LoadError, ModelLoader};
use resnet18_fc::fc::FcContext;
use resnet18_fc::http::{ApiError, BoxFuture, EventHandler, ImageFetcher};
use resnet18_fc::oss::{OssConfig, OssService};
use resnet18_fc::preprocess::Limits;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `condition` every 20 ms for at most `seconds`.
fn eventually(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// `GET /healthz` over a fresh connection (blocking); the JSON body.
fn healthz(addr: SocketAddr) -> Value {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let response = raw_exchange(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("healthz");
    serde_json::from_slice(&response.body).expect("healthz JSON")
}

fn admitted(addr: SocketAddr) -> u64 {
    healthz(addr)["admitted"].as_u64().expect("admitted")
}

/// A raw request head for `POST /classify` with a raw image body of `length` bytes.
fn classify_head(length: usize) -> Vec<u8> {
    format!(
        "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `n` classify requests at once (blocking threads); returns their statuses.
fn concurrent_statuses(addr: SocketAddr, n: usize, image: &[u8]) -> Vec<u16> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut request = classify_head(image.len());
            request.extend_from_slice(image);
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_read_timeout(Some(Duration::from_secs(300)))
                    .expect("timeout");
                raw_exchange(&mut stream, &request).map_or(0, |r| r.status)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
}

fn start_spawned(args: &'static [&'static str]) -> Spawned {
    let server = Spawned::start(args, &[]);
    server.wait_ready();
    server
}

// ---------------------------------------------------------------------------------------------
// Client disconnects

#[test]
fn clients_that_disconnect_mid_upload_leave_nothing_behind() {
    let server = start_spawned(&["--workers", "1", "--queue", "2"]);
    let image = png(64, 64);
    // One complete request first, so every lazily opened descriptor exists for the baseline.
    assert_eq!(concurrent_statuses(server.addr, 1, &image), vec![200]);
    let baseline = open_fds(server.pid());
    for round in 0..40 {
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        if round % 2 == 0 {
            // Raw body: announce 1 MB, send 1 KB, hang up.
            stream.write_all(&classify_head(1 << 20)).expect("head");
            stream.write_all(&[0x89; 1024]).expect("part of the body");
        } else {
            // Multipart: the image part is cut off mid-way.
            let body = multipart_body(&[Part {
                name: "image",
                filename: Some("a.png"),
                content_type: Some("image/png"),
                data: &image,
            }]);
            let head = format!(
                "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                multipart_content_type(),
                body.len()
            );
            stream.write_all(head.as_bytes()).expect("head");
            stream.write_all(&body[..body.len() / 2]).expect("half");
        }
        drop(stream);
    }
    let settled = eventually(30, || open_fds(server.pid()) <= baseline);
    assert!(
        settled,
        "descriptors: {baseline} before, {} after the aborted uploads",
        open_fds(server.pid())
    );
    assert_eq!(admitted(server.addr), 0, "a place in the pool leaked");
    // Capacity intact: workers + queue requests at once all succeed.
    assert_eq!(concurrent_statuses(server.addr, 3, &image), vec![200; 3]);
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

#[test]
fn clients_that_disconnect_mid_inference_free_the_pool_and_leave_no_worker_stuck() {
    let server = start_spawned(&["--workers", "1", "--queue", "3"]);
    let small = png(64, 64);
    assert_eq!(concurrent_statuses(server.addr, 1, &small), vec![200]);
    let baseline = open_fds(server.pid());
    // A large image keeps the single worker busy long enough to hang up on it.
    let big = png(1600, 1200);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.addr).expect("connect");
        stream.write_all(&classify_head(big.len())).expect("head");
        stream.write_all(&big).expect("body");
        streams.push(stream);
    }
    let all_in = eventually(60, || admitted(server.addr) == 4);
    assert!(
        all_in,
        "the 4 requests were never all admitted (one running, three waiting)"
    );
    drop(streams);
    let drained = eventually(120, || admitted(server.addr) == 0);
    assert!(
        drained,
        "abandoned requests still hold {} places",
        admitted(server.addr)
    );
    let settled = eventually(30, || open_fds(server.pid()) <= baseline);
    assert!(
        settled,
        "descriptors: {baseline} before, {} after",
        open_fds(server.pid())
    );
    // The pool's full capacity (1 worker + 3 waiting) is available again, and answers.
    assert_eq!(concurrent_statuses(server.addr, 4, &small), vec![200; 4]);
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

// ---------------------------------------------------------------------------------------------
// Panics

struct PanickingFetcher;

impl ImageFetcher for PanickingFetcher {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        _context: &'a FcContext,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>> {
        Box::pin(async move { panic!("fetcher bug triggered by {url}") })
    }
}

struct PanickingEvents;

impl EventHandler for PanickingEvents {
    fn handle<'a>(
        &'a self,
        _event: Bytes,
        _context: &'a FcContext,
        _engine: &'a Engine,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move { panic!("event handler bug") })
    }
}

async fn post_json(addr: SocketAddr, path: &str, body: Value) -> (u16, Option<String>, Value) {
    let response = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-fc-request-id", "req-panic-1")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let fc_status = response.fc_status();
    (status, fc_status, response.json_body().await)
}

fn image_json() -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(48, 48));
    json!({ "image": b64 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_json_and_the_server_keeps_serving() {
    let server = server_with_model(options(), Limits::default())
        .with_fetcher(Arc::new(PanickingFetcher))
        .with_event_handler(Arc::new(PanickingEvents));
    let addr = start_in_process(server);
    for _ in 0..10 {
        let (status, _, body) = post_json(addr, "/classify", json!({"url": "oss://b/k"})).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert_eq!(body["request_id"], "req-panic-1", "{body}");
        let text = body.to_string();
        assert!(
            !text.contains("fetcher bug") && !text.contains(".rs:"),
            "{text}"
        );

        let (status, fc_status, body) = post_json(addr, "/invoke", json!({"events": []})).await;
        assert_eq!((status, fc_status.as_deref()), (404, Some("404")), "{body}");
        assert_eq!(body["error"]["code"], "internal", "{body}");
    }
    let (status, _, body) = post_json(addr, "/classify", image_json()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().map(Vec::len), Some(3));
}

/// Panics on its first `panics` loads, then loads the synthetic model.
struct FlakyLoader {
    calls: AtomicUsize,
    panics: usize,
}

impl ModelLoader for FlakyLoader {
    fn load(&self) -> Result<Classifier, LoadError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.panics {
            panic!("loader bug");
        }
        Ok(classifier(Limits::default()))
    }

    fn describe(&self) -> String {
        "flaky test loader".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_an_inference_job_is_contained_and_the_pool_keeps_working() {
    let loader = Arc::new(FlakyLoader {
        calls: AtomicUsize::new(0),
        panics: 2,
    });
    let addr = start_in_process(server_with_loader(loader.clone(), options()));
    // The model load runs on the inference pool; it panics twice.
    for attempt in 0..2 {
        let (status, _, body) = post_json(addr, "/initialize", json!({})).await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert_eq!(body["error"]["code"], "model_not_ready", "{body}");
    }
    let (status, _, body) = post_json(addr, "/initialize", json!({})).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
    assert_eq!(loader.calls.load(Ordering::SeqCst), 3);
    let (status, _, body) = post_json(addr, "/classify", image_json()).await;
    assert_eq!(status, 200, "{body}");
    let health = tokio::task::spawn_blocking(move || healthz(addr))
        .await
        .expect("healthz");
    assert_eq!(health["admitted"], 0, "{health}");
}

// ---------------------------------------------------------------------------------------------
// OSS faults

fn oss_keys() -> ServerKeys {
    ServerKeys {
        id: "STS.NFaultKey".into(),
        secret: "fault-secret-value".into(),
        token: Some("CAIS-fault-token".into()),
    }
}

fn start_oss() -> &'static OssTestServer {
    OssTestServer::start_for_binary(oss_keys())
}

/// A function server with the OSS plug-in pointed at `endpoint` (allow-listed).
fn oss_function(endpoint: &str, host_port: &str, attempts: u32) -> SocketAddr {
    let vars: HashMap<&str, String> = HashMap::from([
        ("OSS_ENDPOINT", endpoint.to_string()),
        ("OSS_ALLOWED_HOSTS", host_port.to_string()),
        ("OSS_READ_TIMEOUT_MS", "2000".into()),
        ("OSS_RETRY_BASE_MS", "1".into()),
        ("OSS_MAX_ATTEMPTS", attempts.to_string()),
    ]);
    let config = OssConfig::from_lookup(|k| vars.get(k).cloned()).expect("config");
    let plugin = Arc::new(OssPlugin::new(OssService::new(config).expect("service")));
    let server = server_with_model(options(), Limits::default())
        .with_fetcher(plugin.clone())
        .with_event_handler(plugin);
    start_in_process(server)
}

/// A request as FC forwards it, with STS credentials.
fn fc_post(
    addr: SocketAddr,
    control_path: &str,
    path: &str,
    retry: u32,
) -> reqwest::RequestBuilder {
    let k = oss_keys();
    client()
        .post(format!("http://{addr}{path}"))
        .header("x-fc-control-path", control_path)
        .header("x-fc-request-id", format!("1-fault-{retry}"))
        .header("x-fc-retry-count", retry.to_string())
        .header("x-fc-access-key-id", k.id)
        .header("x-fc-access-key-secret", k.secret)
        .header("x-fc-security-token", k.token.unwrap_or_default())
        .header("x-fc-region", "cn-shanghai")
}

async fn answer(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let fc_status = response.fc_status().unwrap_or_default();
    (status, fc_status, response.json_body().await)
}

async fn invoke_event(addr: SocketAddr, event: &str, retry: u32) -> (u16, String, Value) {
    let response = fc_post(addr, "/invoke", "/invoke", retry)
        .header("content-type", "application/octet-stream")
        .body(event.to_string())
        .send()
        .await
        .expect("invoke");
    answer(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_result_write_fails_the_event_and_the_retry_writes_it_exactly_once() {
    let oss = start_oss();
    oss.create_bucket("testbucket", "cn-shanghai");
    let addr = oss_function(&oss.endpoint(), &oss.host_port(), 2);
    let image = jpeg(120, 90);
    let (source, result) = ("image/put-fails.jpg", "results/image/put-fails.jpg.json");
    oss.put("testbucket", source, image.clone());
    // Both attempts of the first delivery's PutObject fail; GetObject is untouched.
    for _ in 0..2 {
        oss.inject_for(Method::PUT, result, Fault::Status(500));
    }
    let event = TEMPLATE.replace("\"image/a.jpg\"", &format!("\"{source}\""));

    let (status, fc_status, body) = invoke_event(addr, &event, 0).await;
    assert_eq!((status, fc_status.as_str()), (404, "404"), "{body}");
    assert_eq!(body["error"]["code"], "event_failed", "{body}");
    assert!(
        oss.object("testbucket", result).is_none(),
        "written despite the failure"
    );
    let seen = oss.requests();
    let source_path = format!("/testbucket/{source}");
    let result_path = format!("/testbucket/{result}");
    let gets = seen
        .iter()
        .filter(|r| r.method == "GET" && r.path == source_path && r.verdict.is_ok())
        .count();
    let puts = |seen: &[oss_server::Seen]| {
        seen.iter()
            .filter(|r| r.method == "PUT" && r.path == result_path)
            .count()
    };
    assert_eq!(gets, 1, "GetObject should have succeeded once: {seen:?}");
    assert_eq!(puts(&seen), 2, "two PutObject attempts expected");

    // FC delivers the event again.
    let (status, fc_status, body) = invoke_event(addr, &event, 1).await;
    assert_eq!((status, fc_status.as_str()), (200, "200"), "{body}");
    assert_eq!(body["records"][0]["status"], "classified", "{body}");
    let results: Vec<String> = oss
        .keys("testbucket")
        .into_iter()
        .filter(|k| k.starts_with("results/image/put-fails"))
        .collect();
    assert_eq!(results, vec![result.to_string()]);
    assert_eq!(puts(&oss.requests()), 3, "exactly one more PutObject");
    let stored = oss.object("testbucket", result).expect("result object");
    let written: Value = serde_json::from_slice(&stored.body).expect("JSON");
    assert_eq!(written["status"], "ok", "{written}");
    // Reference: the same bytes classified inline through the same server.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let response = fc_post(addr, "/http-invoke", "/classify", 0)
        .header("content-type", "application/json")
        .body(json!({"image": b64, "top_k": RESULT_TOP_K}).to_string())
        .send()
        .await
        .expect("classify");
    let (status, _, inline) = answer(response).await;
    assert_eq!(status, 200, "{inline}");
    crate::support::assert_same_predictions(&written["predictions"], &inline["predictions"]);
}

/// An OSS stand-in whose clock disagrees with ours: every request gets OSS's skew refusal
/// (403 `RequestTimeTooSkewed`, error document as OSS writes it, with its own times).
async fn skewed_oss() -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  \
                               <Code>RequestTimeTooSkewed</Code>\n  <Message>The difference \
                               between the request time and the current time is too large.\
                               </Message>\n  <RequestId>5C3D9175B6FC201293AD0000</RequestId>\n  \
                               <HostId>127.0.0.1</HostId>\n  <MaxAllowedSkewMilliseconds>900000\
                               </MaxAllowedSkewMilliseconds>\n  <RequestTime>\
                               2026-01-01T00:00:00.000Z</RequestTime>\n  <ServerTime>\
                               2026-01-01T00:20:00.000Z</ServerTime>\n</Error>\n";
                    async move {
                        http::Response::builder()
                            .status(403)
                            .header("content-type", "application/xml")
                            .body(axum::body::Body::from(xml))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_refusals_are_reported_as_403_request_time_too_skewed() {
    let (oss, hits) = skewed_oss().await;
    let addr = oss_function(&format!("http://{oss}"), &oss.to_string(), 3);

    let response = fc_post(addr, "/http-invoke", "/classify", 0)
        .header("content-type", "application/json")
        .body(json!({"url": "oss://testbucket/image/skew.jpg"}).to_string())
        .send()
        .await
        .expect("classify");
    let (status, _, body) = answer(response).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "oss_forbidden", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("RequestTimeTooSkewed"), "{message}");
    assert!(message.contains("testbucket/image/skew.jpg"), "{message}");
    // A 403 is final: no retry storm against OSS.
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Upload event: the record fails (the operator can fix the clock), FC retries.
    let event = TEMPLATE.replace("\"image/a.jpg\"", "\"image/skew.jpg\"");
    let (status, fc_status, body) = invoke_event(addr, &event, 0).await;
    assert_eq!((status, fc_status.as_str()), (404, "404"), "{body}");
    assert_eq!(body["error"]["code"], "event_failed", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("RequestTimeTooSkewed"), "{message}");
    assert!(!body.to_string().contains("fault-secret-value"), "{body}");
}
