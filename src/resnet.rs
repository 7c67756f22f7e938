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

use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::kernels::{
    BatchNorm, GlobalAvgPool, MaxPool, PackedConv, QConv, WinogradConv, WinogradVariant,
    fold_batch_norm,
};

mod file;

pub use file::SafetensorsFile;

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

    /// Returns the elements of tensor `name` as f32, row-major. Sources that can decode their
    /// storage directly override this to skip the intermediate tensor.
    fn values(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        Ok(self.tensor(name)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Environment variable that overrides [`ConvPolicy::default`] (see [`ConvPolicy::from_env`]).
pub const CONV_POLICY_ENV: &str = "RESNET18_FC_CONV3X3";

/// How the 3×3 stride-1 convolutions (13 of ResNet-18's 20) are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPolicy {
    /// Winograd tiling for 3×3 stride-1 layers, or `None` for tiled im2col + GEMM everywhere.
    pub winograd: Option<WinogradVariant>,
    /// Winograd is used only for layers with at most this many output channels (the
    /// transformed weights are `α²/9` times larger: F(2,3) on layer4 would add 22 MB).
    pub max_winograd_channels: usize,
}

impl Default for ConvPolicy {
    /// Winograd F(2,3) on layer1–layer3 (it meets the 1e-4 logit parity; see `tests/engine/parity.rs`).
    fn default() -> Self {
        Self {
            winograd: Some(WinogradVariant::F2x3),
            max_winograd_channels: 256,
        }
    }
}

impl ConvPolicy {
    /// Tiled im2col + GEMM for every convolution.
    pub const IM2COL: Self = Self {
        winograd: None,
        max_winograd_channels: 0,
    };

    /// Parses a policy name: `im2col`, `f23`, `f43` (layer1–layer3), `f23-all`, `f43-all`
    /// (every 3×3 stride-1 layer). `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let (variant, all) = match name {
            "im2col" => return Some(Self::IM2COL),
            "f23" => (WinogradVariant::F2x3, false),
            "f43" => (WinogradVariant::F4x3, false),
            "f23-all" => (WinogradVariant::F2x3, true),
            "f43-all" => (WinogradVariant::F4x3, true),
            _ => return None,
        };
        Some(Self {
            winograd: Some(variant),
            max_winograd_channels: if all { usize::MAX } else { 256 },
        })
    }

    /// The policy named by `RESNET18_FC_CONV3X3` ([`Self::parse`]); the default when the
    /// variable is unset or not a known name (a benchmarking knob, not a user setting).
    pub fn from_env() -> Self {
        std::env::var(CONV_POLICY_ENV)
            .ok()
            .and_then(|v| Self::parse(v.trim()))
            .unwrap_or_default()
    }

    /// The Winograd tiling for a convolution of `spec`, if this policy gives it one.
    fn winograd_for(&self, spec: &ConvSpec) -> Option<WinogradVariant> {
        let eligible = spec.kernel == 3
            && spec.stride == 1
            && spec.padding == 1
            && spec.out_channels <= self.max_winograd_channels;
        self.winograd.filter(|_| eligible)
    }
}

/// Arithmetic of the convolutions.
///
/// `Int8`: every convolution runs on 8-bit integers — weights quantized at load per output
/// channel (symmetric), activations quantized per tensor from the range measured on each
/// forward (no calibration data; the stem's signed input gets a zero point) — with exact
/// 32-bit accumulation and an f32 epilogue (`kernels::qconv`). The residual additions, pooling
/// and the `fc` head stay f32 (the head is where the logits' sensitivity lies).
/// `RESNET18_FC_INT8_STEM=f32` keeps the stem in f32 as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32 (the default; matches TorchVision within 1e-4).
    #[default]
    F32,
    /// 8-bit convolutions (see above).
    Int8,
}

impl Precision {
    /// `f32` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// Environment variable: `f32` keeps the stem convolution in f32 in int8 models (a
/// benchmarking knob for the fidelity/speed trade-off; see docs/performance.md).
pub const INT8_STEM_ENV: &str = "RESNET18_FC_INT8_STEM";

/// Whether int8 models quantize the stem too (unless `RESNET18_FC_INT8_STEM=f32`).
fn int8_stem() -> bool {
    std::env::var(INT8_STEM_ENV).map_or(true, |v| v.trim() != "f32")
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision {other:?}: expected f32 or int8")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One convolution with BN folded: tiled im2col + GEMM, Winograd for 3×3 stride-1 layers, or
/// the 8-bit im2col kernel. All take and return NHWC f32 tensors and fuse bias, residual and
/// ReLU.
#[derive(Debug, Clone)]
enum Conv {
    Im2col(PackedConv),
    Winograd(WinogradConv),
    Int8(QConv),
}

impl Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Conv::Im2col(c) => c.forward(x),
            Conv::Winograd(c) => c.forward(x),
            Conv::Int8(c) => c.forward(x),
        }
    }

    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Conv::Im2col(c) => c.forward_add(x, residual),
            Conv::Winograd(c) => c.forward_add(x, residual),
            Conv::Int8(c) => c.forward_add(x, residual),
        }
    }
}

/// How each convolution of a model is computed: the f32 policy and the precision.
#[derive(Debug, Clone, Copy)]
struct BuildOptions {
    policy: ConvPolicy,
    precision: Precision,
}

/// Geometry of one convolution as stored in the weights file and run by the kernel.
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    relu: bool,
}

/// Loads `conv_name.weight` and the batch-norm `bn_name.*`, folds them and packs the result for
/// the channels-last convolution kernel `options` pick (ReLU fused when `spec.relu`).
///
/// The raw weight is read into a temporary vector, folded in place and packed; only the packed
/// copy survives, so loading holds at most one raw tensor besides the packed model.
fn load_conv_bn(
    src: &dyn TensorSource,
    conv_name: &str,
    bn_name: &str,
    spec: ConvSpec,
    options: &BuildOptions,
) -> Result<Conv, ModelError> {
    let shape = [
        spec.out_channels,
        spec.in_channels,
        spec.kernel,
        spec.kernel,
    ];
    let values = |name: &str, len: usize| -> Result<Vec<f32>, ModelError> {
        let v = src.values(name)?;
        if v.len() != len {
            return Err(ModelError::WrongShape {
                path: "weights".into(),
                name: name.to_string(),
                found: vec![v.len()],
                expected: vec![len],
            });
        }
        Ok(v)
    };
    let channels = spec.out_channels;
    let bn = BatchNorm {
        gamma: values(&format!("{bn_name}.weight"), channels)?,
        beta: values(&format!("{bn_name}.bias"), channels)?,
        mean: values(&format!("{bn_name}.running_mean"), channels)?,
        var: values(&format!("{bn_name}.running_var"), channels)?,
        eps: BN_EPS,
    };
    let mut weight = values(&format!("{conv_name}.weight"), shape.iter().product())?;
    let bias = fold_batch_norm(&mut weight, &bn).ok_or_else(|| {
        candle_core::Error::Msg(format!("{bn_name}: batch-norm does not match {conv_name}"))
    })?;
    if options.precision == Precision::Int8 {
        return Ok(Conv::Int8(QConv::new(
            &weight,
            &bias,
            shape,
            spec.stride,
            spec.padding,
            spec.relu,
        )?));
    }
    Ok(match options.policy.winograd_for(&spec) {
        Some(variant) => Conv::Winograd(WinogradConv::new(
            &weight, &bias, shape, spec.relu, variant,
        )?),
        None => Conv::Im2col(PackedConv::new(
            &weight,
            &bias,
            shape,
            spec.stride,
            spec.padding,
            spec.relu,
        )?),
    })
}

/// TorchVision's `BasicBlock`: two 3×3 convolutions and an identity (or 1×1) shortcut.
/// `conv2` adds the shortcut and applies the final ReLU in its epilogue.
#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv,
    conv2: Conv,
    downsample: Option<Conv>,
}

impl BasicBlock {
    /// Loads block `prefix` mapping `inp` to `out` channels; it downsamples (stride 2, 1×1
    /// shortcut convolution) when the widths differ.
    fn load(
        src: &dyn TensorSource,
        prefix: &str,
        inp: usize,
        out: usize,
        downsample: bool,
        options: &BuildOptions,
    ) -> Result<Self, ModelError> {
        let stride = if inp == out { 1 } else { 2 };
        let conv = |name: &str, bn: &str, spec| {
            load_conv_bn(
                src,
                &format!("{prefix}.{name}"),
                &format!("{prefix}.{bn}"),
                spec,
                options,
            )
        };
        let spec = |in_channels, kernel, stride, padding, relu| ConvSpec {
            out_channels: out,
            in_channels,
            kernel,
            stride,
            padding,
            relu,
        };
        let conv1 = conv("conv1", "bn1", spec(inp, 3, stride, 1, true))?;
        let conv2 = conv("conv2", "bn2", spec(out, 3, 1, 1, true))?;
        let downsample = if downsample {
            Some(conv(
                "downsample.0",
                "downsample.1",
                spec(inp, 1, stride, 0, false),
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
    stem: Conv,
    max_pool: MaxPool,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet18 {
    /// Builds the graph from any tensor source with the [`ConvPolicy::from_env`] policy; the
    /// caller has validated names and shapes.
    pub fn from_source(src: &dyn TensorSource) -> Result<Self, ModelError> {
        Self::from_source_with(src, &ConvPolicy::from_env())
    }

    /// [`Self::from_source`] with an explicit convolution policy (f32).
    pub fn from_source_with(
        src: &dyn TensorSource,
        policy: &ConvPolicy,
    ) -> Result<Self, ModelError> {
        Self::from_source_precision(src, policy, Precision::F32)
    }

    /// [`Self::from_source_with`] at the given precision (the policy applies to the f32
    /// convolutions: all of them in f32, the stem in int8).
    pub fn from_source_precision(
        src: &dyn TensorSource,
        policy: &ConvPolicy,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let options = BuildOptions {
            policy: *policy,
            precision,
        };
        // The stem follows the precision unless `RESNET18_FC_INT8_STEM=f32`.
        let stem_options = BuildOptions {
            precision: if int8_stem() {
                precision
            } else {
                Precision::F32
            },
            ..options
        };
        let stem_spec = ConvSpec {
            out_channels: 64,
            in_channels: 3,
            kernel: 7,
            stride: 2,
            padding: 3,
            relu: true,
        };
        let stem = load_conv_bn(src, "conv1", "bn1", stem_spec, &stem_options)?;
        let blocks = block_prefixes()
            .into_iter()
            .map(|(prefix, inp, out, downsample)| {
                BasicBlock::load(src, &prefix, inp, out, downsample, &options)
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

    /// Opens a safetensors file, validates every tensor and builds the graph (tensors are read
    /// one at a time and only their packed form is kept), in f32.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::load_with(path, Precision::F32)
    }

    /// [`Self::load`] at an explicit precision. In int8 only the quantized weights stay
    /// resident (each f32 tensor is dropped once packed).
    pub fn load_with(path: &Path, precision: Precision) -> Result<Self, ModelError> {
        let file = SafetensorsFile::open(path)?;
        file.validate()?;
        Self::from_source_precision(&file, &ConvPolicy::from_env(), precision)
    }

    /// Runs the network on a normalised `N×3×224×224` f32 tensor (NCHW, as TorchVision) and
    /// returns `N×1000` logits.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        // The NHWC copy and the stem's output (the largest activation, 3.2 MB per image) are
        // dropped as soon as the max-pool has read them, not kept for the whole forward.
        let mut x = {
            let nhwc = images.permute((0, 2, 3, 1))?.contiguous()?;
            let stem = self.stem.forward(&nhwc)?;
            drop(nhwc);
            self.max_pool.forward(&stem)?
        };
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let pooled = GlobalAvgPool.forward(&x)?;
        Ok(self.fc.forward(&pooled)?)
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

    #[test]
    fn precision_names_parse_case_insensitively_and_unknown_names_are_rejected() {
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert_eq!(" INT8 ".parse::<Precision>(), Ok(Precision::Int8));
        assert!("int4".parse::<Precision>().is_err());
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(Precision::Int8.to_string(), "int8");
    }

    #[test]
    fn conv_policy_names_parse_and_unknown_names_are_rejected() {
        assert_eq!(ConvPolicy::parse("im2col"), Some(ConvPolicy::IM2COL));
        assert_eq!(ConvPolicy::parse("f23"), Some(ConvPolicy::default()));
        let all = ConvPolicy::parse("f43-all").unwrap();
        assert_eq!(all.winograd, Some(WinogradVariant::F4x3));
        assert_eq!(all.max_winograd_channels, usize::MAX);
        assert_eq!(ConvPolicy::parse("winograd"), None);
    }

    #[test]
    fn winograd_is_chosen_only_for_3x3_stride_1_pad_1_within_the_channel_limit() {
        let spec = |out_channels, kernel, stride, padding| ConvSpec {
            out_channels,
            in_channels: 64,
            kernel,
            stride,
            padding,
            relu: true,
        };
        let policy = ConvPolicy::default();
        assert_eq!(
            policy.winograd_for(&spec(256, 3, 1, 1)),
            Some(WinogradVariant::F2x3)
        );
        assert_eq!(policy.winograd_for(&spec(512, 3, 1, 1)), None);
        assert_eq!(policy.winograd_for(&spec(64, 3, 2, 1)), None);
        assert_eq!(policy.winograd_for(&spec(64, 1, 1, 0)), None);
        assert_eq!(policy.winograd_for(&spec(64, 7, 1, 1)), None);
        assert_eq!(ConvPolicy::IM2COL.winograd_for(&spec(64, 3, 1, 1)), None);
    }

    #[test]
    fn every_winograd_policy_gives_the_im2col_logits_within_tolerance() {
        // Same synthetic weights and input through every policy; F(2,3) must stay within the
        // 1e-4 logit tolerance of the parity tests, F(4,3) is reported (bench) and held to 1e-3.
        let weights = crate::synthetic::SyntheticWeights::generate();
        let values: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        let input = Tensor::from_vec(values, (1, 3, 224, 224), &candle_core::Device::Cpu).unwrap();
        let logits = |name: &str| {
            let policy = ConvPolicy::parse(name).unwrap();
            let model = ResNet18::from_source_with(&weights, &policy).unwrap();
            let out = model.forward(&input).unwrap();
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let reference = logits("im2col");
        for (name, tolerance) in [("f23", 1e-4), ("f23-all", 1e-4), ("f43-all", 1e-3)] {
            let got = logits(name);
            let diff = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff <= tolerance, "{name}: max logit diff {diff}");
        }
    }
}
