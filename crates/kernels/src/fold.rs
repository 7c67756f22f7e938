//! Batch-norm folding into the preceding convolution, done once per layer at model load.
//!
//! Layout: the convolution weight is PyTorch's `O×I×kh×kw` (OIHW), row-major, so output channel
//! `o` owns the contiguous run `o·I·kh·kw .. (o+1)·I·kh·kw`.
//!
//! In eval mode `bn(y) = γ·(y − μ)/√(σ²+ε) + β`, so with `s = γ/√(σ²+ε)` per output channel,
//! `bn(conv(x, w)) = conv(x, w·s) + (β − μ·s)`. Each product is computed in f64 and rounded
//! once to f32.

/// Eval-mode batch-norm statistics of one layer, one value per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Scale `γ` (`weight`).
    pub gamma: Vec<f32>,
    /// Shift `β` (`bias`).
    pub beta: Vec<f32>,
    /// Running mean `μ`.
    pub mean: Vec<f32>,
    /// Running variance `σ²`.
    pub var: Vec<f32>,
    /// The `ε` added to the variance (PyTorch's default is `1e-5`).
    pub eps: f64,
}

/// Folds `bn` into the OIHW `weight`, in place, and returns the bias `[O]`.
///
/// Returns `None` (leaving `weight` untouched) when the four statistics do not all have the same
/// length `O`, or when `weight.len()` is not a multiple of `O`.
pub fn fold_batch_norm(weight: &mut [f32], bn: &BatchNorm) -> Option<Vec<f32>> {
    let channels = bn.gamma.len();
    let consistent = [bn.beta.len(), bn.mean.len(), bn.var.len()]
        .iter()
        .all(|&len| len == channels);
    if !consistent || channels == 0 || !weight.len().is_multiple_of(channels) {
        return None;
    }
    let per_channel = weight.len() / channels;
    let mut bias = Vec::with_capacity(channels);
    for (o, filter) in weight.chunks_exact_mut(per_channel.max(1)).enumerate() {
        let scale = f64::from(bn.gamma[o]) / (f64::from(bn.var[o]) + bn.eps).sqrt();
        for w in filter {
            *w = (f64::from(*w) * scale) as f32;
        }
        bias.push((f64::from(bn.beta[o]) - f64::from(bn.mean[o]) * scale) as f32);
    }
    Some(bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{SplitMix64, max_abs_diff};
    use candle_core::{Device, Tensor};

    fn random(len: usize, seed: u64, offset: f64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len)
            .map(|_| (offset + 0.5 * rng.next_signed_unit()) as f32)
            .collect()
    }

    #[test]
    fn folded_conv_equals_conv_followed_by_candle_batch_norm() {
        let (o, i, k) = (6, 5, 3);
        let bn = BatchNorm {
            gamma: random(o, 1, 1.0),
            beta: random(o, 2, 0.0),
            mean: random(o, 3, 0.0),
            var: random(o, 4, 1.0),
            eps: 1e-5,
        };
        let weight = random(o * i * k * k, 5, 0.0);
        let x =
            Tensor::from_vec(random(2 * i * 7 * 9, 6, 0.0), (2, i, 7, 9), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(weight.clone(), (o, i, k, k), &Device::Cpu).unwrap();
        // Reference: candle's conv2d, then the batch-norm formula written with candle ops.
        let per_channel =
            |v: &[f32]| Tensor::from_vec(v.to_vec(), (1, o, 1, 1), &Device::Cpu).unwrap();
        let y = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let denom = (per_channel(&bn.var) + bn.eps).unwrap().sqrt().unwrap();
        let expected = y
            .broadcast_sub(&per_channel(&bn.mean))
            .unwrap()
            .broadcast_div(&denom)
            .unwrap()
            .broadcast_mul(&per_channel(&bn.gamma))
            .unwrap()
            .broadcast_add(&per_channel(&bn.beta))
            .unwrap();

        let mut folded = weight.clone();
        let bias = fold_batch_norm(&mut folded, &bn).unwrap();
        let wf = Tensor::from_vec(folded, (o, i, k, k), &Device::Cpu).unwrap();
        let got = x
            .conv2d(&wf, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&per_channel(&bias))
            .unwrap();
        let diff = max_abs_diff(&got, &expected);
        assert!(diff <= 1e-5, "max diff {diff}");
    }

    #[test]
    fn inconsistent_statistics_are_rejected_and_weight_left_alone() {
        let bn = BatchNorm {
            gamma: vec![1.0; 4],
            beta: vec![0.0; 4],
            mean: vec![0.0; 3],
            var: vec![1.0; 4],
            eps: 1e-5,
        };
        let mut weight = vec![2.0; 8];
        assert!(fold_batch_norm(&mut weight, &bn).is_none());
        assert_eq!(weight, vec![2.0; 8]);
        let bn = BatchNorm {
            mean: vec![0.0; 4],
            ..bn
        };
        let mut odd = vec![2.0; 9];
        assert!(fold_batch_norm(&mut odd, &bn).is_none());
    }
}
