//! Golden parity with TorchVision's ResNet-18 pipeline.
//!
//! The fixtures in `tests/fixtures/golden/` were written by `tools/golden/make_golden.py` with
//! torch/torchvision (versions recorded in each JSON). Both sides build the same synthetic
//! weights from the recipe in `src/synthetic.rs`, so no pretrained checkpoint is needed.
//! Run with `cargo test --test parity -- --nocapture` to see the measured figures.

use std::sync::OnceLock;

use candle_core::{DType, Device, Module, Tensor};
use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{self, INPUT_SIZE, Limits, STD, TENSOR_LEN};
use resnet18_fc::resnet::expected_tensors;
use resnet18_fc::synthetic::synthetic_values;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::support::{golden_dir, read_golden_json as read_json, weights};

/// Bound on the max abs logit difference when fed TorchVision's own tensor.
const LOGIT_TOLERANCE: f32 = 1e-4;
/// Share of elements that must lie within one 8-bit level on lossless inputs.
const LOSSLESS_MIN_WITHIN_ONE_LEVEL: f64 = 0.999;
/// Largest mean abs difference, in 8-bit levels, on JPEG inputs.
const JPEG_MAX_MEAN_LEVELS: f64 = 0.5;
/// Slack on "one level" for f32 rounding of the normalisation.
const LEVEL_SLACK: f32 = 1e-6;

/// `tests/fixtures/golden/weights.json`.
#[derive(Debug, Deserialize)]
struct WeightsFixture {
    sha256: String,
    tensors: Vec<TensorEntry>,
}

#[derive(Debug, Deserialize)]
struct TensorEntry {
    name: String,
    shape: Vec<usize>,
}

/// `tests/fixtures/golden/index.json`.
#[derive(Debug, Deserialize)]
struct Index {
    fixtures: Vec<String>,
}

/// `tests/fixtures/golden/<name>.json`.
#[derive(Debug, Deserialize)]
struct Fixture {
    image: String,
    crop: String,
    pil_mode: String,
    size: [u32; 2],
    tensor_sha256: String,
    tensor_samples: Vec<Sample>,
    logits: Vec<f32>,
    top5: Vec<usize>,
    f32_vs_f64_max_abs_diff: f64,
}

#[derive(Debug, Deserialize)]
struct Sample {
    index: usize,
    value: f32,
}

/// Every fixture, in `index.json` order, with its name.
fn fixtures() -> &'static [(String, Fixture)] {
    static FIXTURES: OnceLock<Vec<(String, Fixture)>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let index: Index = read_json("index.json");
        assert!(index.fixtures.len() >= 6, "expected at least 6 fixtures");
        index
            .fixtures
            .into_iter()
            .map(|name| {
                let fixture = read_json(&format!("{name}.json"));
                (name, fixture)
            })
            .collect()
    })
}

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        Classifier::from_source(weights(), "synthetic", Limits::default())
            .unwrap_or_else(|e| panic!("synthetic weights must build a classifier: {e}"))
    })
}

fn read_bytes(file: &str) -> Vec<u8> {
    let path = golden_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// TorchVision's normalised tensor, rebuilt from its lossless 224×224 crop.
fn torchvision_tensor(fixture: &Fixture) -> Vec<f32> {
    let crop = image::load_from_memory(&read_bytes(&fixture.crop))
        .unwrap_or_else(|e| panic!("cannot decode {}: {e}", fixture.crop))
        .into_rgb8();
    assert_eq!(crop.dimensions(), (INPUT_SIZE as u32, INPUT_SIZE as u32));
    preprocess::normalize_hwc(crop.as_raw())
}

fn sha256_f32_le(values: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for v in values {
        hasher.update(v.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Indices of the `k` largest values, largest first.
fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order.truncate(k);
    order
}

/// All fixtures' TorchVision tensors as one `N×3×224×224` batch.
fn torchvision_batch() -> &'static [f32] {
    static BATCH: OnceLock<Vec<f32>> = OnceLock::new();
    BATCH.get_or_init(|| {
        fixtures()
            .iter()
            .flat_map(|(_, f)| torchvision_tensor(f))
            .collect()
    })
}

/// Our logits on [`torchvision_batch`], one row per fixture (computed once).
fn our_logits() -> &'static [Vec<f32>] {
    static LOGITS: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    LOGITS.get_or_init(|| {
        classifier()
            .logits(torchvision_batch(), fixtures().len())
            .unwrap_or_else(|e| panic!("forward failed: {e}"))
    })
}

#[test]
fn synthetic_weights_are_bit_identical_to_pytorch() {
    let golden: WeightsFixture = read_json("weights.json");
    let specs = expected_tensors();
    let names: Vec<(&str, &[usize])> = specs
        .iter()
        .map(|s| (s.name.as_str(), s.shape.as_slice()))
        .collect();
    let golden_names: Vec<(&str, &[usize])> = golden
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(names, golden_names, "tensor list must be state_dict order");
    let mut hasher = Sha256::new();
    for spec in &specs {
        for v in synthetic_values(spec) {
            hasher.update(v.to_le_bytes());
        }
    }
    let ours = hex::encode(hasher.finalize());
    eprintln!(
        "synthetic weights sha256: ours {ours}, PyTorch {}",
        golden.sha256
    );
    assert_eq!(ours, golden.sha256);
}

#[test]
fn torchvision_crop_normalises_to_the_identical_tensor() {
    for (name, fixture) in fixtures() {
        let chw = torchvision_tensor(fixture);
        for sample in &fixture.tensor_samples {
            assert_eq!(chw[sample.index], sample.value, "{name}[{}]", sample.index);
        }
        assert_eq!(sha256_f32_le(&chw), fixture.tensor_sha256, "{name}");
    }
}

#[test]
fn logits_on_torchvision_tensor_match_pytorch() {
    // The input is TorchVision's tensor bit for bit: every image's digest matches.
    for ((name, fixture), chw) in fixtures()
        .iter()
        .zip(torchvision_batch().chunks(TENSOR_LEN))
    {
        assert_eq!(sha256_f32_le(chw), fixture.tensor_sha256, "{name}");
    }
    for ((name, fixture), ours) in fixtures().iter().zip(our_logits()) {
        let diff = max_abs_diff(ours, &fixture.logits);
        eprintln!(
            "{name:16} logits max |ours - PyTorch| = {diff:.2e} (PyTorch f32 vs f64: {:.2e})",
            fixture.f32_vs_f64_max_abs_diff
        );
        assert!(diff <= LOGIT_TOLERANCE, "{name}: max abs logit diff {diff}");
        assert_eq!(top_indices(ours, 5), fixture.top5, "{name}: top-5");
    }
}

/// Differences between our preprocessing and TorchVision's tensor, in 8-bit levels.
struct LevelStats {
    within_one_level: f64,
    mean_levels: f64,
    max_levels: f64,
}

fn level_stats(ours: &[f32], theirs: &[f32]) -> LevelStats {
    let plane = INPUT_SIZE * INPUT_SIZE;
    let (mut within, mut sum, mut max) = (0usize, 0f64, 0f64);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let std = STD[i / plane];
        let diff = (a - b).abs();
        if diff <= 1.0 / 255.0 / std + LEVEL_SLACK {
            within += 1;
        }
        let levels = f64::from(diff) * f64::from(std) * 255.0;
        sum += levels;
        max = max.max(levels);
    }
    LevelStats {
        within_one_level: within as f64 / ours.len() as f64,
        mean_levels: sum / ours.len() as f64,
        max_levels: max,
    }
}

#[test]
fn preprocess_matches_torchvision_within_one_level() {
    let mut failures = Vec::new();
    for (name, fixture) in fixtures() {
        let ours = preprocess::preprocess(&read_bytes(&fixture.image), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: preprocess failed: {e}"))
            .chw;
        let stats = level_stats(&ours, &torchvision_tensor(fixture));
        let is_jpeg = fixture.image.ends_with(".jpg");
        eprintln!(
            "{name:16} {:4} {}: within one level {:.4} %, mean {:.4} levels, max {:.2} levels",
            fixture.pil_mode,
            if is_jpeg { "JPEG    " } else { "lossless" },
            stats.within_one_level * 100.0,
            stats.mean_levels,
            stats.max_levels
        );
        let ok = if is_jpeg {
            stats.mean_levels <= JPEG_MAX_MEAN_LEVELS
        } else {
            stats.within_one_level >= LOSSLESS_MIN_WITHIN_ONE_LEVEL
        };
        if !ok {
            failures.push(name.as_str());
        }
    }
    assert!(failures.is_empty(), "outside tolerance: {failures:?}");
}

#[test]
fn top3_from_image_bytes_matches_pytorch() {
    let images: Vec<Vec<u8>> = fixtures()
        .iter()
        .map(|(_, f)| read_bytes(&f.image))
        .collect();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let results = classifier()
        .classify_batch(&refs, 3)
        .unwrap_or_else(|e| panic!("batch failed: {e}"));
    let mut mismatches = Vec::new();
    for ((name, fixture), result) in fixtures().iter().zip(results) {
        let prediction = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours: Vec<usize> = prediction.classes.iter().map(|c| c.index).collect();
        eprintln!(
            "{name:16} top-3 ours {ours:?}, PyTorch {:?}",
            &fixture.top5[..3]
        );
        if ours != fixture.top5[..3] {
            mismatches.push(name.as_str());
        }
    }
    assert!(mismatches.is_empty(), "top-3 differs on {mismatches:?}");
}

/// Stock `candle_transformers` ResNet-18 (unfolded batch-norm) on the same synthetic weights.
fn stock_candle_logits(batch: &[f32], count: usize) -> Vec<Vec<f32>> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("synthetic.safetensors");
    weights()
        .write_safetensors(&path)
        .unwrap_or_else(|e| panic!("write safetensors: {e}"));
    // SAFETY: the file is private to this test and not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu)
    }
    .unwrap_or_else(|e| panic!("mmap safetensors: {e}"));
    let model = candle_transformers::models::resnet::resnet18(1000, vb)
        .unwrap_or_else(|e| panic!("stock resnet18: {e}"));
    let input = Tensor::from_slice(batch, (count, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu)
        .unwrap_or_else(|e| panic!("input tensor: {e}"));
    model
        .forward(&input)
        .and_then(|t| t.to_vec2::<f32>())
        .unwrap_or_else(|e| panic!("stock forward: {e}"))
}

#[test]
fn stock_candle_resnet18_agrees_with_our_graph() {
    let stock = stock_candle_logits(torchvision_batch(), fixtures().len());
    let mut diffs = Vec::new();
    for (((name, fixture), s), o) in fixtures().iter().zip(&stock).zip(our_logits()) {
        let vs_ours = max_abs_diff(s, o);
        let vs_torch = max_abs_diff(s, &fixture.logits);
        eprintln!(
            "{name:16} stock candle: max |stock - ours| {vs_ours:.2e}, |stock - PyTorch| {vs_torch:.2e}"
        );
        diffs.push((name.as_str(), vs_ours, vs_torch));
    }
    for (name, vs_ours, vs_torch) in diffs {
        assert!(
            vs_ours <= LOGIT_TOLERANCE,
            "{name}: stock vs ours {vs_ours}"
        );
        assert!(
            vs_torch <= LOGIT_TOLERANCE,
            "{name}: stock vs PyTorch {vs_torch}"
        );
    }
}

/// Alpha spans fully transparent to opaque with intermediate values.
fn has_varied_alpha(img: &image::DynamicImage) -> bool {
    let mut levels = [false; 256];
    for px in img.to_rgba8().pixels() {
        levels[usize::from(px[3])] = true;
    }
    levels[0] && levels[255] && levels.iter().filter(|&&l| l).count() > 100
}

#[test]
fn fixtures_cover_every_case_the_issue_names() {
    let mut seen = Vec::new();
    for (name, fixture) in fixtures() {
        let bytes = read_bytes(&fixture.image);
        let img = image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h) = (img.width(), img.height());
        assert_eq!([w, h], fixture.size, "{name}: size differs from PIL's");
        let format = image::guess_format(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let color = img.color();
        if format == image::ImageFormat::Jpeg && w != h {
            seen.push("non-square JPEG");
        }
        if format == image::ImageFormat::Png && h > w {
            seen.push("portrait PNG");
        }
        if color == image::ColorType::L8 && fixture.pil_mode == "L" {
            seen.push("grayscale");
        }
        if color == image::ColorType::Rgba8 && fixture.pil_mode == "RGBA" && has_varied_alpha(&img)
        {
            seen.push("RGBA with varied alpha");
        }
        if w < 224 && h < 224 {
            seen.push("smaller than 224");
        }
        if w.max(h) >= 10 * w.min(h) {
            seen.push("very elongated");
        }
    }
    for case in [
        "non-square JPEG",
        "portrait PNG",
        "grayscale",
        "RGBA with varied alpha",
        "smaller than 224",
        "very elongated",
    ] {
        assert!(seen.contains(&case), "no fixture is {case}");
    }
}
