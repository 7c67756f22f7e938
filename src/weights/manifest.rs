//! `model/MANIFEST`: where the installed weights came from and their checksums.
//!
//! Format (version 1), documented in `model/README.md`: UTF-8 text, one `key = value` per line,
//! `#` starts a comment line, blank lines ignored, keys unique, unknown keys ignored by readers.
//!
//! ```text
//! # resnet18-fc model manifest; format described in model/README.md
//! format = 1
//! file = resnet18.safetensors
//! sha256 = <64 hex digits of the safetensors file>
//! size = <bytes of the safetensors file>
//! dtype = f32
//! tensors = 102
//! source_url = https://download.pytorch.org/models/resnet18-f37072fd.pth
//! source_sha256 = f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec
//! source_size = 46830571
//! converter = resnet18-fc 0.1.0
//! ```

use std::collections::HashMap;

/// Version of the manifest format this code writes.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of a MANIFEST file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// File name of the weights, relative to the manifest's directory.
    pub file: String,
    /// Lower-case hex sha256 of the weights file.
    pub sha256: String,
    /// Size of the weights file in bytes.
    pub size: u64,
    /// Float type of the stored tensors (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// Number of tensors in the weights file.
    pub tensors: usize,
    /// Where the source checkpoint was downloaded from.
    pub source_url: String,
    /// Lower-case hex sha256 of the source checkpoint.
    pub source_sha256: String,
    /// Size of the source checkpoint in bytes.
    pub source_size: u64,
    /// Program and version that converted it, e.g. `resnet18-fc 0.1.0`.
    pub converter: String,
}

/// Why a MANIFEST could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A non-comment line without `=`.
    #[error("MANIFEST line {line}: expected `key = value`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A key appears twice.
    #[error("MANIFEST line {line}: duplicate key `{key}`")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// The key.
        key: String,
    },
    /// A required key is absent.
    #[error("MANIFEST has no `{0}`")]
    Missing(&'static str),
    /// A value does not parse (number, or format version this code does not know).
    #[error("MANIFEST `{key}` has invalid value `{value}`")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
    },
}

/// The converter string written by this build.
pub fn converter_version() -> String {
    format!("resnet18-fc {}", env!("CARGO_PKG_VERSION"))
}

impl Manifest {
    /// Renders the manifest in the documented text format (keys in a fixed order).
    pub fn render(&self) -> String {
        let fields: [(&str, String); 10] = [
            ("format", FORMAT_VERSION.to_string()),
            ("file", self.file.clone()),
            ("sha256", self.sha256.clone()),
            ("size", self.size.to_string()),
            ("dtype", self.dtype.clone()),
            ("tensors", self.tensors.to_string()),
            ("source_url", self.source_url.clone()),
            ("source_sha256", self.source_sha256.clone()),
            ("source_size", self.source_size.to_string()),
            ("converter", self.converter.clone()),
        ];
        let mut text =
            String::from("# resnet18-fc model manifest; format described in model/README.md\n");
        for (key, value) in fields {
            text += &format!("{key} = {value}\n");
        }
        text
    }

    /// Parses the documented text format.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let map = key_values(text)?;
        let get = |key: &'static str| -> Result<String, ManifestError> {
            map.get(key).cloned().ok_or(ManifestError::Missing(key))
        };
        let number = |key: &'static str| -> Result<u64, ManifestError> {
            let value = get(key)?;
            value
                .parse()
                .map_err(|_| ManifestError::Invalid { key, value })
        };
        if number("format")? != u64::from(FORMAT_VERSION) {
            return Err(ManifestError::Invalid {
                key: "format",
                value: get("format")?,
            });
        }
        Ok(Self {
            file: get("file")?,
            sha256: get("sha256")?,
            size: number("size")?,
            dtype: get("dtype")?,
            tensors: number("tensors")? as usize,
            source_url: get("source_url")?,
            source_sha256: get("source_sha256")?,
            source_size: number("source_size")?,
            converter: get("converter")?,
        })
    }
}

fn key_values(text: &str) -> Result<HashMap<String, String>, ManifestError> {
    let mut map = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or(ManifestError::Syntax { line: i + 1 })?;
        let key = key.trim().to_owned();
        if map.insert(key.clone(), value.trim().to_owned()).is_some() {
            return Err(ManifestError::Duplicate { line: i + 1, key });
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            file: "resnet18.safetensors".into(),
            sha256: "ab".repeat(32),
            size: 46_807_446,
            dtype: "f32".into(),
            tensors: 102,
            source_url: "http://127.0.0.1:1/x.pth?a=b".into(),
            source_sha256: "cd".repeat(32),
            source_size: 46_830_571,
            converter: "resnet18-fc 0.1.0".into(),
        }
    }

    #[test]
    fn rendered_manifest_lists_documented_keys_in_order() {
        let text = sample().render();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(" = ").next())
            .collect();
        assert_eq!(
            keys,
            [
                "format",
                "file",
                "sha256",
                "size",
                "dtype",
                "tensors",
                "source_url",
                "source_sha256",
                "source_size",
                "converter"
            ]
        );
        assert!(text.contains("\nsource_size = 46830571\n"));
        assert!(text.contains("\nformat = 1\n"));
    }

    #[test]
    fn parse_reads_back_rendered_manifest_with_comments_and_unknown_keys() {
        let text = format!("{}\n# note\nextra = kept out\n", sample().render());
        assert_eq!(Manifest::parse(&text), Ok(sample()));
    }

    #[test]
    fn parse_rejects_duplicates_missing_keys_and_other_formats() {
        let text = sample().render();
        let dup = format!("{text}size = 1\n");
        assert!(matches!(
            Manifest::parse(&dup),
            Err(ManifestError::Duplicate { key, .. }) if key == "size"
        ));
        let missing = text.replace("dtype = f32\n", "");
        assert_eq!(
            Manifest::parse(&missing),
            Err(ManifestError::Missing("dtype"))
        );
        let v2 = text.replace("format = 1", "format = 2");
        assert!(matches!(
            Manifest::parse(&v2),
            Err(ManifestError::Invalid { key: "format", .. })
        ));
        assert_eq!(
            Manifest::parse("no equals sign"),
            Err(ManifestError::Syntax { line: 1 })
        );
    }
}
