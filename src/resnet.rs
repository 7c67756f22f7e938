//! TorchVision's ResNet-18 as a candle graph.
//!
//! The module tree mirrors `torchvision/models/resnet.py`: `conv1`/`bn1`, four `layerN` stages of
//! two `BasicBlock`s each (`layer{2,3,4}.0` carry a `downsample` 1×1 convolution + batch-norm),
//! global average pooling and `fc`. Tensor names are exactly the keys of TorchVision's
//! `state_dict()`, so a checkpoint converted to safetensors loads without renaming.
//!
//! Batch-norm is folded into the preceding convolution once at load time (inference only):
//! `w' = w · γ/√(σ²+ε)` and `b' = β − μ · γ/√(σ²+ε)`, computed in f64 and stored in f32.
//! Files in f32, f16 or bf16 load; computation is always f32.
//!
//! This module knows nothing about images or HTTP: its input is a normalised `N×3×224×224`
//! tensor, its output `N×1000` logits.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

/// Number of ImageNet classes the final layer produces.
pub const NUM_CLASSES: usize = 1000;

/// Epsilon of TorchVision's `BatchNorm2d` (PyTorch default).
const BN_EPS: f64 = 1e-5;

/// One tensor the model expects in its weights file: TorchVision name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// TorchVision `state_dict` key, e.g. `layer3.1.bn2.running_var`.
    pub name: String,
    /// Expected shape, e.g. `[256]`.
    pub shape: Vec<usize>,
}

/// Errors while loading ResNet-18 weights or running the graph.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The weights file could not be opened or is not a valid safetensors file.
    #[error(
        "cannot read weights file {path}: {reason}; run `resnet18-fc fetch-model` to download \
         the TorchVision checkpoint, or `resnet18-fc convert` on a .pth file"
    )]
    Unreadable {
        /// Path of the file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error(
        "{path} is missing tensor {name} (expected float {shape:?}); re-run `resnet18-fc convert` \
         on a TorchVision resnet18 checkpoint"
    )]
    MissingTensor {
        /// Path of the file.
        path: String,
        /// Tensor name.
        name: String,
        /// Expected shape.
        shape: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error(
        "{path}: tensor {name} has shape {found:?}, expected {expected:?}; is this a ResNet-18 checkpoint?"
    )]
    WrongShape {
        /// Path of the file.
        path: String,
        /// Tensor name.
        name: String,
        /// Shape found in the file.
        found: Vec<usize>,
        /// Expected shape.
        expected: Vec<usize>,
    },
    /// A tensor is stored in a dtype that is not f32, f16 or bf16.
    #[error("{path}: tensor {name} has dtype {found}, expected f32, f16 or bf16")]
    WrongDType {
        /// Path of the file.
        path: String,
        /// Tensor name.
        name: String,
        /// Dtype found in the file.
        found: String,
    },
    /// candle failed while building or running the graph.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Names of the two batch-norms of a `BasicBlock` and, when present, its downsample branch.
fn block_prefixes() -> Vec<(String, usize, usize, bool)> {
    // (prefix, in_channels, out_channels, has_downsample)
    let mut blocks = Vec::new();
    let widths = [64usize, 128, 256, 512];
    let mut in_ch = 64;
    for (stage, &out_ch) in widths.iter().enumerate() {
        for block in 0..2 {
            let prefix = format!("layer{}.{}", stage + 1, block);
            let downsample = block == 0 && stage > 0;
            let block_in = if block == 0 { in_ch } else { out_ch };
            blocks.push((prefix, block_in, out_ch, downsample));
        }
        in_ch = out_ch;
    }
    blocks
}

fn push_bn(specs: &mut Vec<TensorSpec>, prefix: &str, channels: usize) {
    for field in ["weight", "bias", "running_mean", "running_var"] {
        specs.push(TensorSpec {
            name: format!("{prefix}.{field}"),
            shape: vec![channels],
        });
    }
}

fn push_conv(specs: &mut Vec<TensorSpec>, name: &str, out: usize, inp: usize, k: usize) {
    specs.push(TensorSpec {
        name: format!("{name}.weight"),
        shape: vec![out, inp, k, k],
    });
}

/// Every tensor ResNet-18 needs, with TorchVision names and shapes, in `state_dict` order.
///
/// `num_batches_tracked` buffers are not listed: they do not affect inference and are ignored.
pub fn expected_tensors() -> Vec<TensorSpec> {
    let mut specs = Vec::with_capacity(102);
    push_conv(&mut specs, "conv1", 64, 3, 7);
    push_bn(&mut specs, "bn1", 64);
    for (prefix, inp, out, downsample) in block_prefixes() {
        push_conv(&mut specs, &format!("{prefix}.conv1"), out, inp, 3);
        push_bn(&mut specs, &format!("{prefix}.bn1"), out);
        push_conv(&mut specs, &format!("{prefix}.conv2"), out, out, 3);
        push_bn(&mut specs, &format!("{prefix}.bn2"), out);
        if downsample {
            push_conv(&mut specs, &format!("{prefix}.downsample.0"), out, inp, 1);
            push_bn(&mut specs, &format!("{prefix}.downsample.1"), out);
        }
    }
    specs.push(TensorSpec {
        name: "fc.weight".into(),
        shape: vec![NUM_CLASSES, 512],
    });
    specs.push(TensorSpec {
        name: "fc.bias".into(),
        shape: vec![NUM_CLASSES],
    });
    specs
}

/// Checks that `lookup(name)` yields every expected tensor with the right shape and a float
/// dtype. `lookup` returns `(shape, dtype name)` or `None` when the tensor is absent.
///
/// Shared by model loading and checkpoint conversion so both report the same errors.
pub fn validate_tensors<F>(path: &str, lookup: F) -> Result<(), ModelError>
where
    F: Fn(&str) -> Option<(Vec<usize>, String)>,
{
    for spec in expected_tensors() {
        let Some((shape, dtype)) = lookup(&spec.name) else {
            return Err(ModelError::MissingTensor {
                path: path.to_string(),
                name: spec.name,
                shape: spec.shape,
            });
        };
        if shape != spec.shape {
            return Err(ModelError::WrongShape {
                path: path.to_string(),
                name: spec.name,
                found: shape,
                expected: spec.shape,
            });
        }
        if !matches!(dtype.as_str(), "f32" | "f16" | "bf16") {
            return Err(ModelError::WrongDType {
                path: path.to_string(),
                name: spec.name,
                found: dtype,
            });
        }
    }
    Ok(())
}

/// Source of named f32 tensors (a safetensors file, or an in-memory map in tests).
pub trait TensorSource {
    /// Returns the tensor named `name` as f32 on the CPU.
    fn tensor(&self, name: &str) -> Result<Tensor, ModelError>;
}

/// A convolution with batch-norm folded in, followed by nothing (activation is applied by the
/// caller so residual additions happen before the ReLU as in TorchVision).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
}

impl ConvBn {
    /// Loads `conv_name.weight` and the batch-norm `bn_name.*`, and folds them.
    fn load(
        src: &dyn TensorSource,
        conv_name: &str,
        bn_name: &str,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ModelError> {
        let weight = src.tensor(&format!("{conv_name}.weight"))?;
        let gamma = src.tensor(&format!("{bn_name}.weight"))?;
        let beta = src.tensor(&format!("{bn_name}.bias"))?;
        let mean = src.tensor(&format!("{bn_name}.running_mean"))?;
        let var = src.tensor(&format!("{bn_name}.running_var"))?;
        let (weight, bias) = fold_batch_norm(&weight, &gamma, &beta, &mean, &var)?;
        let config = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(weight, Some(bias), config),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.conv.forward(x)?)
    }
}

/// Folds an eval-mode batch-norm into the convolution weight `[O, I, kh, kw]`.
/// Returns the scaled weight and the bias `[O]`, both f32. Arithmetic is done in f64.
fn fold_batch_norm(
    weight: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> Result<(Tensor, Tensor), ModelError> {
    let f64s = |t: &Tensor| -> Result<Tensor, ModelError> { Ok(t.to_dtype(DType::F64)?) };
    let scale = f64s(gamma)?.div(&(f64s(var)? + BN_EPS)?.sqrt()?)?;
    let bias = (f64s(beta)? - f64s(mean)?.mul(&scale)?)?;
    let out_channels = scale.dim(0)?;
    let folded = f64s(weight)?.broadcast_mul(&scale.reshape((out_channels, 1, 1, 1))?)?;
    Ok((folded.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?))
}

/// TorchVision's `BasicBlock`: two 3×3 convolutions and an identity (or 1×1) shortcut.
#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn load(
        src: &dyn TensorSource,
        prefix: &str,
        stride: usize,
        downsample: bool,
    ) -> Result<Self, ModelError> {
        let conv1 = ConvBn::load(
            src,
            &format!("{prefix}.conv1"),
            &format!("{prefix}.bn1"),
            stride,
            1,
        )?;
        let conv2 = ConvBn::load(
            src,
            &format!("{prefix}.conv2"),
            &format!("{prefix}.bn2"),
            1,
            1,
        )?;
        let downsample = if downsample {
            Some(ConvBn::load(
                src,
                &format!("{prefix}.downsample.0"),
                &format!("{prefix}.downsample.1"),
                stride,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let y = self.conv1.forward(x)?.relu()?;
        let y = self.conv2.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(x)?,
            None => x.clone(),
        };
        Ok((y + shortcut)?.relu()?)
    }
}

/// ResNet-18 with batch-norm folded, ready for inference. Cheap to clone (tensors are shared).
#[derive(Debug, Clone)]
pub struct ResNet18 {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet18 {
    /// Builds the graph from any tensor source; the caller has validated names and shapes.
    pub fn from_source(src: &dyn TensorSource) -> Result<Self, ModelError> {
        let stem = ConvBn::load(src, "conv1", "bn1", 2, 3)?;
        let blocks = block_prefixes()
            .into_iter()
            .map(|(prefix, inp, out, downsample)| {
                let stride = if inp == out { 1 } else { 2 };
                BasicBlock::load(src, &prefix, stride, downsample)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fc = Linear::new(src.tensor("fc.weight")?, Some(src.tensor("fc.bias")?));
        Ok(Self { stem, blocks, fc })
    }

    /// Memory-maps a safetensors file, validates every tensor and builds the graph.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let file = SafetensorsFile::open(path)?;
        file.validate()?;
        Self::from_source(&file)
    }

    /// Runs the network on a normalised `N×3×224×224` f32 tensor and returns `N×1000` logits.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.stem.forward(images)?.relu()?;
        // 3×3/2 max-pool with padding 1. After the ReLU every value is ≥ 0, so zero padding gives
        // the same maximum as PyTorch's −∞ padding (each window holds at least one real value).
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let pooled = x.mean((2, 3))?;
        Ok(self.fc.forward(&pooled)?)
    }
}

/// A memory-mapped safetensors file used as a [`TensorSource`].
pub struct SafetensorsFile {
    path: String,
    inner: candle_core::safetensors::MmapedSafetensors,
}

impl SafetensorsFile {
    /// Memory-maps `path`. Nothing is read until tensors are requested.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let display = path.display().to_string();
        // SAFETY: the file is opened read-only and we never write to it while mapped; a
        // concurrent external modification would be a deployment error (weights are immutable).
        let inner =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
                ModelError::Unreadable {
                    path: display.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            path: display,
            inner,
        })
    }

    /// Checks presence, shape and dtype of every tensor ResNet-18 needs.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_tensors(&self.path, |name| {
            let view = self.inner.get(name).ok()?;
            Some((
                view.shape().to_vec(),
                format!("{:?}", view.dtype()).to_lowercase(),
            ))
        })
    }
}

impl TensorSource for SafetensorsFile {
    fn tensor(&self, name: &str) -> Result<Tensor, ModelError> {
        let t = self
            .inner
            .load(name, &Device::Cpu)
            .map_err(|_| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                shape: vec![],
            })?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tensors_match_torchvision_resnet18_state_dict() {
        let specs = expected_tensors();
        // torchvision resnet18().state_dict() has 122 entries, 20 of which are
        // num_batches_tracked (one per BatchNorm2d), leaving 102 float tensors.
        assert_eq!(specs.len(), 102);
        let params: usize = specs
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        // 11,689,512 learnable parameters + 2 × 4,800 running statistics (9,600).
        assert_eq!(params, 11_689_512 + 9_600);
        assert!(
            specs
                .iter()
                .any(|s| s.name == "layer4.0.downsample.1.running_var" && s.shape == [512])
        );
        assert!(
            !specs
                .iter()
                .any(|s| s.name.starts_with("layer1.0.downsample"))
        );
    }
}
