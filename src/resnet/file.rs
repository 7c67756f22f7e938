//! A safetensors weights file read tensor by tensor, without keeping the file mapped.
//!
//! Only the header (names, dtypes, shapes, byte offsets) is held in memory; each tensor's bytes
//! are read when the model asks for them, converted to f32 and handed over, so loading never
//! holds more than one raw tensor next to the packed weights. Format (safetensors spec): an
//! 8-byte little-endian header length `n`, `n` bytes of JSON header, then the data section, to
//! which every tensor's `data_offsets` are relative; the file ends where the data section does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;
use safetensors::tensor::Metadata;

use super::{ModelError, TensorSource, validate_tensors};

/// Largest header accepted (the ResNet-18 header is about 10 KB).
const MAX_HEADER: u64 = 1 << 20;

/// A safetensors file used as a [`TensorSource`].
pub struct SafetensorsFile {
    path: String,
    file: Mutex<File>,
    metadata: Metadata,
    /// Byte offset of the data section in the file.
    data_start: u64,
}

impl SafetensorsFile {
    /// Opens `path` and parses its header. Tensor data is read only when requested.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let display = path.display().to_string();
        let unreadable = |reason: String| ModelError::Unreadable {
            path: display.clone(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
        let file_len = file
            .metadata()
            .map_err(|e| unreadable(e.to_string()))?
            .len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .map_err(|_| unreadable("file too short for a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || 8 + header_len > file_len {
            return Err(unreadable(format!(
                "header length {header_len} is invalid for a {file_len}-byte file"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| unreadable(e.to_string()))?;
        let metadata: Metadata =
            serde_json::from_slice(&header).map_err(|e| unreadable(e.to_string()))?;
        let data_start = 8 + header_len;
        if data_start + metadata.data_len() as u64 != file_len {
            return Err(unreadable(format!(
                "data section is {} bytes but the file holds {}",
                metadata.data_len(),
                file_len - data_start
            )));
        }
        Ok(Self {
            path: display,
            file: Mutex::new(file),
            metadata,
            data_start,
        })
    }

    /// Checks presence, shape and dtype of every tensor ResNet-18 needs.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_tensors(&self.path, |name| {
            let info = self.metadata.info(name)?;
            Some((
                info.shape.clone(),
                format!("{:?}", info.dtype).to_lowercase(),
            ))
        })
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            shape: vec![],
        }
    }

    /// The raw little-endian bytes of tensor `name`, with its dtype and shape.
    fn read_raw(&self, name: &str) -> Result<(Vec<u8>, Dtype, Vec<usize>), ModelError> {
        let info = self.metadata.info(name).ok_or_else(|| self.missing(name))?;
        let (start, end) = info.data_offsets;
        let mut bytes = vec![0u8; end - start];
        let mut file = self.file.lock().map_err(|_| ModelError::Unreadable {
            path: self.path.clone(),
            reason: "file handle poisoned by an earlier panic".into(),
        })?;
        file.seek(SeekFrom::Start(self.data_start + start as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| ModelError::Unreadable {
                path: self.path.clone(),
                reason: format!("reading {name}: {e}"),
            })?;
        Ok((bytes, info.dtype, info.shape.clone()))
    }

    fn wrong_dtype(&self, name: &str, dtype: Dtype) -> ModelError {
        ModelError::WrongDType {
            path: self.path.clone(),
            name: name.to_string(),
            found: format!("{dtype:?}").to_lowercase(),
        }
    }
}

impl TensorSource for SafetensorsFile {
    fn tensor(&self, name: &str) -> Result<Tensor, ModelError> {
        let (bytes, dtype, shape) = self.read_raw(name)?;
        let dtype = match dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => return Err(self.wrong_dtype(name, other)),
        };
        let t = Tensor::from_raw_buffer(&bytes, dtype, &shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn values(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let (bytes, dtype, _) = self.read_raw(name)?;
        match dtype {
            // The common case: decode straight from the bytes, no intermediate tensor.
            Dtype::F32 => Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            _ => Ok(self.tensor(name)?.flatten_all()?.to_vec1::<f32>()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A file with one f32 tensor `t` of shape [2] holding 1.5 and -2.0, written by hand.
    fn tiny_file() -> Vec<u8> {
        let header = br#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
        bytes
    }

    #[test]
    fn reads_values_and_tensors_from_a_hand_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "ok.safetensors", &tiny_file());
        let file = SafetensorsFile::open(&path).unwrap();
        assert_eq!(file.values("t").unwrap(), vec![1.5, -2.0]);
        assert_eq!(
            file.tensor("t").unwrap().to_vec1::<f32>().unwrap(),
            vec![1.5, -2.0]
        );
        assert!(matches!(
            file.values("absent"),
            Err(ModelError::MissingTensor { .. })
        ));
    }

    #[test]
    fn truncated_or_oversized_files_are_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = tiny_file();
        bytes.pop();
        let truncated = write(dir.path(), "short.safetensors", &bytes);
        assert!(matches!(
            SafetensorsFile::open(&truncated),
            Err(ModelError::Unreadable { .. })
        ));
        let mut bytes = tiny_file();
        bytes.push(0);
        let trailing = write(dir.path(), "long.safetensors", &bytes);
        assert!(matches!(
            SafetensorsFile::open(&trailing),
            Err(ModelError::Unreadable { .. })
        ));
        let huge_header = write(dir.path(), "huge.safetensors", &u64::MAX.to_le_bytes());
        assert!(matches!(
            SafetensorsFile::open(&huge_header),
            Err(ModelError::Unreadable { .. })
        ));
    }
}
