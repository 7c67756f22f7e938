//! The fast forward pass (NHWC kernels, packed weights, BN folded) gives the same logits as stock
//! candle: `candle_transformers::models::resnet::resnet18` (NCHW, candle's own conv2d and an
//! explicit batch-norm) loaded from the same synthetic weights, within 1e-4 (max abs).

use candle_core::{DType, Device, Module, Tensor};
use resnet18_fc::resnet::ResNet18;
use resnet18_fc::synthetic::SplitMix64;

/// Logit tolerance of the parity tests against PyTorch (tests/engine/parity.rs), reused here unchanged.
const TOLERANCE: f32 = 1e-4;

/// A normalised-looking input batch (values roughly in [-2.1, 2.6], like ImageNet tensors).
fn input(batch: usize, seed: u64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let values: Vec<f32> = (0..batch * 3 * 224 * 224)
        .map(|_| (rng.next_signed_unit() * 2.3 + 0.2) as f32)
        .collect();
    Tensor::from_vec(values, (batch, 3, 224, 224), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn fast_forward_matches_stock_candle_resnet18_and_batching_does_not_change_logits() {
    let weights = crate::support::weights();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    weights.write_safetensors(&path).unwrap();

    let ours = ResNet18::from_source(weights).unwrap();
    // SAFETY: the test's own temp file, not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu)
    }
    .unwrap();
    let stock = candle_transformers::models::resnet::resnet18(1000, vb).unwrap();

    // Two different images in one batch (batch > 1 tiling), then the second alone (batch-1
    // tiling: fewer pixels, so channel-split tasks in the small layers).
    let x = input(2, 1);
    let expected = stock.forward(&x).unwrap();
    let batched = ours.forward(&x).unwrap();
    let diff = max_abs_diff(&batched, &expected);
    eprintln!("batch 2: max |Δlogit| vs stock candle = {diff}");
    assert!(diff <= TOLERANCE, "batch 2: max |Δlogit| = {diff}");
    // Guard against a vacuous comparison: the logits really vary between classes.
    let flat = expected.flatten_all().unwrap();
    let max = flat.max(0).unwrap().to_scalar::<f32>().unwrap();
    let min = flat.min(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(max - min > 0.1, "logits nearly constant: {min}..{max}");

    let single = ours.forward(&x.narrow(0, 1, 1).unwrap()).unwrap();
    let diff = max_abs_diff(&single, &expected.narrow(0, 1, 1).unwrap());
    eprintln!("batch 1: max |Δlogit| vs stock candle = {diff}");
    assert!(diff <= TOLERANCE, "batch 1: max |Δlogit| = {diff}");
    let diff = max_abs_diff(&single, &batched.narrow(0, 1, 1).unwrap());
    assert!(
        diff <= TOLERANCE,
        "batched vs single: max |Δlogit| = {diff}"
    );
}
