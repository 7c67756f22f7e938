//! Engine benchmark: warm batch-1 forward latency at 1 and 2 threads, load time and peak RSS of
//! resnet18-fc's graph next to stock `candle_transformers::models::resnet::resnet18`, on the same
//! synthetic weights, in the same invocation.
//!
//! Run: `cargo bench --bench engine` (optionally `-- --rounds 5 --iters 20`).
//!
//! Each measurement runs in a fresh child process (this same executable with `--child`), so load
//! time and peak RSS (`VmHWM`) are per configuration and the thread count (`RAYON_NUM_THREADS`,
//! read by candle) is fixed for the whole process. Configurations are interleaved round by round
//! so machine noise hits all of them alike; the table shows medians and the ratio to stock candle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN};
use resnet18_fc::synthetic::SyntheticWeights;

const IMPLS: [&str; 2] = ["resnet18-fc", "candle-stock"];
const THREADS: [usize; 2] = [1, 2];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let implementation = &args[pos + 1];
        let weights = PathBuf::from(&args[pos + 2]);
        let iters: usize = args[pos + 3].parse().unwrap_or(20);
        child(implementation, &weights, iters);
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

/// One result line from a child: `impl threads load_ms forward_median_ms peak_rss_kb`.
#[derive(Debug, Clone, Default)]
struct Sample {
    load_ms: Vec<f64>,
    forward_ms: Vec<f64>,
    rss_kb: Vec<f64>,
}

fn driver(rounds: usize, iters: usize) {
    let dir = std::env::temp_dir().join(format!("resnet18-fc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let weights = dir.join("resnet18.safetensors");
    SyntheticWeights::generate()
        .write_safetensors(&weights)
        .expect("write weights");
    let exe = std::env::current_exe().expect("current exe");
    let mut samples = vec![Sample::default(); IMPLS.len() * THREADS.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, implementation) in IMPLS.iter().enumerate() {
            for (t, threads) in THREADS.iter().enumerate() {
                let out = Command::new(&exe)
                    .args([
                        "--child",
                        implementation,
                        &weights.display().to_string(),
                        &iters.to_string(),
                    ])
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .output()
                    .expect("run child");
                let text = String::from_utf8_lossy(&out.stdout);
                let nums: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                assert_eq!(
                    nums.len(),
                    3,
                    "child failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let s = &mut samples[i * THREADS.len() + t];
                s.load_ms.push(nums[0]);
                s.forward_ms.push(nums[1]);
                s.rss_kb.push(nums[2]);
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
        "batch-1 forward, 224x224, synthetic weights; {rounds} interleaved rounds x {iters} iterations"
    );
    println!(
        "| implementation | threads | forward median (ms) | ratio to stock | load (ms) | peak RSS (MB) |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, implementation) in IMPLS.iter().enumerate() {
        for (t, threads) in THREADS.iter().enumerate() {
            let s = &samples[i * THREADS.len() + t];
            let stock = &samples[(IMPLS.len() - 1) * THREADS.len() + t];
            println!(
                "| {implementation} | {threads} | {:.1} | {:.2}x | {:.0} | {:.0} |",
                median(&s.forward_ms),
                median(&s.forward_ms) / median(&stock.forward_ms),
                median(&s.load_ms),
                median(&s.rss_kb) / 1024.0
            );
        }
    }
}

/// Loads one implementation, warms it up, times `iters` forwards; prints load, median, VmHWM.
fn child(implementation: &str, weights: &Path, iters: usize) {
    let input_data: Vec<f32> = (0..TENSOR_LEN)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let started = Instant::now();
    let forward: Box<dyn Fn() -> f32> = match implementation {
        "resnet18-fc" => {
            let classifier =
                Classifier::load_with_limits(weights, Limits::default()).expect("load");
            let data = input_data.clone();
            Box::new(move || classifier.logits(&data, 1).expect("forward")[0][0])
        }
        _ => {
            // SAFETY: the benchmark's own temp file, not modified while mapped.
            let vb = unsafe {
                candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
            }
            .expect("mmap");
            let model =
                candle_transformers::models::resnet::resnet18(1000, vb).expect("stock model");
            let input =
                Tensor::from_slice(&input_data, (1, 3, 224, 224), &Device::Cpu).expect("tensor");
            Box::new(move || {
                let logits = model.forward(&input).expect("forward");
                logits
                    .flatten_all()
                    .and_then(|t| t.get(0))
                    .and_then(|t| t.to_scalar::<f32>())
                    .expect("logit")
            })
        }
    };
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(forward());
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(forward());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{load_ms:.2} {:.3} {}",
        times[times.len() / 2],
        peak_rss_kb()
    );
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
