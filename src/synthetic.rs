//! Deterministic synthetic ResNet-18 weights, bit-identical to `tools/golden/make_golden.py`.
//!
//! Pretrained weights cannot be downloaded in the development environment, so parity with
//! TorchVision is proven on weights both sides generate from the same documented recipe:
//!
//! * **Seed** of a tensor: 64-bit FNV-1a of its UTF-8 name (offset basis `0xcbf29ce484222325`,
//!   prime `0x100000001b3`).
//! * **Stream**: SplitMix64 started at the seed (`state += 0x9E3779B97F4A7C15`, then the usual
//!   `30/27/31` xor-shift-multiply finaliser).
//! * **Uniform** `u ∈ [-1, 1)`: `(next() >> 40) / 2^24 · 2 − 1`, exact in f64.
//! * **Value** (row-major element order): `f32(a + b · u)`, computed in f64 and rounded once, with
//!   `(a, b)` by tensor kind:
//!
//! | tensor | a | b |
//! |---|---|---|
//! | conv `weight` `[O,I,kh,kw]` | 0 | √(6 / (I·kh·kw)) (He-uniform) |
//! | block `bn2.weight` (γ of the residual branch) | 0.5 | 0.1 |
//! | other BN `weight` (γ) | 1.0 | 0.2 |
//! | BN `bias` (β) | 0 | 0.1 |
//! | BN `running_mean` | 0 | 0.1 |
//! | BN `running_var` | 1.0 | 0.5 |
//! | `fc.weight` `[1000,512]` | 0 | 1/√512 |
//! | `fc.bias` | 0 | 0.01 |

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::resnet::{ModelError, TensorSource, TensorSpec, expected_tensors};

/// 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 generator (Steele, Lea & Flood 2014), the stream behind every synthetic tensor.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Starts a stream at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Next uniform value in `[-1, 1)` with 24 bits of resolution (exact in f64).
    pub fn next_signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 40) as f64 / 16_777_216.0 * 2.0 - 1.0
    }
}

/// `(a, b)` of the recipe for a tensor, from its name and shape (see the module docs).
fn affine_for(spec: &TensorSpec) -> (f64, f64) {
    let name = spec.name.as_str();
    let is_residual_gamma = name.starts_with("layer") && name.ends_with(".bn2.weight");
    if name == "fc.weight" {
        (0.0, 1.0 / 512f64.sqrt())
    } else if name == "fc.bias" {
        (0.0, 0.01)
    } else if spec.shape.len() == 4 {
        let fan_in: usize = spec.shape[1..].iter().product();
        (0.0, (6.0 / fan_in as f64).sqrt())
    } else if is_residual_gamma {
        (0.5, 0.1)
    } else if name.ends_with(".weight") {
        (1.0, 0.2)
    } else if name.ends_with(".running_var") {
        (1.0, 0.5)
    } else {
        // bias and running_mean
        (0.0, 0.1)
    }
}

/// Values of one synthetic tensor, row-major.
pub fn synthetic_values(spec: &TensorSpec) -> Vec<f32> {
    let (a, b) = affine_for(spec);
    let mut rng = SplitMix64::new(fnv1a64(spec.name.as_bytes()));
    let len: usize = spec.shape.iter().product();
    (0..len)
        .map(|_| (a + b * rng.next_signed_unit()) as f32)
        .collect()
}

/// All synthetic ResNet-18 tensors, keyed by TorchVision name.
#[derive(Debug, Clone)]
pub struct SyntheticWeights {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl SyntheticWeights {
    /// Generates every tensor of [`expected_tensors`] (about 47 MB of f32, ~0.2 s).
    pub fn generate() -> Self {
        let tensors = expected_tensors()
            .into_iter()
            .map(|spec| {
                let values = synthetic_values(&spec);
                (spec.name, (spec.shape, values))
            })
            .collect();
        Self { tensors }
    }

    /// Writes the weights as an f32 safetensors file (the format `resnet18-fc` loads).
    pub fn write_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let map: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                Tensor::from_slice(values, shape.as_slice(), &Device::Cpu)
                    .map(|t| (name.clone(), t))
            })
            .collect::<Result<_, _>>()?;
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }
}

impl TensorSource for SyntheticWeights {
    fn tensor(&self, name: &str) -> Result<Tensor, ModelError> {
        let (shape, values) = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: "<synthetic>".into(),
                name: name.to_string(),
                shape: vec![],
            })?;
        Ok(Tensor::from_slice(values, shape.as_slice(), &Device::Cpu)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_published_vectors() {
        // Reference values from the FNV specification's test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn splitmix64_matches_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (the reference C implementation by
        // Sebastiano Vigna, as used in its published test).
        let mut rng = SplitMix64::new(1234567);
        let expected = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
        ];
        for e in expected {
            assert_eq!(rng.next_u64(), e);
        }
    }

    #[test]
    fn uniform_values_stay_in_half_open_unit_interval() {
        let mut rng = SplitMix64::new(42);
        for _ in 0..10_000 {
            let u = rng.next_signed_unit();
            assert!((-1.0..1.0).contains(&u));
        }
    }
}
