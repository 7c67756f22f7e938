//! Convolution-policy benchmark: batch-1 (and optionally batch-N) forward of resnet18-fc's graph
//! with each 3×3 policy (`im2col`, Winograd `f23`, `f43`, on layer1–3 or on every layer), all
//! loaded in one process from the same synthetic weights and timed interleaved, so machine noise
//! hits every policy alike. Also prints each policy's largest logit difference to `im2col`.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench conv_policy -- --rounds 5 --iters 10 [--batch 8]
//! [--only f23]` (`--only` keeps `im2col` and the named policy).

use std::time::Instant;

use candle_core::{Device, Tensor};
use resnet18_fc::kernels::{PackedConv, WinogradConv, WinogradVariant};
use resnet18_fc::preprocess::TENSOR_LEN;
use resnet18_fc::resnet::{ConvPolicy, ResNet18};
use resnet18_fc::synthetic::SyntheticWeights;

const POLICIES: [&str; 5] = ["im2col", "f23", "f23-all", "f43", "f43-all"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = flag(&args, "--rounds").unwrap_or(5);
    let iters = flag(&args, "--iters").unwrap_or(10);
    let batch = flag(&args, "--batch").unwrap_or(1);
    if args.iter().any(|a| a == "--layers") {
        layers(rounds, iters, batch, only(&args));
        return;
    }
    let only = only(&args);
    let policies: Vec<&str> = POLICIES
        .into_iter()
        .filter(|p| only.is_none_or(|o| *p == o || *p == "im2col"))
        .collect();
    let weights = SyntheticWeights::generate();
    let models: Vec<ResNet18> = policies
        .iter()
        .map(|name| {
            let policy = ConvPolicy::parse(name).expect("known policy");
            ResNet18::from_source_with(&weights, &policy).expect("model")
        })
        .collect();
    // Same deterministic input as benches/engine.rs and tools/bench/compare.py.
    let one: Vec<f32> = (0..TENSOR_LEN)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let input =
        Tensor::from_vec(one.repeat(batch), (batch, 3, 224, 224), &Device::Cpu).expect("input");
    let logits: Vec<Vec<f32>> = models
        .iter()
        .map(|m| {
            let l = m.forward(&input).expect("forward");
            l.flatten_all().and_then(|t| t.to_vec1()).expect("logits")
        })
        .collect();
    let mut times = vec![Vec::new(); models.len()];
    let mut cpu = vec![Vec::new(); models.len()];
    for _ in 0..rounds {
        for ((model, samples), cpu) in models.iter().zip(&mut times).zip(&mut cpu) {
            for _ in 0..iters {
                let (t, c) = (Instant::now(), cpu_ms());
                std::hint::black_box(model.forward(&input).expect("forward"));
                samples.push(t.elapsed().as_secs_f64() * 1e3);
                cpu.push(cpu_ms() - c);
            }
        }
    }
    println!(
        "batch {batch}, rayon threads {}, {rounds} interleaved rounds x {iters} iterations; medians",
        rayon::current_num_threads()
    );
    println!(
        "| policy | forward wall (ms) | ratio to im2col | process CPU (ms) | ratio to im2col | max |logit - im2col logit| |"
    );
    println!("|---|---|---|---|---|---|");
    let base = median(&times[0]);
    let cpu_base = median(&cpu[0]);
    for (((name, samples), l), cpu) in policies.iter().zip(&times).zip(&logits).zip(&cpu) {
        let diff = l
            .iter()
            .zip(&logits[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let ms = median(samples);
        let c = median(cpu);
        println!(
            "| {name} | {ms:.2} | {:.3}x | {c:.2} | {:.3}x | {diff:.2e} |",
            ms / base,
            c / cpu_base
        );
    }
}

/// `--only NAME`: time `im2col` and NAME only (e.g. under `perf record`; with `--layers`, NAME
/// alone).
fn only(args: &[String]) -> Option<&str> {
    let pos = args.iter().position(|a| a == "--only")?;
    args.get(pos + 1).map(String::as_str)
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let pos = args.iter().position(|a| a == name)?;
    args.get(pos + 1)?.parse().ok()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `--layers`: each distinct 3×3 stride-1 layer of ResNet-18 alone (random weights), im2col vs
/// F(2,3) vs F(4,3), interleaved.
fn layers(rounds: usize, iters: usize, batch: usize, only: Option<&str>) {
    println!(
        "3x3 stride-1 layers, batch {batch}, rayon threads {}; medians of process CPU time (ms)",
        rayon::current_num_threads()
    );
    println!("| layer | im2col | f23 | f43 |");
    println!("|---|---|---|---|");
    for (side, ch) in [(56, 64), (28, 128), (14, 256), (7, 512)] {
        let len = ch * ch * 9;
        let w: Vec<f32> = (0..len)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-4)
            .collect();
        let b = vec![0.01f32; ch];
        let shape = [ch, ch, 3, 3];
        let x: Vec<f32> = (0..batch * side * side * ch)
            .map(|i| (i % 251) as f32 / 125.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(x, (batch, side, side, ch), &Device::Cpu).expect("input");
        let direct = PackedConv::new(&w, &b, shape, 1, 1, true).expect("conv");
        let f23 = WinogradConv::new(&w, &b, shape, true, WinogradVariant::F2x3).expect("f23");
        let f43 = WinogradConv::new(&w, &b, shape, true, WinogradVariant::F4x3).expect("f43");
        let runs: [&dyn Fn() -> Tensor; 3] = [
            &|| direct.forward(&x).expect("forward"),
            &|| f23.forward(&x).expect("forward"),
            &|| f43.forward(&x).expect("forward"),
        ];
        let mut times = vec![Vec::new(); runs.len()];
        for _ in 0..rounds {
            for ((run, samples), name) in runs.iter().zip(&mut times).zip(["im2col", "f23", "f43"])
            {
                if only.is_some_and(|o| o != name) {
                    samples.push(f64::NAN);
                    continue;
                }
                std::hint::black_box(run());
                for _ in 0..iters {
                    let t = cpu_ms();
                    std::hint::black_box(run());
                    samples.push(cpu_ms() - t);
                }
            }
        }
        let m: Vec<f64> = times.iter().map(|t| median(t)).collect();
        println!(
            "| {side}x{side}x{ch} | {:.3} | {:.3} | {:.3} |",
            m[0], m[1], m[2]
        );
    }
}

/// CPU time of the whole process (all threads) in milliseconds: at one rayon thread it measures
/// the work without the time the scheduler gives other processes on a loaded machine.
fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
}
