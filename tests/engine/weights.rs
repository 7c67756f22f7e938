//! Weights pipeline: `convert` on tiny PyTorch-written checkpoints, `fetch-model` against a local
//! HTTP server, and the CLI exit codes.
//!
//! The checkpoints in `tests/fixtures/checkpoints/` were written by `torch.save` (see
//! `tools/golden/make_golden.py`); `checkpoints.json` documents their values, which are the
//! expected values here. Expected hashes are computed by the test with `sha2`, independently of
//! the code under test.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use candle_core::{DType, Device, Tensor};
use resnet18_fc::resnet::ResNet18;
use resnet18_fc::weights::manifest::Manifest;
use resnet18_fc::weights::pth::Checkpoint;
use resnet18_fc::weights::{
    self, ConvertOptions, ConvertReport, EnsureOutcome, FetchOptions, OutputDType, WeightsError,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/checkpoints");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn description() -> Value {
    let text = std::fs::read_to_string(fixture("checkpoints.json")).expect("checkpoints.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Names of the entries of `dir`.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    e.expect("dir entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn load_safetensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).expect("readable safetensors")
}

/// Asserts every documented float tensor has its documented shape, `dtype` and constant value.
fn assert_documented_values(tensors: &HashMap<String, Tensor>, dtype: DType) {
    let documented = description()["float_tensors"]
        .as_array()
        .expect("float_tensors")
        .clone();
    assert_eq!(documented.len(), 102);
    assert_eq!(tensors.len(), 102, "exactly the ResNet-18 float tensors");
    for spec in documented {
        let name = spec["name"].as_str().expect("name");
        let shape: Vec<usize> = serde_json::from_value(spec["shape"].clone()).expect("shape");
        let value = spec["value"].as_f64().expect("value") as f32;
        let t = &tensors[name];
        assert_eq!(t.dims(), shape.as_slice(), "{name} shape");
        assert_eq!(t.dtype(), dtype, "{name} dtype");
        let values = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values");
        assert!(
            values.iter().all(|&v| v == value),
            "{name}: expected all {value}"
        );
    }
    assert!(!tensors.keys().any(|k| k.contains("num_batches_tracked")));
}

/// Converts a fixture with default options into a fresh directory.
fn convert_fixture(name: &str) -> (tempfile::TempDir, PathBuf, ConvertReport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("resnet18.safetensors");
    let report = weights::convert_checkpoint(&fixture(name), &out, &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("{name} converts: {e}"));
    (dir, out, report)
}

#[test]
fn tiny_checkpoint_converts_with_documented_names_shapes_and_values() {
    let (dir, out, report) = convert_fixture("resnet18_tiny.pth");
    assert_eq!(report.tensors, 102);
    assert_eq!(
        (report.dtype.as_str(), report.source_dtype.as_str()),
        ("f32", "f32")
    );
    assert!(report.unused.is_empty(), "unused: {:?}", report.unused);
    let bytes = std::fs::read(&out).expect("output");
    assert_eq!(report.sha256, sha256_hex(&bytes));
    assert_eq!(report.size, bytes.len() as u64);
    assert_documented_values(&load_safetensors(&out), DType::F32);
    assert!(
        ResNet18::load(&out).is_ok(),
        "converted file loads as the model"
    );
    assert_eq!(
        listing(dir.path()),
        BTreeSet::from(["resnet18.safetensors".to_owned()])
    );
}

#[test]
fn f16_checkpoint_converts_to_f16_with_the_same_values() {
    let (_dir, out, report) = convert_fixture("resnet18_tiny_f16.pth");
    assert_eq!(
        (report.dtype.as_str(), report.source_dtype.as_str()),
        ("f16", "f16")
    );
    assert_documented_values(&load_safetensors(&out), DType::F16);
    assert!(ResNet18::load(&out).is_ok());
}

#[test]
fn dtype_option_changes_the_stored_float_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("resnet18_tiny.pth", OutputDType::F16, DType::F16),
        ("resnet18_tiny_f16.pth", OutputDType::F32, DType::F32),
        ("resnet18_tiny.pth", OutputDType::BF16, DType::BF16),
    ];
    for (input, requested, dtype) in cases {
        let out = dir.path().join(format!("{input}.{requested}.safetensors"));
        let opts = ConvertOptions {
            dtype: Some(requested),
            key: None,
        };
        let report = weights::convert_checkpoint(&fixture(input), &out, &opts).expect("converts");
        assert_eq!(report.dtype, requested.name());
        // All documented values are multiples of 1/16 below 8: exact in f16 and bf16.
        assert_documented_values(&load_safetensors(&out), dtype);
    }
}

fn convert_error(input: &Path) -> (String, bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.safetensors");
    let err = weights::convert_checkpoint(input, &out, &ConvertOptions::default())
        .expect_err("conversion must fail");
    (err.to_string(), listing(dir.path()).is_empty())
}

#[test]
fn missing_tensor_error_names_it_and_writes_nothing() {
    let missing = description()["missing_tensor"]
        .as_str()
        .expect("name")
        .to_owned();
    assert_eq!(missing, "layer3.1.bn2.running_var");
    let (message, nothing_written) = convert_error(&fixture("resnet18_missing.pth"));
    assert!(
        message.contains("missing tensor layer3.1.bn2.running_var (expected float [256])"),
        "{message}"
    );
    assert!(nothing_written);
}

#[test]
fn misshaped_tensor_error_names_it_with_both_shapes() {
    let (message, nothing_written) = convert_error(&fixture("resnet18_misshaped.pth"));
    assert!(message.contains("fc.weight"), "{message}");
    assert!(message.contains("[10, 512]"), "{message}");
    assert!(message.contains("[1000, 512]"), "{message}");
    assert!(nothing_written);
}

#[test]
fn contiguous_storages_are_read_element_by_element() {
    // Documented: element i (row-major) of the j-th (1-based) of these tensors is f32(i/1024 + j).
    let mut checkpoint =
        Checkpoint::open(&fixture("resnet18_contiguous_subset.pth"), None).expect("opens");
    for (j, name) in ["conv1.weight", "bn1.running_var", "fc.bias"]
        .iter()
        .enumerate()
    {
        let entry = checkpoint.get(name).expect("present").clone();
        let bytes = checkpoint.read_tensor(&entry).expect("reads");
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values.len(), entry.numel());
        for (i, v) in values.iter().enumerate() {
            let expected = (i as f64 / 1024.0 + (j + 1) as f64) as f32;
            assert_eq!(*v, expected, "{name}[{i}]");
        }
    }
}

/// Rewrites the tiny checkpoint with its state dict nested as `{"epoch": 7, key: state_dict}`,
/// by wrapping the original pickle (protocol 2) in an outer dict:
/// `EMPTY_DICT, BINUNICODE "epoch", BININT1 7, SETITEM, BINUNICODE key, <original>, SETITEM, STOP`.
fn nested_checkpoint(dir: &Path, key: &str) -> PathBuf {
    let source = std::fs::File::open(fixture("resnet18_tiny.pth")).expect("fixture");
    let mut archive = zip::ZipArchive::new(source).expect("zip");
    let out = dir.join(format!("nested_{key}.pth"));
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&out).expect("create"));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        let name = entry.name().expect("utf-8 name").into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        if name.ends_with("/data.pkl") {
            data = wrap_pickle(&data, key);
        }
        writer.start_file(name, options).expect("start");
        writer.write_all(&data).expect("write");
    }
    writer.finish().expect("finish");
    out
}

fn binunicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

fn wrap_pickle(original: &[u8], key: &str) -> Vec<u8> {
    assert_eq!(&original[..2], b"\x80\x02", "protocol 2 pickle");
    assert_eq!(original.last(), Some(&b'.'), "ends with STOP");
    let mut out = b"\x80\x02}".to_vec();
    out.extend(binunicode("epoch"));
    out.extend([b'K', 7, b's']);
    out.extend(binunicode(key));
    out.extend_from_slice(&original[2..original.len() - 1]);
    out.extend([b's', b'.']);
    out
}

#[test]
fn state_dict_nested_under_a_common_key_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in ["state_dict", "model"] {
        let input = nested_checkpoint(dir.path(), key);
        let out = dir.path().join(format!("{key}.safetensors"));
        let report = weights::convert_checkpoint(&input, &out, &ConvertOptions::default())
            .expect("nested checkpoint converts");
        assert_eq!(report.state_dict_key.as_deref(), Some(key));
        assert_documented_values(&load_safetensors(&out), DType::F32);
    }
}

#[test]
fn state_dict_under_an_unusual_key_needs_the_key_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = nested_checkpoint(dir.path(), "ema_weights");
    let out = dir.path().join("out.safetensors");
    let err = weights::convert_checkpoint(&input, &out, &ConvertOptions::default())
        .expect_err("not found without --key");
    assert!(matches!(err, WeightsError::NoStateDict { .. }), "{err}");
    assert!(
        err.to_string().contains("ema_weights"),
        "lists top-level keys: {err}"
    );
    let opts = ConvertOptions {
        dtype: None,
        key: Some("ema_weights".into()),
    };
    let report = weights::convert_checkpoint(&input, &out, &opts).expect("converts with key");
    assert_eq!(report.tensors, 102);
}

#[test]
fn legacy_serialization_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("legacy.pth");
    // Legacy torch.save output begins with PROTO 2 and the magic number
    // 0x1950a86a20f9469cfc6c as a LONG1 (MAGIC_NUMBER in torch/serialization.py).
    let mut bytes = vec![0x80, 0x02, 0x8a, 0x0a];
    bytes.extend([
        0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ]);
    std::fs::write(&input, bytes).expect("write");
    let out = dir.path().join("out.safetensors");
    let err = weights::convert_checkpoint(&input, &out, &ConvertOptions::default())
        .expect_err("legacy refused");
    assert!(matches!(err, WeightsError::LegacyFormat { .. }), "{err}");
    assert!(err.to_string().contains("legacy"), "{err}");
    assert!(!out.exists());
}

#[test]
fn non_checkpoint_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("photo.pth");
    std::fs::write(&input, b"\xff\xd8\xff\xe0 not a checkpoint").expect("write");
    let (message, _) = convert_error(&input);
    assert!(
        message.contains("not a readable PyTorch checkpoint"),
        "{message}"
    );
}

// ---------------------------------------------------------------- fetch against a local server

/// How the local server answers every request.
#[derive(Clone)]
enum Reply {
    /// 200 with the whole body.
    Full(Vec<u8>),
    /// The given status with a short text body.
    Status(u16),
    /// 200 announcing the whole body's length, then only half of it before closing.
    Truncated(Vec<u8>),
}

/// Serves `reply` on 127.0.0.1 from a background thread; returns the base URL.
fn serve(reply: Reply) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let reply = reply.clone();
            thread::spawn(move || answer(stream, &reply));
        }
    });
    format!("http://{addr}")
}

fn answer(mut stream: TcpStream, reply: &Reply) {
    if !crate::support::read_request_head(&mut stream) {
        return;
    }
    let (status, body, send) = match reply {
        Reply::Full(b) => (200, b.clone(), b.len()),
        Reply::Status(s) => (*s, b"server error".to_vec(), 12),
        Reply::Truncated(b) => (200, b.clone(), b.len() / 2),
    };
    let header = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&body[..send]);
    let _ = stream.flush();
}

fn tiny_bytes() -> Vec<u8> {
    std::fs::read(fixture("resnet18_tiny.pth")).expect("fixture")
}

fn fetch_options(url: String, sha256: String, dir: &Path) -> FetchOptions {
    FetchOptions {
        url,
        sha256,
        progress: false,
        ..FetchOptions::default()
    }
    .in_dir(dir)
}

#[test]
fn fetch_with_matching_sha256_installs_model_and_manifest() {
    let body = tiny_bytes();
    let source_sha = sha256_hex(&body);
    let url = format!(
        "{}/models/resnet18_tiny.pth",
        serve(Reply::Full(body.clone()))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let model_dir = dir.path().join("model"); // does not exist yet
    let report = weights::fetch_model(&fetch_options(
        format!("{url}?X-Signature=secret"),
        source_sha.to_uppercase(),
        &model_dir,
    ))
    .expect("fetch succeeds");

    assert_eq!(
        listing(&model_dir),
        BTreeSet::from(["MANIFEST".to_owned(), "resnet18.safetensors".to_owned()])
    );
    let model = model_dir.join("resnet18.safetensors");
    assert_eq!(report.model, model);
    assert_documented_values(&load_safetensors(&model), DType::F32);

    let installed = std::fs::read(&model).expect("model");
    let text = std::fs::read_to_string(model_dir.join("MANIFEST")).expect("manifest");
    let manifest = Manifest::parse(&text).expect("parses");
    assert_eq!(manifest.file, "resnet18.safetensors");
    assert_eq!(manifest.sha256, sha256_hex(&installed));
    assert_eq!(manifest.size, installed.len() as u64);
    assert_eq!(manifest.dtype, "f32");
    assert_eq!(manifest.tensors, 102);
    assert_eq!(
        manifest.source_url, url,
        "query string (signature) not recorded"
    );
    assert_eq!(manifest.source_sha256, source_sha);
    assert_eq!(manifest.source_size, body.len() as u64);
    assert_eq!(
        manifest.converter,
        format!("resnet18-fc {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(!text.contains("secret"));
    assert!(
        text.contains(&format!("\nsource_sha256 = {source_sha}\n")),
        "{text}"
    );
    assert_eq!(report.manifest, manifest);
}

/// Runs a fetch that must fail and checks that `model_dir` (pre-existing, with one unrelated
/// file) holds nothing new afterwards. Returns the error.
fn failed_fetch_leaves_nothing(reply: Reply, sha256: String) -> WeightsError {
    let url = format!("{}/resnet18.pth", serve(reply));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("README.md"), "keep me").expect("write");
    let before = listing(dir.path());
    let err = weights::fetch_model(&fetch_options(url.clone(), sha256.clone(), dir.path()))
        .expect_err("fetch must fail");
    assert_eq!(
        listing(dir.path()),
        before,
        "nothing left behind after: {err}"
    );

    // A model directory that did not exist is not left behind either.
    let fresh = dir.path().join("new-model-dir");
    weights::fetch_model(&fetch_options(url, sha256, &fresh)).expect_err("fails again");
    assert!(!fresh.exists(), "created directory removed");
    err
}

#[test]
fn fetch_with_wrong_sha256_fails_and_leaves_nothing() {
    let body = tiny_bytes();
    let wrong = "0".repeat(64);
    let err = failed_fetch_leaves_nothing(Reply::Full(body.clone()), wrong.clone());
    match &err {
        WeightsError::HashMismatch {
            expected,
            actual,
            size,
            ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256_hex(&body));
            assert_eq!(*size, body.len() as u64);
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(err.to_string().contains("nothing was installed"));
}

#[test]
fn fetch_with_http_500_fails_and_leaves_nothing() {
    let err = failed_fetch_leaves_nothing(Reply::Status(500), sha256_hex(&tiny_bytes()));
    assert!(
        matches!(err, WeightsError::HttpStatus { status: 500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("500"));
}

#[test]
fn fetch_with_connection_dropped_mid_body_fails_and_leaves_nothing() {
    let body = tiny_bytes();
    let err = failed_fetch_leaves_nothing(Reply::Truncated(body.clone()), sha256_hex(&body));
    assert!(matches!(err, WeightsError::Download { .. }), "{err}");
}

#[test]
fn fetch_rejects_a_malformed_sha256_before_downloading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = fetch_options("http://127.0.0.1:9/x".into(), "f37072fd".into(), dir.path());
    let err = weights::fetch_model(&opts).expect_err("invalid hash");
    assert!(matches!(err, WeightsError::InvalidSha256 { .. }), "{err}");
}

#[test]
fn ensure_model_keeps_present_file_and_refuses_to_download_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 9 (discard) on loopback: any download attempt would fail.
    let opts = fetch_options("http://127.0.0.1:9/x".into(), "0".repeat(64), dir.path());
    let present = dir.path().join("present.safetensors");
    std::fs::write(&present, b"anything").expect("write");
    assert_eq!(
        weights::ensure_model(&present, &opts, false).expect("present"),
        EnsureOutcome::Present
    );
    let missing = dir.path().join("resnet18.safetensors");
    let err = weights::ensure_model(&missing, &opts, true).expect_err("offline");
    let message = err.to_string();
    assert!(message.contains("resnet18-fc fetch-model"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_model_fetches_missing_model_from_a_tokio_blocking_task() {
    let body = tiny_bytes();
    let url = format!("{}/r.pth", serve(Reply::Full(body.clone())));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weights").join("custom.safetensors");
    let opts = fetch_options(url, sha256_hex(&body), Path::new("unused"));
    let task_path = path.clone();
    let outcome =
        tokio::task::spawn_blocking(move || weights::ensure_model(&task_path, &opts, false))
            .await
            .expect("task ran")
            .expect("fetched");
    let EnsureOutcome::Fetched(report) = outcome else {
        panic!("expected a fetch");
    };
    assert_eq!(report.model, path);
    assert_eq!(report.manifest.file, "custom.safetensors");
    assert!(path.with_file_name("MANIFEST").is_file());
    assert!(ResNet18::load(&path).is_ok());
}

#[tokio::test]
async fn fetch_model_async_runs_on_the_callers_runtime() {
    let body = tiny_bytes();
    let url = format!("{}/r.pth", serve(Reply::Full(body.clone())));
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = fetch_options(url, sha256_hex(&body), dir.path());
    let report = weights::fetch_model_async(&opts).await.expect("fetched");
    assert_eq!(report.manifest.source_size, body.len() as u64);
    assert!(dir.path().join("resnet18.safetensors").is_file());
}

// ---------------------------------------------------------------- CLI

fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet18-fc"));
    cmd.env_remove(weights::URL_ENV)
        .env_remove(weights::SHA256_ENV);
    cmd
}

fn assert_exit_code(output: &std::process::Output, code: i32) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
}

#[test]
fn cli_convert_exits_zero_on_success_and_one_on_a_bad_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ok.safetensors");
    let ok = cli()
        .args(["convert", "--dtype", "f16"])
        .arg(fixture("resnet18_tiny.pth"))
        .arg(&out)
        .output()
        .expect("runs");
    assert_exit_code(&ok, 0);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("102 tensors, f16 from f32"));
    assert_documented_values(&load_safetensors(&out), DType::F16);

    let bad_out = dir.path().join("bad.safetensors");
    let bad = cli()
        .arg("convert")
        .arg(fixture("resnet18_misshaped.pth"))
        .arg(&bad_out)
        .output()
        .expect("runs");
    assert_exit_code(&bad, 1);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("fc.weight has shape [10, 512], expected [1000, 512]"),
        "{stderr}"
    );
    assert!(!bad_out.exists());
}

#[test]
fn cli_fetch_model_takes_url_and_sha256_from_the_environment() {
    let body = tiny_bytes();
    let url = format!("{}/env.pth", serve(Reply::Full(body.clone())));
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = cli()
        .arg("fetch-model")
        .arg("--model-dir")
        .arg(dir.path())
        .env(weights::URL_ENV, &url)
        .env(weights::SHA256_ENV, sha256_hex(&body))
        .output()
        .expect("runs");
    assert_exit_code(&ok, 0);
    let manifest = std::fs::read_to_string(dir.path().join("MANIFEST")).expect("manifest");
    assert!(
        manifest.contains(&format!("source_url = {url}\n")),
        "{manifest}"
    );

    let wrong = cli()
        .arg("fetch-model")
        .arg("--model-dir")
        .arg(dir.path().join("other"))
        .args(["--url", &url, "--sha256", &"1".repeat(64)])
        .output()
        .expect("runs");
    assert_exit_code(&wrong, 1);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("sha256 mismatch"));
    assert!(!dir.path().join("other").exists());
}

#[test]
fn committed_manifest_example_follows_the_format_and_names_torchvision_checkpoint() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/model/MANIFEST.example");
    let text = std::fs::read_to_string(path).expect("MANIFEST.example");
    let manifest = Manifest::parse(&text).expect("parses");
    assert_eq!(
        manifest.source_url,
        "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    );
    assert_eq!(
        manifest.source_sha256,
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
    );
    assert_eq!(manifest.source_size, 46_830_571);
    assert_eq!(
        (
            manifest.source_url.as_str(),
            manifest.source_sha256.as_str(),
            manifest.source_size
        ),
        (
            weights::DEFAULT_URL,
            weights::DEFAULT_SHA256,
            weights::DEFAULT_SIZE
        )
    );
    assert_eq!((manifest.tensors, manifest.dtype.as_str()), (102, "f32"));
}
