//! Reader for PyTorch checkpoints in the zip serialization format (`torch.save`, PyTorch ≥ 1.6).
//!
//! Layout of such a file (facts from `torch/serialization.py` and `caffe2/serialize/`):
//! a zip archive with *stored* (uncompressed) entries under one prefix directory:
//! `<prefix>/data.pkl` (pickle protocol 2 of the saved object), `<prefix>/data/<key>` (raw bytes
//! of each storage, little-endian unless `<prefix>/byteorder` says `big`), plus version files.
//! A tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
//! requires_grad, hooks)`, where `storage` is a persistent id
//! `('storage', torch.FloatStorage, key, location, numel)`.
//!
//! The pickle opcodes are decoded by [`candle_core::pickle::Stack`]; everything after that is done
//! here rather than with `candle_core::pickle::PthTensors`, which (as of 0.11) refuses strided and
//! stride-0 (`expand`ed) tensors, silently skips tensors it cannot decode, needs the caller to know
//! the key of a nested state dict, and reports the legacy format as a bare zip error.
//!
//! Nothing is executed while reading: the pickle is only interpreted as data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack};

use super::WeightsError;

/// Keys under which training scripts commonly nest the state dict, tried in this order when the
/// top-level dict holds no tensors.
pub const NESTED_STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model_state_dict", "model", "net"];

/// Largest storage this reader loads into memory (ResNet-18's largest is 9.4 MB).
const MAX_STORAGE_BYTES: u64 = 1 << 30;

/// First bytes of a zip local file header.
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Element type of a PyTorch storage, from its pickled class name (e.g. `FloatStorage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDType {
    /// `torch.float32`
    F32,
    /// `torch.float64`
    F64,
    /// `torch.float16`
    F16,
    /// `torch.bfloat16`
    BF16,
    /// `torch.int64` (e.g. `num_batches_tracked`)
    I64,
    /// `torch.int32`
    I32,
    /// `torch.int16`
    I16,
    /// `torch.int8`
    I8,
    /// `torch.uint8`
    U8,
    /// `torch.bool`
    Bool,
}

impl StorageDType {
    fn from_storage_class(class_name: &str) -> Option<Self> {
        Some(match class_name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// Short name as used in safetensors and error messages (`f32`, `i64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::I64 => "i64",
            Self::I32 => "i32",
            Self::I16 => "i16",
            Self::I8 => "i8",
            Self::U8 => "u8",
            Self::Bool => "bool",
        }
    }
}

/// Where one tensor of the checkpoint lives: its storage and the view into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Key in the state dict, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Element type of the storage.
    pub dtype: StorageDType,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Stride of each dimension, in elements (0 for `expand`ed dimensions).
    pub stride: Vec<usize>,
    /// Offset of the first element in the storage, in elements.
    pub offset: usize,
    /// Storage key: the data lives in `<prefix>/data/<key>`.
    pub storage_key: String,
    /// Number of elements of the storage, as recorded in the pickle.
    pub storage_numel: usize,
}

impl TensorEntry {
    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An opened checkpoint: the tensor directory of its state dict and the archive to read data from.
pub struct Checkpoint {
    path: PathBuf,
    archive: zip::ZipArchive<BufReader<File>>,
    prefix: String,
    tensors: Vec<TensorEntry>,
    ignored: Vec<String>,
    state_dict_key: Option<String>,
    storages: HashMap<String, Vec<u8>>,
}

impl Checkpoint {
    /// Opens `path`, parses its pickle and locates the state dict: the top-level dict when it holds
    /// tensors, otherwise the dict under `key` (or, without `key`, the first of
    /// [`NESTED_STATE_DICT_KEYS`] that holds tensors). Tensor data is not read yet.
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self, WeightsError> {
        check_magic(path)?;
        let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| not_checkpoint(path, format!("invalid zip archive: {e}")))?;
        let prefix = find_prefix(&archive, path)?;
        check_byte_order(&mut archive, &prefix, path)?;
        let root = read_pickle(&mut archive, &prefix, path)?;
        let (dict, state_dict_key) = select_state_dict(root, key, path)?;
        let (tensors, ignored) = parse_state_dict(dict, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            archive,
            prefix,
            tensors,
            ignored,
            state_dict_key,
            storages: HashMap::new(),
        })
    }

    /// Tensors of the state dict, in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// Non-tensor entries of the state dict (e.g. `_metadata`), which are skipped.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// Key the state dict was found under, `None` when it is the top-level object.
    pub fn state_dict_key(&self) -> Option<&str> {
        self.state_dict_key.as_deref()
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads a whole storage (cached: storages can be shared by several tensors).
    fn storage(&mut self, entry: &TensorEntry) -> Result<&[u8], WeightsError> {
        if !self.storages.contains_key(&entry.storage_key) {
            let data = self.read_storage(entry)?;
            self.storages.insert(entry.storage_key.clone(), data);
        }
        Ok(self.storages[&entry.storage_key].as_slice())
    }

    fn read_storage(&mut self, entry: &TensorEntry) -> Result<Vec<u8>, WeightsError> {
        let elem = entry.dtype.size_in_bytes() as u64;
        let bytes = (entry.storage_numel as u64).saturating_mul(elem);
        let name = format!("{}/data/{}", self.prefix, entry.storage_key);
        if bytes > MAX_STORAGE_BYTES {
            return Err(not_checkpoint(
                &self.path,
                format!("storage {name} is larger than {MAX_STORAGE_BYTES} bytes"),
            ));
        }
        let file = self
            .archive
            .by_name(&name)
            .map_err(|e| not_checkpoint(&self.path, format!("storage {name}: {e}")))?;
        if file.size() < bytes {
            return Err(not_checkpoint(
                &self.path,
                format!(
                    "storage {name} holds {} bytes, its {} elements need {bytes}",
                    file.size(),
                    entry.storage_numel
                ),
            ));
        }
        let mut data = Vec::with_capacity(bytes as usize);
        file.take(bytes)
            .read_to_end(&mut data)
            .map_err(|e| WeightsError::io(&self.path, e))?;
        Ok(data)
    }

    /// Returns the tensor's elements as contiguous row-major bytes in its storage dtype
    /// (little-endian), resolving strides, offsets and stride-0 (`expand`ed) dimensions.
    pub fn read_tensor(&mut self, entry: &TensorEntry) -> Result<Vec<u8>, WeightsError> {
        let path = self.path.clone();
        let storage = self.storage(entry)?;
        gather(storage, entry).ok_or_else(|| layout_error(&path, entry))
    }
}

/// Number of storage elements a view touches (highest index + 1), `None` on overflow.
fn needed_elements(entry: &TensorEntry) -> Option<usize> {
    if entry.shape.contains(&0) {
        return Some(entry.offset);
    }
    let mut last = entry.offset;
    for (&dim, &stride) in entry.shape.iter().zip(&entry.stride) {
        last = last.checked_add((dim - 1).checked_mul(stride)?)?;
    }
    last.checked_add(1)
}

/// Copies the elements of a strided view out of `storage` (which starts at element 0) in
/// row-major order. `None` when the view reaches outside `storage`.
pub fn gather(storage: &[u8], entry: &TensorEntry) -> Option<Vec<u8>> {
    let elem = entry.dtype.size_in_bytes();
    let numel = entry.numel();
    if needed_elements(entry)?.checked_mul(elem)? > storage.len() {
        return None;
    }
    let mut out = Vec::with_capacity(numel * elem);
    if numel == 0 {
        return Some(out);
    }
    let (shape, stride) = coalesce(&entry.shape, &entry.stride);
    let (&run_len, outer_shape) = shape.split_last()?;
    let (&run_stride, outer_stride) = stride.split_last()?;
    let mut index = vec![0usize; outer_shape.len()];
    for _ in 0..numel / run_len {
        let base = entry.offset
            + index
                .iter()
                .zip(outer_stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        copy_run(&mut out, storage, elem, base, run_len, run_stride);
        advance(&mut index, outer_shape);
    }
    Some(out)
}

/// Appends `len` elements starting at element `base`, `stride` elements apart.
fn copy_run(
    out: &mut Vec<u8>,
    storage: &[u8],
    elem: usize,
    base: usize,
    len: usize,
    stride: usize,
) {
    match stride {
        1 => out.extend_from_slice(&storage[base * elem..(base + len) * elem]),
        0 => {
            let value = &storage[base * elem..(base + 1) * elem];
            for _ in 0..len {
                out.extend_from_slice(value);
            }
        }
        _ => {
            for i in 0..len {
                let pos = base + i * stride;
                out.extend_from_slice(&storage[pos * elem..(pos + 1) * elem]);
            }
        }
    }
}

/// Merges adjacent dimensions that can be walked as one (`stride[i] == shape[i+1] ·
/// stride[i+1]`: contiguous runs and runs of `expand`ed zeros) and drops size-1 dimensions.
/// Always returns at least one dimension.
fn coalesce(shape: &[usize], stride: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
    for (&n, &s) in shape.iter().zip(stride) {
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            Some((m, t)) if Some(*t) == n.checked_mul(s) => {
                *m *= n;
                *t = s;
            }
            _ => dims.push((n, s)),
        }
    }
    if dims.is_empty() {
        dims.push((1, 1));
    }
    dims.into_iter().unzip()
}

/// Row-major odometer step over `shape`.
fn advance(index: &mut [usize], shape: &[usize]) {
    for d in (0..index.len()).rev() {
        index[d] += 1;
        if index[d] < shape[d] {
            return;
        }
        index[d] = 0;
    }
}

fn layout_error(path: &Path, entry: &TensorEntry) -> WeightsError {
    not_checkpoint(
        path,
        format!(
            "tensor {} (shape {:?}, stride {:?}, offset {}) reaches outside its storage of {} elements",
            entry.name, entry.shape, entry.stride, entry.offset, entry.storage_numel
        ),
    )
}

fn not_checkpoint(path: &Path, reason: String) -> WeightsError {
    WeightsError::NotACheckpoint {
        path: path.display().to_string(),
        reason,
    }
}

/// Tells the zip format from the legacy pickle format (and from anything else) by the first bytes.
fn check_magic(path: &Path) -> Result<(), WeightsError> {
    let mut head = [0u8; 4];
    let mut file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let read = file
        .read(&mut head)
        .map_err(|e| WeightsError::io(path, e))?;
    if read == 4 && head == ZIP_MAGIC {
        return Ok(());
    }
    if read >= 1 && head[0] == 0x80 {
        // Legacy `torch.save(..., _use_new_zipfile_serialization=False)`: a sequence of pickles
        // starting with PROTO 2 and a magic number.
        return Err(WeightsError::LegacyFormat {
            path: path.display().to_string(),
        });
    }
    Err(not_checkpoint(
        path,
        "not a zip archive (a PyTorch checkpoint saved by torch.save starts with `PK`)".into(),
    ))
}

/// The directory all entries live under (`archive` in recent PyTorch, the file stem in older).
fn find_prefix(
    archive: &zip::ZipArchive<BufReader<File>>,
    path: &Path,
) -> Result<String, WeightsError> {
    archive
        .file_names()
        .filter_map(|name| name.ok())
        .filter_map(|name| name.strip_suffix("/data.pkl").map(str::to_owned))
        .filter(|prefix| !prefix.contains('/'))
        .min_by_key(String::len)
        .ok_or_else(|| not_checkpoint(path, "zip archive has no <dir>/data.pkl entry".into()))
}

fn check_byte_order(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    prefix: &str,
    path: &Path,
) -> Result<(), WeightsError> {
    let Ok(mut file) = archive.by_name(&format!("{prefix}/byteorder")) else {
        return Ok(()); // written since PyTorch 1.13; older files are little-endian
    };
    let mut order = String::new();
    file.by_ref()
        .take(16)
        .read_to_string(&mut order)
        .map_err(|e| WeightsError::io(path, e))?;
    match order.trim() {
        "little" => Ok(()),
        other => Err(WeightsError::Unsupported {
            path: path.display().to_string(),
            reason: format!("byte order `{other}` (only little-endian checkpoints are supported)"),
        }),
    }
}

fn read_pickle(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    prefix: &str,
    path: &Path,
) -> Result<Object, WeightsError> {
    let name = format!("{prefix}/data.pkl");
    let file = archive
        .by_name(&name)
        .map_err(|e| not_checkpoint(path, format!("{name}: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut stack = Stack::empty();
    let pickle_error = |e: candle_core::Error| WeightsError::Pickle {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    stack.read_loop(&mut reader).map_err(pickle_error)?;
    stack.finalize().map_err(pickle_error)
}

type Entries = Vec<(Object, Object)>;

/// Picks the dict holding the tensors; returns it and the key it was nested under.
fn select_state_dict(
    root: Object,
    key: Option<&str>,
    path: &Path,
) -> Result<(Entries, Option<String>), WeightsError> {
    let Object::Dict(entries) = root else {
        return Err(no_state_dict(
            path,
            format!(
                "the checkpoint holds a {}, not a dict; save `model.state_dict()`, not the model",
                object_kind(&root)
            ),
        ));
    };
    if let Some(key) = key {
        return take_nested(entries, key)
            .map(|dict| (dict, Some(key.to_owned())))
            .ok_or_else(|| no_state_dict(path, format!("no dict under key `{key}`")));
    }
    if entries.iter().any(|(_, v)| is_tensor(v)) {
        return Ok((entries, None));
    }
    let keys: Vec<String> = entries.iter().filter_map(|(k, _)| key_name(k)).collect();
    for candidate in NESTED_STATE_DICT_KEYS {
        let holds_tensors = entries.iter().any(|(k, v)| {
            key_name(k).as_deref() == Some(candidate)
                && matches!(v, Object::Dict(d) if d.iter().any(|(_, t)| is_tensor(t)))
        });
        if holds_tensors {
            let dict = take_nested(entries, candidate).unwrap_or_default();
            return Ok((dict, Some(candidate.to_owned())));
        }
    }
    Err(no_state_dict(
        path,
        format!(
            "no tensors at the top level nor under any of {NESTED_STATE_DICT_KEYS:?} \
             (top-level keys: {keys:?}); pass --key NAME"
        ),
    ))
}

fn take_nested(entries: Entries, key: &str) -> Option<Entries> {
    entries
        .into_iter()
        .find(|(k, _)| key_name(k).as_deref() == Some(key))
        .and_then(|(_, v)| match v {
            Object::Dict(d) => Some(d),
            _ => None,
        })
}

fn no_state_dict(path: &Path, reason: String) -> WeightsError {
    WeightsError::NoStateDict {
        path: path.display().to_string(),
        reason,
    }
}

fn key_name(key: &Object) -> Option<String> {
    match key {
        Object::Unicode(s) => Some(s.clone()),
        _ => None,
    }
}

fn object_kind(obj: &Object) -> String {
    match obj {
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => match &**callable {
            Object::Class {
                module_name,
                class_name,
            } => format!("{module_name}.{class_name} object"),
            other => object_kind(other),
        },
        Object::List(_) => "list".into(),
        Object::Tuple(_) => "tuple".into(),
        _ => "non-dict value".into(),
    }
}

fn is_class(obj: &Object, module: &str, class: &str) -> bool {
    matches!(obj, Object::Class { module_name, class_name } if module_name == module && class_name == class)
}

/// True for the pickled forms of a tensor or parameter.
fn is_tensor(obj: &Object) -> bool {
    match obj {
        Object::Reduce { callable, .. } => {
            is_class(callable, "torch._utils", "_rebuild_tensor_v2")
                || is_class(callable, "torch._utils", "_rebuild_parameter")
                || is_class(callable, "torch._utils", "_rebuild_parameter_with_state")
                || is_class(callable, "torch._tensor", "_rebuild_from_type_v2")
        }
        _ => false,
    }
}

/// Splits the state dict into tensor entries and the names of skipped non-tensor values.
fn parse_state_dict(
    entries: Entries,
    path: &Path,
) -> Result<(Vec<TensorEntry>, Vec<String>), WeightsError> {
    let mut tensors = Vec::new();
    let mut ignored = Vec::new();
    let mut seen = HashMap::new();
    for (key, value) in entries {
        let Some(name) = key_name(&key) else {
            continue;
        };
        if !is_tensor(&value) {
            ignored.push(name);
            continue;
        }
        let entry = parse_tensor(&name, value).map_err(|reason| {
            not_checkpoint(path, format!("cannot decode tensor {name}: {reason}"))
        })?;
        // A later SETITEM of the same key wins, as in Python.
        if let Some(&i) = seen.get(&name) {
            tensors[i] = entry;
        } else {
            seen.insert(name, tensors.len());
            tensors.push(entry);
        }
    }
    Ok((tensors, ignored))
}

/// Decodes `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, unwrapping parameters.
fn parse_tensor(name: &str, value: Object) -> Result<TensorEntry, String> {
    let Object::Reduce { callable, args } = value else {
        return Err("not a tensor".into());
    };
    let mut args = tuple(*args)?;
    if is_class(&callable, "torch._utils", "_rebuild_parameter")
        || is_class(&callable, "torch._utils", "_rebuild_parameter_with_state")
    {
        let data = take(&mut args, 0)?;
        return parse_tensor(name, data);
    }
    if is_class(&callable, "torch._tensor", "_rebuild_from_type_v2") {
        // (func, type, args, state): func must be _rebuild_tensor_v2 applied to args.
        let func = take(&mut args, 0)?;
        let inner_args = take(&mut args, 1)?;
        let rebuilt = Object::Reduce {
            callable: Box::new(func),
            args: Box::new(inner_args),
        };
        return parse_tensor(name, rebuilt);
    }
    if !is_class(&callable, "torch._utils", "_rebuild_tensor_v2") {
        return Err(format!("unsupported rebuild function {callable:?}"));
    }
    rebuild_tensor_v2(name, args)
}

fn rebuild_tensor_v2(name: &str, mut args: Vec<Object>) -> Result<TensorEntry, String> {
    if args.len() < 4 {
        return Err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
    }
    let stride = usizes(take(&mut args, 3)?)?;
    let shape = usizes(take(&mut args, 2)?)?;
    let offset = non_negative(take(&mut args, 1)?)?;
    let storage = match take(&mut args, 0)? {
        Object::PersistentLoad(id) => tuple(*id)?,
        other => return Err(format!("storage is not a persistent id: {other:?}")),
    };
    if shape.len() != stride.len() {
        return Err(format!(
            "shape {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    let (dtype, storage_key, storage_numel) = storage_id(storage)?;
    Ok(TensorEntry {
        name: name.to_owned(),
        dtype,
        shape,
        stride,
        offset,
        storage_key,
        storage_numel,
    })
}

/// Decodes `('storage', torch.XStorage, key, location, numel)`.
fn storage_id(mut id: Vec<Object>) -> Result<(StorageDType, String, usize), String> {
    if id.len() < 5 || id[0] != Object::Unicode("storage".into()) {
        return Err(format!("unexpected persistent id {id:?}"));
    }
    let numel = non_negative(take(&mut id, 4)?)?;
    let key = match take(&mut id, 2)? {
        Object::Unicode(k) => k,
        other => return Err(format!("storage key {other:?}")),
    };
    let dtype = match take(&mut id, 1)? {
        Object::Class { class_name, .. } => StorageDType::from_storage_class(&class_name)
            .ok_or_else(|| format!("unsupported storage type {class_name}"))?,
        other => return Err(format!("storage type {other:?}")),
    };
    Ok((dtype, key, numel))
}

fn take(items: &mut [Object], i: usize) -> Result<Object, String> {
    items
        .get_mut(i)
        .map(|slot| std::mem::replace(slot, Object::None))
        .ok_or_else(|| format!("missing argument {i}"))
}

fn tuple(obj: Object) -> Result<Vec<Object>, String> {
    match obj {
        Object::Tuple(items) => Ok(items),
        other => Err(format!("expected a tuple, got {other:?}")),
    }
}

fn non_negative(obj: Object) -> Result<usize, String> {
    match obj {
        Object::Int(v) if v >= 0 => Ok(v as usize),
        Object::Long(v) if v >= 0 => usize::try_from(v).map_err(|e| e.to_string()),
        other => Err(format!("expected a non-negative integer, got {other:?}")),
    }
}

fn usizes(obj: Object) -> Result<Vec<usize>, String> {
    tuple(obj)?.into_iter().map(non_negative).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shape: &[usize], stride: &[usize], offset: usize) -> TensorEntry {
        TensorEntry {
            name: "t".into(),
            dtype: StorageDType::U8,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
            offset,
            storage_key: "0".into(),
            storage_numel: 16,
        }
    }

    #[test]
    fn gather_expands_stride_zero_dimensions() {
        let storage = [7u8, 9];
        let out = gather(&storage, &entry(&[2, 3], &[0, 0], 1));
        assert_eq!(out, Some(vec![9; 6]));
    }

    #[test]
    fn gather_reads_transposed_view_in_row_major_order() {
        // storage holds a 2×3 matrix [[0,1,2],[3,4,5]]; the view is its 3×2 transpose.
        let storage = [0u8, 1, 2, 3, 4, 5];
        let out = gather(&storage, &entry(&[3, 2], &[1, 3], 0));
        assert_eq!(out, Some(vec![0, 3, 1, 4, 2, 5]));
    }

    #[test]
    fn gather_honours_offset_of_contiguous_view() {
        let storage = [0u8, 1, 2, 3, 4, 5];
        let out = gather(&storage, &entry(&[2, 2], &[2, 1], 2));
        assert_eq!(out, Some(vec![2, 3, 4, 5]));
    }

    #[test]
    fn gather_refuses_views_reaching_outside_storage() {
        let storage = [0u8, 1, 2];
        assert_eq!(gather(&storage, &entry(&[2, 2], &[2, 1], 0)), None);
        assert_eq!(gather(&storage, &entry(&[1], &[1], usize::MAX)), None);
    }

    #[test]
    fn gather_mixes_expanded_and_strided_dimensions() {
        // 2×3 view of storage [0,1,2,3,4,5,6]: rows start at 1 and 4 (stride 3), each row
        // repeats one element (stride 0).
        let storage = [0u8, 1, 2, 3, 4, 5, 6];
        let out = gather(&storage, &entry(&[2, 3], &[3, 0], 1));
        assert_eq!(out, Some(vec![1, 1, 1, 4, 4, 4]));
    }

    #[test]
    fn gather_handles_scalars_and_empty_tensors() {
        let storage = [5u8, 6];
        assert_eq!(gather(&storage, &entry(&[], &[], 1)), Some(vec![6]));
        assert_eq!(gather(&storage, &entry(&[0, 4], &[4, 1], 0)), Some(vec![]));
    }

    #[test]
    fn coalesce_merges_contiguous_and_expanded_runs() {
        assert_eq!(coalesce(&[2, 3, 4], &[12, 4, 1]), (vec![24], vec![1]));
        assert_eq!(
            coalesce(&[64, 3, 7, 7], &[0, 0, 0, 0]),
            (vec![9408], vec![0])
        );
        assert_eq!(coalesce(&[3, 2], &[1, 3]), (vec![3, 2], vec![1, 3]));
        assert_eq!(coalesce(&[4, 1, 3], &[3, 99, 1]), (vec![12], vec![1]));
        assert_eq!(coalesce(&[], &[]), (vec![1], vec![1]));
    }
}
