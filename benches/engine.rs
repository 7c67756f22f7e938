//! Engine benchmark: warm forward latency (batch 1 at 1 and 2 threads, batch 8 at 2 threads), load
//! time and peak RSS of resnet18-fc's graph next to stock
//! `candle_transformers::models::resnet::resnet18`, on the same synthetic weights, in the same
//! invocation.
//!
//! Run: `cargo bench --bench engine` (optionally `-- --rounds 5 --iters 20`).
//!
//! Each measurement runs in a fresh child process (this same executable with `--child`), so load
//! time and peak RSS (`VmHWM`) are per configuration and the thread count (`RAYON_NUM_THREADS`,
//! read by rayon and candle) is fixed for the whole process. Configurations are interleaved round
//! by round so machine noise hits all of them alike; the table shows medians and the ratio to
//! stock candle.
//!
//! Modes used by `tools/bench/compare.py` (the comparison with ONNX Runtime and torch):
//! * `--write-weights PATH` writes the synthetic weights as safetensors;
//! * `--child IMPL WEIGHTS ITERS [BATCH]` (IMPL: `resnet18-fc`, `resnet18-fc-int8`,
//!   `resnet18-fc-im2col`, `candle-stock`) prints one JSON line
//!   `{"load_ms", "forward_ms", "rss_mb", "logit_sum", "top1"}` (median forward; logits of image 0).
//!
//! Modes used by `tools/bench/int8.py` (int8 against ONNX Runtime's int8):
//! * `--logits WEIGHTS TENSORS COUNT` reads `COUNT` normalised `3×224×224` f32 tensors
//!   (little-endian, concatenated) and prints `{"f32": [[…]], "int8": [[…]]}`, the logits of
//!   both precisions;
//! * `--child-e2e PRECISION WEIGHTS IMAGE ITERS` times `Classifier::classify` (decode +
//!   preprocess + forward) on one image file and prints the same JSON line as `--child`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN};
use resnet18_fc::resnet::Precision;
use resnet18_fc::synthetic::SyntheticWeights;

/// `resnet18-fc-im2col` is our graph with every convolution as im2col + GEMM (no Winograd), the
/// reference for what the Winograd 3×3 layers gain; stock candle stays last (the ratio base).
const IMPLS: [&str; 3] = ["resnet18-fc", "resnet18-fc-im2col", "candle-stock"];
/// (threads, batch) of each measured configuration.
const CONFIGS: [(usize, usize); 3] = [(1, 1), (2, 1), (2, 8)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--write-weights") {
        let path = PathBuf::from(&args[pos + 1]);
        SyntheticWeights::generate()
            .write_safetensors(&path)
            .expect("write weights");
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--logits") {
        let count: usize = args[pos + 3].parse().expect("COUNT");
        logits_of_tensors(Path::new(&args[pos + 1]), Path::new(&args[pos + 2]), count);
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--child-e2e") {
        let precision: Precision = args[pos + 1].parse().expect("PRECISION");
        let iters: usize = args[pos + 4].parse().unwrap_or(20);
        child_e2e(
            precision,
            Path::new(&args[pos + 2]),
            Path::new(&args[pos + 3]),
            iters,
        );
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let implementation = &args[pos + 1];
        let weights = PathBuf::from(&args[pos + 2]);
        let iters: usize = args[pos + 3].parse().unwrap_or(20);
        let batch: usize = args.get(pos + 4).and_then(|b| b.parse().ok()).unwrap_or(1);
        child(implementation, &weights, iters, batch);
        return;
    }
    let rounds = flag(&args, "--rounds").unwrap_or(3);
    let iters = flag(&args, "--iters").unwrap_or(20);
    driver(rounds, iters);
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let pos = args.iter().position(|a| a == name)?;
    args.get(pos + 1)?.parse().ok()
}

/// Results of one configuration over all rounds.
#[derive(Debug, Clone, Default)]
struct Sample {
    load_ms: Vec<f64>,
    forward_ms: Vec<f64>,
    rss_mb: Vec<f64>,
}

fn iters_for(batch: usize, iters: usize) -> usize {
    if batch == 1 {
        iters
    } else {
        (iters / 4).max(3)
    }
}

fn driver(rounds: usize, iters: usize) {
    let dir = std::env::temp_dir().join(format!("resnet18-fc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let weights = dir.join("resnet18.safetensors");
    SyntheticWeights::generate()
        .write_safetensors(&weights)
        .expect("write weights");
    let exe = std::env::current_exe().expect("current exe");
    let mut samples = vec![Sample::default(); IMPLS.len() * CONFIGS.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, implementation) in IMPLS.iter().enumerate() {
            for (c, (threads, batch)) in CONFIGS.iter().enumerate() {
                let out = Command::new(&exe)
                    .args([
                        "--child",
                        implementation,
                        &weights.display().to_string(),
                        &iters_for(*batch, iters).to_string(),
                        &batch.to_string(),
                    ])
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .output()
                    .expect("run child");
                let text = String::from_utf8_lossy(&out.stdout);
                let json: serde_json::Value =
                    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
                        panic!("child failed: {}", String::from_utf8_lossy(&out.stderr))
                    });
                let field = |k: &str| json[k].as_f64().expect("numeric field");
                let s = &mut samples[i * CONFIGS.len() + c];
                s.load_ms.push(field("load_ms"));
                s.forward_ms.push(field("forward_ms"));
                s.rss_mb.push(field("rss_mb"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_table(&samples, rounds, iters);
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_table(samples: &[Sample], rounds: usize, iters: usize) {
    println!(
        "224x224 forward, synthetic weights; {rounds} interleaved rounds x {iters} iterations \
         (batch 8: {}); medians",
        iters_for(8, iters)
    );
    println!(
        "| implementation | threads | batch | forward median (ms) | img/s | ratio to stock | load (ms) | peak RSS (MB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, implementation) in IMPLS.iter().enumerate() {
        for (c, (threads, batch)) in CONFIGS.iter().enumerate() {
            let s = &samples[i * CONFIGS.len() + c];
            let stock = &samples[(IMPLS.len() - 1) * CONFIGS.len() + c];
            let ms = median(&s.forward_ms);
            println!(
                "| {implementation} | {threads} | {batch} | {ms:.1} | {:.1} | {:.2}x | {:.0} | {:.0} |",
                *batch as f64 * 1e3 / ms,
                ms / median(&stock.forward_ms),
                median(&s.load_ms),
                median(&s.rss_mb)
            );
        }
    }
}

/// The deterministic input of every benchmark (`tools/bench/compare.py` uses the same formula).
fn bench_input(batch: usize) -> Vec<f32> {
    let one: Vec<f32> = (0..TENSOR_LEN)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    one.repeat(batch)
}

/// Loads one implementation, warms it up, times `iters` forwards; prints one JSON line.
fn child(implementation: &str, weights: &Path, iters: usize, batch: usize) {
    let input_data = bench_input(batch);
    let started = Instant::now();
    if implementation == "resnet18-fc-im2col" {
        // SAFETY: the child is still single-threaded here (no rayon pool, no model yet), so
        // nothing reads the environment concurrently.
        unsafe { std::env::set_var(resnet18_fc::resnet::CONV_POLICY_ENV, "im2col") };
    }
    let forward: Box<dyn Fn() -> Vec<f32>> = match implementation {
        "resnet18-fc" | "resnet18-fc-im2col" | "resnet18-fc-int8" => {
            let precision = if implementation == "resnet18-fc-int8" {
                Precision::Int8
            } else {
                Precision::F32
            };
            let classifier =
                Classifier::load_with_options(weights, Limits::default(), precision).expect("load");
            Box::new(move || {
                let mut rows = classifier.logits(&input_data, batch).expect("forward");
                rows.swap_remove(0)
            })
        }
        _ => {
            // SAFETY: the benchmark's own temp file, not modified while mapped.
            let vb = unsafe {
                candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
            }
            .expect("mmap");
            let model =
                candle_transformers::models::resnet::resnet18(1000, vb).expect("stock model");
            let input = Tensor::from_slice(&input_data, (batch, 3, 224, 224), &Device::Cpu)
                .expect("tensor");
            Box::new(move || {
                let logits = model.forward(&input).expect("forward");
                logits
                    .get(0)
                    .and_then(|t| t.to_vec1::<f32>())
                    .expect("logits")
            })
        }
    };
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let logits = std::hint::black_box(forward());
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(forward());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let top1 = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let line = serde_json::json!({
        "load_ms": load_ms,
        "forward_ms": times[times.len() / 2],
        "rss_mb": peak_rss_kb() as f64 / 1024.0,
        "logit_sum": logits.iter().map(|&v| f64::from(v)).sum::<f64>(),
        "top1": top1,
    });
    println!("{line}");
}

/// Prints the f32 and int8 logits of every tensor in the raw file `tensors` (one JSON object).
fn logits_of_tensors(weights: &Path, tensors: &Path, count: usize) {
    let bytes = std::fs::read(tensors).expect("read tensors");
    assert_eq!(bytes.len(), count * TENSOR_LEN * 4, "tensor file size");
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut out = serde_json::Map::new();
    for precision in [Precision::F32, Precision::Int8] {
        let classifier =
            Classifier::load_with_options(weights, Limits::default(), precision).expect("load");
        let rows: Vec<Vec<f32>> = values
            .chunks(TENSOR_LEN * 8)
            .flat_map(|chunk| {
                classifier
                    .logits(chunk, chunk.len() / TENSOR_LEN)
                    .expect("forward")
            })
            .collect();
        out.insert(precision.name().into(), serde_json::json!(rows));
    }
    println!("{}", serde_json::Value::Object(out));
}

/// Times `classify` (decode + preprocess + forward, batch 1) on one image file.
fn child_e2e(precision: Precision, weights: &Path, image: &Path, iters: usize) {
    let bytes = std::fs::read(image).expect("read image");
    let started = Instant::now();
    let classifier =
        Classifier::load_with_options(weights, Limits::default(), precision).expect("load");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let first = classifier.classify(&bytes, 1).expect("classify");
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(classifier.classify(&bytes, 1).expect("classify"));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let line = serde_json::json!({
        "load_ms": load_ms,
        "forward_ms": times[times.len() / 2],
        "rss_mb": peak_rss_kb() as f64 / 1024.0,
        "logit_sum": 0.0,
        "top1": first.classes[0].index,
    });
    println!("{line}");
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
