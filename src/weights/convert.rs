//! TorchVision `.pth` → safetensors conversion of the ResNet-18 state dict.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use super::WeightsError;
use super::atomic::TempFile;
use super::pth::{Checkpoint, StorageDType, TensorEntry};
use crate::resnet::{expected_tensors, validate_tensors};

/// Float type of the tensors written to the safetensors file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputDType {
    /// 32-bit IEEE float (what TorchVision checkpoints hold; 46.8 MB for ResNet-18).
    F32,
    /// 16-bit IEEE float (half the size; values rounded to nearest even).
    F16,
    /// bfloat16 (half the size, f32's range, 8 bits of mantissa).
    BF16,
}

impl OutputDType {
    /// `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }

    fn candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
        }
    }

    /// The type a float storage is written as when no type is requested: itself, except f64
    /// which the model cannot load and becomes f32.
    fn natural(source: StorageDType) -> Option<Self> {
        match source {
            StorageDType::F32 | StorageDType::F64 => Some(Self::F32),
            StorageDType::F16 => Some(Self::F16),
            StorageDType::BF16 => Some(Self::BF16),
            _ => None,
        }
    }
}

impl fmt::Display for OutputDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputDType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            other => Err(format!(
                "unknown dtype `{other}` (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// How to convert a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Output float type; `None` keeps each tensor's source type (f64 becomes f32).
    pub dtype: Option<OutputDType>,
    /// Key of the state dict inside the checkpoint; `None` finds it (top level, or one of
    /// [`super::pth::NESTED_STATE_DICT_KEYS`]).
    pub key: Option<String>,
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// Number of tensors written (102 for ResNet-18).
    pub tensors: usize,
    /// Float type(s) of the source tensors, e.g. `f32` (`mixed` when they differ).
    pub source_dtype: String,
    /// Float type of the written tensors, e.g. `f32` (`mixed` when they differ).
    pub dtype: String,
    /// Key the state dict was nested under, if any.
    pub state_dict_key: Option<String>,
    /// Tensors of the checkpoint that ResNet-18 does not use (`num_batches_tracked` excluded).
    pub unused: Vec<String>,
    /// Size of the written file in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the written file.
    pub sha256: String,
}

/// Converts the TorchVision ResNet-18 checkpoint `input` into the safetensors file `output`.
///
/// Every tensor ResNet-18 needs is checked (name, shape, float dtype) before any data is read;
/// the first problem is reported by name, e.g. "missing tensor layer3.1.bn2.running_var
/// (expected float \[256\])". `num_batches_tracked` buffers and other unused entries are skipped.
/// The output is written to a temporary file beside `output` and renamed over it, so `output`
/// is either untouched or complete. Cost: reads the whole checkpoint into memory (~47 MB) once.
pub fn convert_checkpoint(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertReport, WeightsError> {
    let (temp, report) = convert_to_temp(input, output, opts)?;
    temp.persist(output)
        .map_err(|e| WeightsError::io(output, e))?;
    Ok(report)
}

/// Converts into a temporary file beside `output`; the caller persists it.
pub(crate) fn convert_to_temp(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<(TempFile, ConvertReport), WeightsError> {
    let mut checkpoint = Checkpoint::open(input, opts.key.as_deref())?;
    validate(&checkpoint, input, opts)?;
    let tensors = load_tensors(&mut checkpoint, opts)?;
    let temp = TempFile::beside(output);
    candle_core::safetensors::save(&tensors, temp.path())?;
    let (sha256, size) = super::sha256_file(temp.path())?;
    let report = ConvertReport {
        tensors: tensors.len(),
        source_dtype: summary(expected_entries(&checkpoint).map(|e| e.dtype.name())),
        dtype: summary(tensors.values().map(|t| dtype_name(t.dtype()))),
        state_dict_key: checkpoint.state_dict_key().map(str::to_owned),
        unused: unused_tensors(&checkpoint),
        size,
        sha256,
    };
    Ok((temp, report))
}

/// Checks names, shapes and dtypes of every expected tensor against the checkpoint's directory.
fn validate(
    checkpoint: &Checkpoint,
    input: &Path,
    opts: &ConvertOptions,
) -> Result<(), WeightsError> {
    validate_tensors(&input.display().to_string(), |name| {
        let entry = checkpoint.get(name)?;
        let dtype = match OutputDType::natural(entry.dtype) {
            Some(natural) => opts.dtype.unwrap_or(natural).name(),
            None => entry.dtype.name(),
        };
        Some((entry.shape.clone(), dtype.to_owned()))
    })?;
    Ok(())
}

/// Reads every expected tensor and converts it to its output dtype.
fn load_tensors(
    checkpoint: &mut Checkpoint,
    opts: &ConvertOptions,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let entries: Vec<TensorEntry> = expected_entries(checkpoint).cloned().collect();
    let mut tensors = HashMap::with_capacity(entries.len());
    for entry in entries {
        let tensor = load_tensor(checkpoint, &entry, opts)?;
        tensors.insert(entry.name, tensor);
    }
    Ok(tensors)
}

fn load_tensor(
    checkpoint: &mut Checkpoint,
    entry: &TensorEntry,
    opts: &ConvertOptions,
) -> Result<Tensor, WeightsError> {
    let (source, natural) = match entry.dtype {
        StorageDType::F32 => (DType::F32, OutputDType::F32),
        StorageDType::F64 => (DType::F64, OutputDType::F32),
        StorageDType::F16 => (DType::F16, OutputDType::F16),
        StorageDType::BF16 => (DType::BF16, OutputDType::BF16),
        // validate() has already refused non-float expected tensors.
        other => {
            return Err(WeightsError::Unsupported {
                path: entry.name.clone(),
                reason: format!("dtype {}", other.name()),
            });
        }
    };
    let bytes = checkpoint.read_tensor(entry)?;
    let tensor = Tensor::from_raw_buffer(&bytes, source, &entry.shape, &Device::Cpu)?;
    Ok(tensor.to_dtype(opts.dtype.unwrap_or(natural).candle())?)
}

/// Checkpoint entries of the tensors ResNet-18 needs, in `state_dict` order.
fn expected_entries(checkpoint: &Checkpoint) -> impl Iterator<Item = &TensorEntry> {
    expected_tensors()
        .into_iter()
        .filter_map(move |spec| checkpoint.get(&spec.name))
}

fn unused_tensors(checkpoint: &Checkpoint) -> Vec<String> {
    let expected: Vec<String> = expected_tensors().into_iter().map(|s| s.name).collect();
    checkpoint
        .tensors()
        .iter()
        .map(|t| &t.name)
        .filter(|name| !name.ends_with("num_batches_tracked") && !expected.contains(name))
        .cloned()
        .collect()
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

/// The common value of `names`, or `mixed`.
fn summary<'a>(mut names: impl Iterator<Item = &'a str>) -> String {
    let first = names.next().unwrap_or("none");
    if names.all(|n| n == first) {
        first.to_owned()
    } else {
        "mixed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dtype_parses_names_case_insensitively() {
        assert_eq!("F16".parse::<OutputDType>(), Ok(OutputDType::F16));
        assert_eq!("float32".parse::<OutputDType>(), Ok(OutputDType::F32));
        assert_eq!("bf16".parse::<OutputDType>(), Ok(OutputDType::BF16));
        assert!("f64".parse::<OutputDType>().is_err());
    }

    #[test]
    fn summary_names_the_common_dtype_or_mixed() {
        assert_eq!(summary(["f32", "f32"].into_iter()), "f32");
        assert_eq!(summary(["f32", "f16"].into_iter()), "mixed");
    }
}
