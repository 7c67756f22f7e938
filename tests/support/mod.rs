//! The one support module of the test binaries (each includes it with
//! `#[path = "../support/mod.rs"] mod support;`): synthetic model, generated images, an
//! in-process server on an ephemeral loopback port, the real binary as a child process, a raw
//! HTTP/1.1 exchange for keep-alive checks, and the local OSS-compatible server ([`oss_server`]).
#![allow(dead_code)] // each test binary uses a different subset of this one module

pub mod oss_server;
pub mod photo;

/// FC's OSS-trigger event template (docs/function-compute.md §2), as the tests send it.
pub const OSS_EVENT_TEMPLATE: &str = include_str!("../data/oss_event_template.json");

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use resnet18_fc::app;
use resnet18_fc::classifier::{Classifier, Precision};
use resnet18_fc::engine::{
    BatchOptions, Engine, EngineOptions, FileLoader, ModelLoader, ModelSlot,
};
use resnet18_fc::fc::Lifecycle;
use resnet18_fc::http::Server;
use resnet18_fc::preprocess::Limits;
use resnet18_fc::synthetic::SyntheticWeights;

/// Synthetic ResNet-18 weights, generated once per test binary.
pub fn weights() -> &'static SyntheticWeights {
    static WEIGHTS: OnceLock<SyntheticWeights> = OnceLock::new();
    WEIGHTS.get_or_init(SyntheticWeights::generate)
}

/// A safetensors file of the synthetic weights, written once per test binary run under
/// Cargo's per-target temp dir (overwritten by the next run, so nothing piles up in /tmp).
pub fn model_file() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
            .unwrap_or_else(|| "server-tests".into());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("server-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{binary}.safetensors"));
        let partial = dir.join(format!("{binary}.{}.partial", std::process::id()));
        weights()
            .write_safetensors(&partial)
            .expect("write weights");
        std::fs::rename(&partial, &path).expect("rename weights");
        path
    })
}

/// A classifier over the synthetic weights.
pub fn classifier(limits: Limits) -> Classifier {
    Classifier::from_source(weights(), "synthetic", limits).expect("synthetic classifier")
}

/// A server holding the synthetic classifier already.
pub fn server_with_model(options: ServerOptions, limits: Limits) -> Server {
    let loader = Arc::new(FileLoader {
        path: PathBuf::from("/nonexistent/unused.safetensors"),
        limits,
        precision: Precision::F32,
    });
    let slot = ModelSlot::with_classifier(loader, classifier(limits));
    let engine = Engine::with_slot(Arc::new(slot), options.engine());
    Server::new(engine).with_max_body_bytes(options.max_body_bytes)
}

/// A server whose model `loader` loads on first use (or `/initialize`).
pub fn server_with_loader(loader: Arc<dyn ModelLoader>, options: ServerOptions) -> Server {
    Server::new(Engine::new(loader, options.engine())).with_max_body_bytes(options.max_body_bytes)
}

/// What the tests vary: the HTTP body limit and the engine's tunables.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Inference jobs that run at once.
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    /// Micro-batching.
    pub batch: BatchOptions,
}

impl ServerOptions {
    fn engine(self) -> EngineOptions {
        EngineOptions {
            workers: self.workers,
            queue: self.queue,
            batch: self.batch,
        }
    }
}

/// Default options with a small pool.
pub fn options() -> ServerOptions {
    ServerOptions {
        max_body_bytes: 32 * 1024 * 1024,
        workers: 2,
        queue: 64,
        batch: Default::default(),
    }
}

/// Serves `server` on 127.0.0.1:0 from a background thread with its own runtime; returns the
/// address. The server lives until the test binary exits.
pub fn start_in_process(server: Server) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let lifecycle = Lifecycle::new();
            let app = app::router(&server, Arc::clone(&lifecycle));
            resnet18_fc::fc::serve(listener, app, lifecycle)
                .await
                .expect("serve");
        });
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server address")
}

/// An HTTP client (reqwest needs a rustls provider even for plain http).
pub fn client() -> reqwest::Client {
    static PROVIDER: OnceLock<()> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// A deterministic colourful RGB test picture.
pub fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    })
}

/// `picture` encoded in `format`.
pub fn encoded(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    picture(width, height)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

/// A PNG test image.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encoded(width, height, ImageFormat::Png)
}

/// A JPEG test image.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encoded(width, height, ImageFormat::Jpeg)
}

/// One multipart/form-data part.
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

/// Boundary used by [`multipart_body`].
pub const BOUNDARY: &str = "test-boundary-7MA4YWxkTrZu0gW";

/// A multipart/form-data body (RFC 7578) with [`BOUNDARY`].
pub fn multipart_body(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(f) = part.filename {
            disposition += &format!("; filename=\"{f}\"");
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Content-Type of [`multipart_body`].
pub fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// Environment variables a child server must not inherit from the test environment.
const INHERITED_FC_VARS: [&str; 16] = [
    "RESNET18_FC_OFFLINE",
    "RESNET18_FC_MAX_BODY_BYTES",
    "RESNET18_FC_MAX_PIXELS",
    "FC_CUSTOM_LISTEN_PORT",
    "FC_SERVER_PORT",
    "FC_FUNC_CODE_PATH",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "RESNET18_FC_MODEL",
    "RESNET18_FC_WORKERS",
    "RESNET18_FC_QUEUE",
    "RESNET18_FC_BATCH_MAX",
    "RESNET18_FC_BATCH_WAIT_MS",
    "RESNET18_FC_DRAIN_SECONDS",
    "RUST_LOG",
];

/// The real `resnet18-fc` binary running `serve` on 127.0.0.1:0, its stdout and stderr
/// captured. Killed on drop if still running.
pub struct Spawned {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Spawned {
    /// `GET /healthz` of this server, parsed.
    pub async fn healthz(&self) -> serde_json::Value {
        let bytes = client()
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .bytes()
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// Starts the binary with the synthetic model, extra arguments and environment, and waits
    /// until it listens.
    pub fn start(extra_args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_with_model(model_file(), extra_args, envs)
    }

    /// Like [`Spawned::start`] with another weights path.
    pub fn start_with_model(model: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut args: Vec<OsString> = vec!["serve".into()];
        args.extend(["--host", "127.0.0.1", "--port", "0", "--model"].map(OsString::from));
        args.push(model.into());
        args.extend(extra_args.iter().map(OsString::from));
        Self::start_args(&args, envs)
    }

    /// Starts the binary with exactly `args` (which must make it listen on a printed address).
    pub fn start_args(args: &[OsString], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_resnet18-fc"));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in INHERITED_FC_VARS {
            command.env_remove(var);
        }
        command.envs(envs.iter().copied());
        let mut child = command.spawn().expect("spawn resnet18-fc");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect(stdout, Arc::clone(&output));
        collect(stderr, Arc::clone(&output));
        let mut spawned = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            output,
        };
        let found = spawned.wait_for_output(|o| o.contains("listening on http://"), 60);
        assert!(found, "server did not start:\n{}", spawned.output());
        spawned.addr = parse_listen_address(&spawned.output());
        spawned
    }

    /// Waits until the model is loaded (its log line appears).
    pub fn wait_ready(&self) {
        let ready = self.wait_for_output(|o| o.contains("model ready"), 120);
        assert!(ready, "model not ready:\n{}", self.output());
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything printed so far on stdout and stderr.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Polls the output until `predicate` holds or `seconds` pass.
    pub fn wait_for_output(&self, predicate: impl Fn(&str) -> bool, seconds: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            if predicate(&self.output()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        predicate(&self.output())
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `seconds`.
    pub fn wait_exit(&mut self, seconds: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Number of threads of the process (entries of `/proc/<pid>/task`).
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(stream: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut o) = output.lock() {
                o.push_str(&line);
                o.push('\n');
            }
        }
    });
}

fn parse_listen_address(output: &str) -> SocketAddr {
    let line = output
        .lines()
        .find(|l| l.contains("listening on http://"))
        .expect("listening line");
    let start = line.find("http://").expect("url") + "http://".len();
    line[start..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse address from {line:?}"))
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` on `stream` and reads one response with a Content-Length body.
pub fn raw_exchange(stream: &mut TcpStream, request: &[u8]) -> std::io::Result<RawResponse> {
    stream.write_all(request)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a full response head",
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Largest score difference accepted between two answers for the same image. The server
/// batches concurrent requests (also those of other tests sharing a server), and a forward of
/// n images may round differently in the last float bits from a forward of one; classes and
/// ranks must still be identical.
pub const BATCHING_SCORE_TOLERANCE: f64 = 1e-5;

/// Asserts that two `predictions` arrays name the same classes in the same order with scores
/// within [`BATCHING_SCORE_TOLERANCE`].
pub fn assert_same_predictions(left: &serde_json::Value, right: &serde_json::Value) {
    let (Some(left), Some(right)) = (left.as_array(), right.as_array()) else {
        panic!("predictions are not arrays: {left} / {right}");
    };
    assert_eq!(left.len(), right.len(), "{left:?} / {right:?}");
    for (a, b) in left.iter().zip(right) {
        for key in ["rank", "index", "label"] {
            assert_eq!(a[key], b[key], "{key}: {a} / {b}");
        }
        let (Some(sa), Some(sb)) = (a["score"].as_f64(), b["score"].as_f64()) else {
            panic!("scores missing: {a} / {b}");
        };
        assert!(
            (sa - sb).abs() <= BATCHING_SCORE_TOLERANCE,
            "score {sa} vs {sb}: {a} / {b}"
        );
    }
}

/// The one way the tests read an HTTP answer (reqwest's `json` feature is off: the bodies are
/// parsed here).
#[allow(async_fn_in_trait)] // test-only trait, never used across threads by name
pub trait ResponseExt {
    /// The `x-fc-status` header, if sent.
    fn fc_status(&self) -> Option<String>;
    /// The body as JSON; panics, showing the body, when it is not JSON.
    async fn json_body(self) -> serde_json::Value;
    /// The body as JSON, or `Null` when it is not JSON (or could not be read).
    async fn json_or_null(self) -> serde_json::Value;
}

impl ResponseExt for reqwest::Response {
    fn fc_status(&self) -> Option<String> {
        self.headers()
            .get("x-fc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    async fn json_body(self) -> serde_json::Value {
        let bytes = self.bytes().await.expect("body");
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    }

    async fn json_or_null(self) -> serde_json::Value {
        let bytes = self.bytes().await.unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }
}

/// Line `index` of the Chinese class-name file, read from disk (not through the crate).
pub fn chinese_name(index: u64) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/model/imagenet_classes.zh.txt");
    let text = std::fs::read_to_string(path).expect("Chinese class names");
    let index = usize::try_from(index).expect("index");
    text.lines()
        .nth(index)
        .expect("line for the class")
        .to_string()
}

/// An environment lookup that knows only `pairs`.
pub fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Reads an HTTP request head (up to the empty line) from `stream`, byte by byte; false when
/// the connection ends first. For the tests' one-file download servers.
pub fn read_request_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// `tests/fixtures/golden/`: what PyTorch computed from the synthetic weights.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// A JSON file of [`golden_dir`], parsed; panics naming the file when it cannot be.
pub fn read_golden_json<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = golden_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}
