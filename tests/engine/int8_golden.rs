//! Fidelity of the int8 engine (`--precision int8`) against TorchVision f32.
//!
//! The fixtures in `tests/fixtures/golden/` hold TorchVision's f32 logits for six real
//! photographs with the synthetic weights of `src/synthetic.rs`; the engine is fed TorchVision's
//! own normalised tensor (rebuilt from the lossless crop), so only the arithmetic differs.
//!
//! Int8 cannot match f32 to 1e-4; the bounds here are what the engine must keep:
//! * mean |Δlogit| per image ≤ [`MEAN_ABS_BOUND`] (the f32 engine is within 1e-4);
//! * top-1 agreement with TorchVision on at least [`MIN_TOP1_AGREEMENT`] of the images.
//!
//! Why these numbers: the synthetic `fc` layer is ill-conditioned (its logits come from large
//! cancellations), so small errors in the pooled features move the logits a lot, for any int8
//! scheme. The reference is ONNX Runtime's static int8 (QDQ, U8S8, per-channel, MinMax
//! calibration, `fc` in f32) on the same weights, measured by `tools/bench/int8.py` on 76 inputs
//! from 19 real photos (docs/performance.md): 93.4 % top-1 agreement with f32 and a mean
//! |Δlogit| of 0.036, against 97.4 % and 0.014 for this engine. The mean bound is therefore
//! ORT's figure rounded up (0.04; this engine measures 0.008–0.018 on these six images), and at
//! most one of the six may change class. A regression such as a wrong zero point, a transposed
//! weight layout or a lost epilogue term gives errors of the order of the logits themselves.
//! Run with `cargo test --test int8_golden -- --nocapture` to see the measured figures.

use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{self, INPUT_SIZE, Limits};
use resnet18_fc::resnet::Precision;
use serde::Deserialize;

use crate::support::{golden_dir, read_golden_json as read_json};

/// Largest mean |int8 − TorchVision| over the 1000 logits of one image.
const MEAN_ABS_BOUND: f32 = 0.04;
/// Smallest share of images whose top-1 class is TorchVision's.
const MIN_TOP1_AGREEMENT: f64 = 5.0 / 6.0;

#[derive(Debug, Deserialize)]
struct Index {
    fixtures: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Fixture {
    crop: String,
    logits: Vec<f32>,
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

#[test]
fn int8_logits_stay_within_the_fidelity_bounds_of_torch_f32() {
    let index: Index = read_json("index.json");
    assert!(index.fixtures.len() >= 6, "expected at least 6 fixtures");
    let weights = crate::support::weights();
    let int8 =
        Classifier::from_source_with(weights, "synthetic", Limits::default(), Precision::Int8)
            .unwrap_or_else(|e| panic!("int8 classifier: {e}"));
    assert_eq!(int8.precision(), Precision::Int8);
    let mut agree = 0usize;
    let mut worst_mean = 0f32;
    for name in &index.fixtures {
        let fixture: Fixture = read_json(&format!("{name}.json"));
        let crop = image::open(golden_dir().join(&fixture.crop))
            .unwrap_or_else(|e| panic!("cannot decode {}: {e}", fixture.crop))
            .into_rgb8();
        assert_eq!(crop.dimensions(), (INPUT_SIZE as u32, INPUT_SIZE as u32));
        let chw = preprocess::normalize_hwc(crop.as_raw());
        let ours = int8
            .logits(&chw, 1)
            .unwrap_or_else(|e| panic!("int8 forward: {e}"))
            .remove(0);
        assert_eq!(ours.len(), fixture.logits.len());
        let mean = ours
            .iter()
            .zip(&fixture.logits)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / ours.len() as f32;
        let max = ours
            .iter()
            .zip(&fixture.logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let spread = fixture.logits.iter().map(|v| v.abs()).sum::<f32>() / ours.len() as f32;
        let same = argmax(&ours) == argmax(&fixture.logits);
        agree += usize::from(same);
        worst_mean = worst_mean.max(mean);
        println!(
            "{name:16} top-1 {} mean |Δ| {mean:.4} max |Δ| {max:.4} (mean |logit| {spread:.4})",
            if same { "same" } else { "DIFF" }
        );
        assert!(
            mean <= MEAN_ABS_BOUND,
            "{name}: mean |Δlogit| {mean} > {MEAN_ABS_BOUND}"
        );
    }
    let share = agree as f64 / index.fixtures.len() as f64;
    println!(
        "top-1 agreement {agree}/{} ; worst mean |Δ| {worst_mean:.4}",
        index.fixtures.len()
    );
    assert!(
        share >= MIN_TOP1_AGREEMENT,
        "top-1 agreement {share} < {MIN_TOP1_AGREEMENT}"
    );
}
