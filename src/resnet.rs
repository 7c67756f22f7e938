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
use candle_nn::Linear;

use crate::kernels::{GlobalAvgPool, MaxPool, PackedConv};

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

/// Loads `conv_name.weight` and the batch-norm `bn_name.*`, folds them and packs the result for
/// the channels-last convolution kernel (ReLU fused when `relu`).
fn load_conv_bn(
    src: &dyn TensorSource,
    conv_name: &str,
    bn_name: &str,
    stride: usize,
    padding: usize,
    relu: bool,
) -> Result<PackedConv, ModelError> {
    let weight = src.tensor(&format!("{conv_name}.weight"))?;
    let shape = weight.dims4()?;
    let values = |name: &str| -> Result<Vec<f32>, ModelError> {
        Ok(src.tensor(&format!("{bn_name}.{name}"))?.to_vec1::<f32>()?)
    };
    let bn = BatchNorm {
        gamma: values("weight")?,
        beta: values("bias")?,
        mean: values("running_mean")?,
        var: values("running_var")?,
    };
    let mut weight = weight.flatten_all()?.to_vec1::<f32>()?;
    let bias = bn.fold_into(&mut weight);
    let shape = [shape.0, shape.1, shape.2, shape.3];
    Ok(PackedConv::new(
        &weight, &bias, shape, stride, padding, relu,
    )?)
}

/// Eval-mode batch-norm statistics of one layer, one value per channel.
struct BatchNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

impl BatchNorm {
    /// Folds the batch-norm into the preceding convolution's `O×I×kh×kw` weight, in place, and
    /// returns the bias `[O]`. Per channel, in f64 and rounded once to f32:
    /// `s = γ/√(σ²+ε)`, `w' = w·s`, `b' = β − μ·s`.
    fn fold_into(&self, weight: &mut [f32]) -> Vec<f32> {
        let per_channel = weight.len() / self.gamma.len().max(1);
        let mut bias = Vec::with_capacity(self.gamma.len());
        for (o, filter) in weight.chunks_exact_mut(per_channel).enumerate() {
            let scale = f64::from(self.gamma[o]) / (f64::from(self.var[o]) + BN_EPS).sqrt();
            for w in filter {
                *w = (f64::from(*w) * scale) as f32;
            }
            bias.push((f64::from(self.beta[o]) - f64::from(self.mean[o]) * scale) as f32);
        }
        bias
    }
}

/// TorchVision's `BasicBlock`: two 3×3 convolutions and an identity (or 1×1) shortcut.
/// `conv2` adds the shortcut and applies the final ReLU in its epilogue.
#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: PackedConv,
    conv2: PackedConv,
    downsample: Option<PackedConv>,
}

impl BasicBlock {
    fn load(
        src: &dyn TensorSource,
        prefix: &str,
        stride: usize,
        downsample: bool,
    ) -> Result<Self, ModelError> {
        let conv = |name: &str, bn: &str, stride, padding, relu| {
            load_conv_bn(
                src,
                &format!("{prefix}.{name}"),
                &format!("{prefix}.{bn}"),
                stride,
                padding,
                relu,
            )
        };
        let conv1 = conv("conv1", "bn1", stride, 1, true)?;
        let conv2 = conv("conv2", "bn2", 1, 1, true)?;
        let downsample = if downsample {
            Some(conv("downsample.0", "downsample.1", stride, 0, false)?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            downsample,
        })
    }

    /// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, all NHWC.
    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let y = self.conv1.forward(x)?;
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(x)?,
            None => x.clone(),
        };
        Ok(self.conv2.forward_add(&y, &shortcut)?)
    }
}

/// ResNet-18 with batch-norm folded and convolution weights packed, ready for inference.
/// Cheap to clone (weights are shared).
///
/// Internally activations are channels-last (NHWC) and run through the kernels of
/// [`crate::kernels`]; only the input (NCHW, as TorchVision) and the logits cross the boundary.
#[derive(Debug, Clone)]
pub struct ResNet18 {
    stem: PackedConv,
    max_pool: MaxPool,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet18 {
    /// Builds the graph from any tensor source; the caller has validated names and shapes.
    pub fn from_source(src: &dyn TensorSource) -> Result<Self, ModelError> {
        let stem = load_conv_bn(src, "conv1", "bn1", 2, 3, true)?;
        let blocks = block_prefixes()
            .into_iter()
            .map(|(prefix, inp, out, downsample)| {
                let stride = if inp == out { 1 } else { 2 };
                BasicBlock::load(src, &prefix, stride, downsample)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fc = Linear::new(src.tensor("fc.weight")?, Some(src.tensor("fc.bias")?));
        Ok(Self {
            stem,
            max_pool: MaxPool {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            blocks,
            fc,
        })
    }

    /// Memory-maps a safetensors file, validates every tensor and builds the graph.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let file = SafetensorsFile::open(path)?;
        file.validate()?;
        Self::from_source(&file)
    }

    /// Runs the network on a normalised `N×3×224×224` f32 tensor (NCHW, as TorchVision) and
    /// returns `N×1000` logits.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let nhwc = images.permute((0, 2, 3, 1))?.contiguous()?;
        let x = self.stem.forward(&nhwc)?;
        let mut x = self.max_pool.forward(&x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let pooled = GlobalAvgPool.forward(&x)?;
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
