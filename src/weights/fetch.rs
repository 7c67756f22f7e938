//! Download of the TorchVision checkpoint with sha256 verification, then conversion and atomic
//! installation of `resnet18.safetensors` + `MANIFEST`.
//!
//! TLS: reqwest's rustls backend with the `ring` provider and `rustls-platform-verifier`, i.e. the
//! operating system's trust store (on Linux the CA bundle of the `ca-certificates` package).
//! Chosen over baked-in webpki roots because it is reqwest 0.13's built-in verifier (no extra
//! dependency), follows the system's CA updates and honours corporate roots; the download is in
//! any case checked against a pinned sha256, so the trust store only guards availability, not
//! integrity.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::WeightsError;
use super::atomic::TempFile;
use super::convert::{ConvertOptions, ConvertReport, convert_to_temp};
use super::manifest::{Manifest, converter_version};

/// TorchVision's ResNet-18 `IMAGENET1K_V1` checkpoint.
pub const DEFAULT_URL: &str = "https://download.pytorch.org/models/resnet18-f37072fd.pth";
/// sha256 of [`DEFAULT_URL`] (its first 8 hex digits are in the file name, TorchVision's scheme).
pub const DEFAULT_SHA256: &str = "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec";
/// Size of [`DEFAULT_URL`] in bytes.
pub const DEFAULT_SIZE: u64 = 46_830_571;
/// Environment variable overriding the download URL.
pub const URL_ENV: &str = "RESNET18_FC_MODEL_URL";
/// Environment variable overriding the expected sha256.
pub const SHA256_ENV: &str = "RESNET18_FC_MODEL_SHA256";
/// File name of the manifest written beside the weights.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Largest download accepted when the expected size is not known.
pub const MAX_DOWNLOAD_BYTES: u64 = 512 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to download from, what to expect, and where to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Checkpoint URL (http or https).
    pub url: String,
    /// Expected sha256 of the download, hex (case-insensitive).
    pub sha256: String,
    /// Where the safetensors file goes; `MANIFEST` is written beside it.
    pub model_path: PathBuf,
    /// Report progress: a bar on stderr when it is a terminal, else log lines (`tracing`).
    pub progress: bool,
    /// How to convert the checkpoint.
    pub convert: ConvertOptions,
}

impl Default for FetchOptions {
    /// TorchVision's checkpoint into `model/resnet18.safetensors`, with a progress bar.
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            sha256: DEFAULT_SHA256.into(),
            model_path: PathBuf::from(crate::config::DEFAULT_MODEL),
            progress: true,
            convert: ConvertOptions::default(),
        }
    }
}

impl FetchOptions {
    /// Defaults, with URL and sha256 taken from [`URL_ENV`] / [`SHA256_ENV`] when set.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        let defaults = Self::default();
        Self {
            url: var(URL_ENV).unwrap_or(defaults.url),
            sha256: var(SHA256_ENV).unwrap_or(defaults.sha256),
            ..Self::default()
        }
    }

    /// Installs into `dir/resnet18.safetensors` (the file name of
    /// [`crate::config::DEFAULT_MODEL`]) and `dir/MANIFEST`.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        let file = Path::new(crate::config::DEFAULT_MODEL)
            .file_name()
            .unwrap_or_default();
        self.model_path = dir.join(file);
        self
    }

    /// Path of the manifest: `MANIFEST` beside the model.
    pub fn manifest_path(&self) -> PathBuf {
        self.model_path.with_file_name(MANIFEST_FILE)
    }

    /// Exact size of the download when the expected hash is TorchVision's (else unknown).
    pub fn expected_size(&self) -> Option<u64> {
        self.sha256
            .trim()
            .eq_ignore_ascii_case(DEFAULT_SHA256)
            .then_some(DEFAULT_SIZE)
    }
}

/// What a fetch installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Path of the installed safetensors file.
    pub model: PathBuf,
    /// Path of the installed manifest.
    pub manifest_path: PathBuf,
    /// Contents of the manifest.
    pub manifest: Manifest,
    /// What the conversion did.
    pub convert: ConvertReport,
}

/// What [`ensure_model`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The weights file already existed; nothing was done.
    Present,
    /// The weights were missing and have been downloaded and installed.
    Fetched(Box<FetchReport>),
}

/// Downloads, verifies, converts and installs the checkpoint described by `opts`.
///
/// The download streams into a temporary file in the model directory while its sha256 is
/// computed; on a transport error, an HTTP error status, an oversized body or a hash mismatch the
/// temporary file is deleted (and the model directory too, if this call created it and it is
/// empty), so nothing is left behind. On success the safetensors file and `MANIFEST` are renamed
/// into place. Conversion runs on tokio's blocking pool. Cost: one download (46.8 MB for the
/// default URL), ~47 MB of memory during conversion.
pub async fn fetch_model_async(opts: &FetchOptions) -> Result<FetchReport, WeightsError> {
    let expected = parse_sha256(&opts.sha256)?;
    let dir = ModelDir::prepare(&opts.model_path)?;
    let download = TempFile::beside(&opts.model_path.with_file_name("resnet18-source.pth"));
    let (actual, size) = download_to(opts, download.path()).await?;
    if actual != expected {
        return Err(WeightsError::HashMismatch {
            url: redact_url(&opts.url),
            expected,
            actual,
            size,
        });
    }
    let source = Source {
        url: redact_url(&opts.url),
        sha256: actual,
        size,
    };
    let model = opts.model_path.clone();
    let convert = opts.convert.clone();
    let report = tokio::task::spawn_blocking(move || install(download, &model, &convert, source))
        .await
        .map_err(|e| WeightsError::Task(e.to_string()))??;
    dir.keep();
    Ok(report)
}

/// Blocking form of [`fetch_model_async`] for the CLI and for `spawn_blocking`: runs it on a
/// private current-thread tokio runtime. Must not be called from inside an async task.
pub fn fetch_model(opts: &FetchOptions) -> Result<FetchReport, WeightsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WeightsError::io(Path::new("<tokio runtime>"), e))?;
    runtime.block_on(fetch_model_async(opts))
}

/// Makes sure the weights file `path` exists: present → [`EnsureOutcome::Present`]; missing and
/// `offline` → [`EnsureError::Offline`]; missing and online → [`fetch_model`] into `path`
/// (blocking; from async code call it in `spawn_blocking`), announced in the log first, and a
/// failure becomes [`EnsureError::FetchFailed`]. Both errors say what to do next.
pub fn ensure_model(
    path: &Path,
    opts: &FetchOptions,
    offline: bool,
) -> Result<EnsureOutcome, EnsureError> {
    if path.is_file() {
        return Ok(EnsureOutcome::Present);
    }
    let advice = Advice::new(path, opts);
    if offline {
        return Err(EnsureError::Offline { advice });
    }
    let opts = FetchOptions {
        model_path: path.to_path_buf(),
        ..opts.clone()
    };
    tracing::info!(
        model = %path.display(),
        url = %redact_url(&opts.url),
        "weights missing: downloading them once (sha256-checked); pass --offline to never download"
    );
    match fetch_model(&opts) {
        Ok(report) => {
            tracing::info!(
                model = %report.model.display(),
                sha256 = %report.manifest.source_sha256,
                "weights downloaded, verified and installed"
            );
            Ok(EnsureOutcome::Fetched(Box::new(report)))
        }
        Err(error) => Err(EnsureError::FetchFailed {
            error: Box::new(error),
            advice,
        }),
    }
}

/// Why [`ensure_model`] could not provide the weights; the message ends with what to do next
/// ([`EnsureError::summary`] and [`EnsureError::remedy`] give the two parts separately).
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The file is missing and downloading is not allowed (`--offline`, and always inside FC).
    #[error("{}. {}", self.summary(), self.remedy())]
    Offline {
        /// The next steps, naming the file.
        advice: Advice,
    },
    /// The file is missing and the download (or its verification, or conversion) failed.
    #[error("{}. {}", self.summary(), self.remedy())]
    FetchFailed {
        /// What went wrong.
        #[source]
        error: Box<WeightsError>,
        /// The next steps, naming the file.
        advice: Advice,
    },
}

impl EnsureError {
    /// What went wrong, in one sentence (no trailing period).
    pub fn summary(&self) -> String {
        match self {
            Self::Offline { advice } => format!(
                "the weights file {} is missing and downloads are disabled (--offline / \
                 RESNET18_FC_OFFLINE)",
                advice.path
            ),
            Self::FetchFailed { error, advice } => format!(
                "the weights file {} is missing and could not be downloaded: {error}",
                advice.path
            ),
        }
    }

    /// The next steps.
    pub fn remedy(&self) -> String {
        match self {
            Self::Offline { advice } => format!(
                "{advice} Or start without --offline to download them automatically. Inside \
                 Function Compute the package lacks the weights: rebuild it with \
                 `scripts/package.sh` and deploy again."
            ),
            Self::FetchFailed { advice, .. } => format!(
                "Check the network (HTTPS_PROXY is honoured) and retry: `resnet18-fc fetch-model \
                 --model-dir {dir}` shows a progress bar, and the server retries on the next \
                 request or `POST /initialize`. {advice} To never download, pass --offline.",
                dir = advice.dir
            ),
        }
    }
}

/// The ways to get the weights without this process downloading them, rendered as sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// The missing weights file.
    pub path: String,
    /// Its directory (`fetch-model --model-dir`).
    pub dir: String,
    /// Checkpoint URL (redacted).
    pub url: String,
    /// Its expected sha256.
    pub sha256: String,
}

impl Advice {
    fn new(path: &Path, opts: &FetchOptions) -> Self {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
            _ => ".".to_owned(),
        };
        Self {
            path: path.display().to_string(),
            dir,
            url: redact_url(&opts.url),
            sha256: opts.sha256.trim().to_ascii_lowercase(),
        }
    }
}

impl std::fmt::Display for Advice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            path,
            dir,
            url,
            sha256,
        } = self;
        write!(
            f,
            "To get them: run `resnet18-fc fetch-model --model-dir {dir}` (from a checkout: \
             `cargo run --release -- fetch-model`) where the network is reachable; or download \
             {url} (sha256 {sha256}) on another machine and run `resnet18-fc convert <file>.pth \
             {path}`; or pass --model <file> (RESNET18_FC_MODEL) to use weights stored elsewhere; \
             or, to try the server without the real weights, write synthetic ones (meaningless \
             predictions) with `cargo run --release --example synthetic_weights -- {path}`."
        )
    }
}

/// The verified download, for the manifest.
struct Source {
    url: String,
    sha256: String,
    size: u64,
}

/// Converts the verified download and renames model and manifest into place.
fn install(
    download: TempFile,
    model: &Path,
    convert: &ConvertOptions,
    source: Source,
) -> Result<FetchReport, WeightsError> {
    let (model_tmp, report) = convert_to_temp(download.path(), model, convert)?;
    let manifest = Manifest {
        file: file_name(model),
        sha256: report.sha256.clone(),
        size: report.size,
        dtype: report.dtype.clone(),
        tensors: report.tensors,
        source_url: source.url,
        source_sha256: source.sha256,
        source_size: source.size,
        converter: converter_version(),
    };
    let manifest_path = model.with_file_name(MANIFEST_FILE);
    let manifest_tmp = TempFile::beside(&manifest_path);
    std::fs::write(manifest_tmp.path(), manifest.render())
        .map_err(|e| WeightsError::io(manifest_tmp.path(), e))?;
    model_tmp
        .persist(model)
        .map_err(|e| WeightsError::io(model, e))?;
    manifest_tmp
        .persist(&manifest_path)
        .map_err(|e| WeightsError::io(&manifest_path, e))?;
    Ok(FetchReport {
        model: model.to_path_buf(),
        manifest_path,
        manifest,
        convert: report,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Streams the body of `opts.url` into `dest`; returns its sha256 (lower-case hex) and size.
async fn download_to(opts: &FetchOptions, dest: &Path) -> Result<(String, u64), WeightsError> {
    let url = redact_url(&opts.url);
    let transport = |e: reqwest::Error| WeightsError::Download {
        url: url.clone(),
        reason: error_chain(&e),
    };
    let mut response = http_client()?
        .get(&opts.url)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(WeightsError::HttpStatus {
            url: url.clone(),
            status: status.as_u16(),
        });
    }
    let limit = opts.expected_size().unwrap_or(MAX_DOWNLOAD_BYTES);
    let total = response.content_length().or(opts.expected_size());
    let too_large = || WeightsError::TooLarge {
        url: url.clone(),
        limit,
    };
    if total.is_some_and(|t| t > limit) {
        return Err(too_large());
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| WeightsError::io(dest, e))?;
    let mut progress = Progress::new(opts.progress, total);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large());
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| WeightsError::io(dest, e))?;
        progress.update(size);
    }
    file.flush().await.map_err(|e| WeightsError::io(dest, e))?;
    progress.finish(size);
    Ok((hex::encode(hasher.finalize()), size))
}

fn http_client() -> Result<reqwest::Client, WeightsError> {
    // reqwest is built without a bundled crypto provider; install ring's once per process
    // (an error only means another part of the program installed one first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("resnet18-fc/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WeightsError::Download {
            url: String::new(),
            reason: error_chain(&e),
        })
}

/// Download progress: an indicatif bar on stderr when stderr is a terminal, else (logs, FC, CI)
/// one log line per tenth of the download.
enum Progress {
    Off,
    Bar(ProgressBar),
    Log {
        total: Option<u64>,
        next: u64,
        logged: u64,
    },
}

/// Bytes between two progress log lines when the total size is unknown.
const LOG_STEP_UNKNOWN: u64 = 8 << 20;

impl Progress {
    fn new(enabled: bool, total: Option<u64>) -> Self {
        if !enabled {
            return Self::Off;
        }
        if !std::io::stderr().is_terminal() {
            return Self::Log {
                total,
                next: Self::log_step(total),
                logged: 0,
            };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = match total {
            Some(_) => "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ({eta} left)",
            None => "{spinner} {bytes} {bytes_per_sec}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Self::Bar(bar)
    }

    fn log_step(total: Option<u64>) -> u64 {
        total.map_or(LOG_STEP_UNKNOWN, |t| (t / 10).max(1))
    }

    /// `done` bytes received so far.
    fn update(&mut self, done: u64) {
        match self {
            Self::Off => {}
            Self::Bar(bar) => bar.set_position(done),
            Self::Log {
                total,
                next,
                logged,
            } => {
                if done >= *next {
                    let step = Self::log_step(*total);
                    *next = (done / step + 1) * step;
                    *logged = done;
                    log_progress(done, *total);
                }
            }
        }
    }

    /// The download ended after `done` bytes: clears the bar, or logs the final count.
    fn finish(&self, done: u64) {
        match self {
            Self::Off => {}
            Self::Bar(bar) => bar.finish_and_clear(),
            Self::Log { total, logged, .. } => {
                if *logged != done {
                    log_progress(done, *total);
                }
            }
        }
    }
}

fn log_progress(done: u64, total: Option<u64>) {
    match total {
        Some(t) if t > 0 => tracing::info!(
            "downloading weights: {done}/{t} bytes ({}%)",
            done.saturating_mul(100) / t
        ),
        _ => tracing::info!("downloading weights: {done} bytes"),
    }
}

/// Validates a hex sha256 and returns it lower-cased.
fn parse_sha256(value: &str) -> Result<String, WeightsError> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(WeightsError::InvalidSha256 {
            value: value.to_owned(),
        })
    }
}

/// The URL without user-info and query string, safe for logs and the manifest (a pre-signed
/// URL's signature must not be recorded).
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => without_query.to_owned(),
    }
}

/// `error: cause: cause` — reqwest's own message omits the underlying reason.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// The model directory, created if needed and removed again (when empty) unless kept.
struct ModelDir {
    created: Option<PathBuf>,
}

impl ModelDir {
    fn prepare(model_path: &Path) -> Result<Self, WeightsError> {
        let Some(dir) = model_path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(Self { created: None });
        };
        if dir.is_dir() {
            return Ok(Self { created: None });
        }
        std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
        Ok(Self {
            created: Some(dir.to_path_buf()),
        })
    }

    fn keep(mut self) {
        self.created = None;
    }
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.created {
            let _ = std::fs::remove_dir(dir); // fails, harmlessly, when not empty
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_credentials_and_query() {
        assert_eq!(
            redact_url("https://user:pw@bucket.oss.example.com/m/r.pth?Signature=abc#x"),
            "https://bucket.oss.example.com/m/r.pth"
        );
        assert_eq!(redact_url(DEFAULT_URL), DEFAULT_URL);
        assert_eq!(redact_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn sha256_must_be_64_hex_digits_and_is_lower_cased() {
        assert_eq!(
            parse_sha256(&DEFAULT_SHA256.to_uppercase()).ok().as_deref(),
            Some(DEFAULT_SHA256)
        );
        assert!(parse_sha256("f37072fd").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn expected_size_is_known_only_for_torchvision_hash() {
        let opts = FetchOptions::default();
        assert_eq!(opts.expected_size(), Some(46_830_571));
        let other = FetchOptions {
            sha256: "00".repeat(32),
            ..FetchOptions::default()
        };
        assert_eq!(other.expected_size(), None);
    }

    #[test]
    fn in_dir_puts_model_and_manifest_side_by_side() {
        let opts = FetchOptions::default().in_dir(Path::new("/srv/m"));
        assert_eq!(opts.model_path, Path::new("/srv/m/resnet18.safetensors"));
        assert_eq!(opts.manifest_path(), Path::new("/srv/m/MANIFEST"));
    }
}
