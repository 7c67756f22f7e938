//! What one forward of `n` images costs next to `n` forwards of one image, on this machine,
//! with the thread settings the server uses (`RAYON_NUM_THREADS` = workers,
//! `CANDLE_NUM_THREADS=1`). Used to choose the micro-batching defaults (`--batch-max`).
//!
//! Run: `RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=1 cargo run --release --example batch_forward
//! -- [ROUNDS] [SIZES...]` (default 5 rounds, sizes 1 2 4 8). Prints, per batch size, the median
//! time of one batched forward, the median of `n` single-image forwards run back to back, and
//! images/s of each. Rounds interleave the two so machine noise hits both alike.

use std::time::Instant;

use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN};
use resnet18_fc::synthetic::SyntheticWeights;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut sizes: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![1, 2, 4, 8];
    }
    let weights = SyntheticWeights::generate();
    let classifier = Classifier::from_source(&weights, "synthetic", Limits::default())?;
    classifier.warm_up()?;
    let largest = sizes.iter().copied().max().unwrap_or(1);
    // Deterministic, non-constant input so no kernel takes a shortcut on zeros.
    let input: Vec<f32> = (0..largest * TENSOR_LEN)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    println!(
        "threads: RAYON_NUM_THREADS={} CANDLE_NUM_THREADS={}, rounds {rounds}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
    );
    println!(
        "| n | one forward of n (ms) | n forwards of 1 (ms) | batched img/s | single img/s | gain |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &sizes {
        let (mut batched, mut singles) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let started = Instant::now();
            classifier.logits(&input[..n * TENSOR_LEN], n)?;
            batched.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            for i in 0..n {
                classifier.logits(&input[i * TENSOR_LEN..(i + 1) * TENSOR_LEN], 1)?;
            }
            singles.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let (b, s) = (median(&mut batched), median(&mut singles));
        let per_s = |ms: f64| n as f64 * 1e3 / ms;
        println!(
            "| {n} | {b:.1} | {s:.1} | {:.1} | {:.1} | {:.2}× |",
            per_s(b),
            per_s(s),
            s / b
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
