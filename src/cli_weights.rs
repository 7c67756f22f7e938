//! `resnet18-fc convert` and `resnet18-fc fetch-model`: thin wrappers over `weights`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use resnet18_fc::weights::{
    self, ConvertOptions, ConvertReport, DEFAULT_SHA256, DEFAULT_URL, FetchOptions, OutputDType,
    SHA256_ENV, URL_ENV,
};

/// Arguments of `resnet18-fc convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// TorchVision checkpoint (`torch.save` zip format), e.g. resnet18-f37072fd.pth.
    input: PathBuf,
    /// Output safetensors file, e.g. model/resnet18.safetensors.
    output: PathBuf,
    /// Float type to store: f32, f16 or bf16 (default: the checkpoint's own).
    #[arg(long)]
    dtype: Option<OutputDType>,
    /// Key of the state dict inside the checkpoint (default: found automatically).
    #[arg(long)]
    key: Option<String>,
}

/// Arguments of `resnet18-fc fetch-model`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Checkpoint URL.
    #[arg(long, env = URL_ENV, default_value = DEFAULT_URL)]
    url: String,
    /// Expected sha256 of the download (hex).
    #[arg(long, env = SHA256_ENV, default_value = DEFAULT_SHA256)]
    sha256: String,
    /// Directory receiving resnet18.safetensors and MANIFEST.
    #[arg(long, default_value = "model")]
    model_dir: PathBuf,
    /// Float type to store: f32, f16 or bf16 (default: the checkpoint's own).
    #[arg(long)]
    dtype: Option<OutputDType>,
}

/// Runs `convert`; exit status 1 on any error.
pub fn convert(args: &ConvertArgs) -> ExitCode {
    let opts = ConvertOptions {
        dtype: args.dtype,
        key: args.key.clone(),
    };
    match weights::convert_checkpoint(&args.input, &args.output, &opts) {
        Ok(report) => {
            print_report(&args.output, &report);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Runs `fetch-model`; exit status 1 on any error.
pub fn fetch(args: &FetchArgs) -> ExitCode {
    let mut opts = FetchOptions {
        url: args.url.clone(),
        sha256: args.sha256.clone(),
        ..FetchOptions::default()
    }
    .in_dir(&args.model_dir);
    opts.convert.dtype = args.dtype;
    eprintln!("downloading {}", weights::redact_url(&opts.url));
    match weights::fetch_model(&opts) {
        Ok(report) => {
            eprintln!(
                "verified sha256 {} ({} bytes)",
                report.manifest.source_sha256, report.manifest.source_size
            );
            print_report(&report.model, &report.convert);
            println!("wrote {}", report.manifest_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn print_report(output: &Path, report: &ConvertReport) {
    if let Some(key) = &report.state_dict_key {
        eprintln!("state dict found under key `{key}`");
    }
    if !report.unused.is_empty() {
        eprintln!("ignored unused tensors: {}", report.unused.join(", "));
    }
    println!(
        "wrote {} ({} tensors, {} from {}, {} bytes, sha256 {})",
        output.display(),
        report.tensors,
        report.dtype,
        report.source_dtype,
        report.size,
        report.sha256
    );
}

fn fail(error: &weights::WeightsError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
