//! The fast forward pass (NHWC kernels, packed weights, BN folded) gives the same logits as stock
//! candle: `candle_transformers::models::resnet::resnet18` (NCHW, candle's own conv2d and an
//! explicit batch-norm) loaded from the same synthetic weights, within 1e-4 (max abs).

use candle_core::{DType, Device, Module, Tensor};
use resnet18_fc::resnet::ResNet18;
use resnet18_fc::synthetic::{SplitMix64, SyntheticWeights};

/// Logit tolerance of the parity tests against PyTorch (issue 2), reused here unchanged.
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
fn fast_forward_matches_stock_candle_resnet18_on_several_inputs() {
    let weights = SyntheticWeights::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    weights.write_safetensors(&path).unwrap();

    let ours = ResNet18::from_source(&weights).unwrap();
    // SAFETY: the test's own temp file, not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu)
    }
    .unwrap();
    let stock = candle_transformers::models::resnet::resnet18(1000, vb).unwrap();

    // A batch of three different images, then single images (batch-1 path, other tilings).
    for (batch, seed) in [(3, 1), (1, 2), (1, 3)] {
        let x = input(batch, seed);
        let expected = stock.forward(&x).unwrap();
        let got = ours.forward(&x).unwrap();
        let diff = max_abs_diff(&got, &expected);
        eprintln!("batch {batch} seed {seed}: max |Δlogit| = {diff}");
        assert!(
            diff <= TOLERANCE,
            "batch {batch} seed {seed}: max |Δlogit| = {diff}"
        );
        // Guard against a vacuous comparison: the logits really vary between classes.
        let flat = expected.flatten_all().unwrap();
        let max = flat.max(0).unwrap().to_scalar::<f32>().unwrap();
        let min = flat.min(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(max - min > 0.1, "logits nearly constant: {min}..{max}");
    }
}

#[test]
fn batched_forward_equals_single_forwards() {
    let weights = SyntheticWeights::generate();
    let model = ResNet18::from_source(&weights).unwrap();
    let x = input(2, 9);
    let batched = model.forward(&x).unwrap();
    for i in 0..2 {
        let single = model.forward(&x.narrow(0, i, 1).unwrap()).unwrap();
        let row = batched.narrow(0, i, 1).unwrap();
        let diff = max_abs_diff(&single, &row);
        assert!(
            diff <= TOLERANCE,
            "image {i}: batched vs single max diff {diff}"
        );
    }
}
