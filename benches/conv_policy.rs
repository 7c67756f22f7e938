//! Convolution-policy benchmark: batch-1 (and optionally batch-N) forward of resnet18-fc's graph
//! with each 3×3 policy (`im2col`, Winograd `f23`, `f43`, on layer1–3 or on every layer), all
//! loaded in one process from the same synthetic weights and timed interleaved, so machine noise
//! hits every policy alike. Also prints each policy's largest logit difference to `im2col`.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench conv_policy -- --rounds 5 --iters 10 [--batch 8]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use resnet18_fc::preprocess::TENSOR_LEN;
use resnet18_fc::resnet::{ConvPolicy, ResNet18};
use resnet18_fc::synthetic::SyntheticWeights;

const POLICIES: [&str; 5] = ["im2col", "f23", "f23-all", "f43", "f43-all"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = flag(&args, "--rounds").unwrap_or(5);
    let iters = flag(&args, "--iters").unwrap_or(10);
    let batch = flag(&args, "--batch").unwrap_or(1);
    let weights = SyntheticWeights::generate();
    let models: Vec<ResNet18> = POLICIES
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
    for _ in 0..rounds {
        for (model, samples) in models.iter().zip(&mut times) {
            for _ in 0..iters {
                let t = Instant::now();
                std::hint::black_box(model.forward(&input).expect("forward"));
                samples.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!(
        "batch {batch}, rayon threads {}, {rounds} interleaved rounds x {iters} iterations; medians",
        rayon::current_num_threads()
    );
    println!("| policy | forward (ms) | ratio to im2col | max |logit - im2col logit| |");
    println!("|---|---|---|---|");
    let base = median(&times[0]);
    for ((name, samples), l) in POLICIES.iter().zip(&times).zip(&logits) {
        let diff = l
            .iter()
            .zip(&logits[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let ms = median(samples);
        println!("| {name} | {ms:.2} | {:.3}x | {diff:.2e} |", ms / base);
    }
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
