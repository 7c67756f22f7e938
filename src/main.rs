//! Command line of resnet18-fc: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli_classify;
mod cli_eval;
mod cli_serve;
mod cli_weights;

/// TorchVision ResNet-18 image classifier for Alibaba Cloud Function Compute.
#[derive(Debug, Parser)]
#[command(
    name = "resnet18-fc",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `serve` with these arguments.
    #[command(flatten)]
    serve: cli_serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Function Compute custom-runtime HTTP server (the default).
    Serve(cli_serve::ServeArgs),
    /// Classify image files and print the top classes of each.
    Classify(ClassifyArgs),
    /// Top-1 / top-5 accuracy of f32 and int8 on labelled images, and their agreement.
    Eval(EvalArgs),
    /// Convert a TorchVision ResNet-18 checkpoint (.pth) into safetensors.
    Convert(cli_weights::ConvertArgs),
    /// Download TorchVision's ResNet-18 weights, verify, convert and install them.
    FetchModel(cli_weights::FetchArgs),
}

/// Arguments of `resnet18-fc classify`.
#[derive(Debug, clap::Args)]
struct ClassifyArgs {
    /// Weights file (safetensors).
    #[arg(long, env = "RESNET18_FC_MODEL", default_value = resnet18_fc::config::DEFAULT_MODEL)]
    model: PathBuf,
    /// How many classes to print per image (1..=1000).
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Language of the class names: `en` (English) or `zh` (Simplified Chinese; the English
    /// name follows in parentheses, or in `label_en` with --json).
    #[arg(long, default_value_t = resnet18_fc::labels::Lang::En)]
    lang: resnet18_fc::labels::Lang,
    /// Decode JPEGs at full size even when large (bit-exact with TorchVision, slower).
    #[arg(long, env = "RESNET18_FC_EXACT_JPEG")]
    exact_jpeg: bool,
    /// Arithmetic of the convolutions: `f32`, or `int8` (weights quantized at load, faster,
    /// slightly different scores).
    #[arg(long, env = "RESNET18_FC_PRECISION", default_value = "f32")]
    precision: resnet18_fc::resnet::Precision,
    /// Image files to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Arguments of `resnet18-fc eval`.
#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Weights file (safetensors).
    #[arg(long, env = "RESNET18_FC_MODEL", default_value = resnet18_fc::config::DEFAULT_MODEL)]
    model: PathBuf,
    /// Decode JPEGs at full size even when large (bit-exact with TorchVision, slower).
    #[arg(long, env = "RESNET18_FC_EXACT_JPEG")]
    exact_jpeg: bool,
    /// A folder of class sub-folders (numbers 0..1000, or all 1000 ImageNet WordNet ids as in
    /// the validation set), or a CSV file of `file,class_index` lines.
    set: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => cli_serve::run(&cli.serve),
        Some(Command::Serve(args)) => cli_serve::run(&args),
        Some(Command::Classify(args)) => {
            let limits = resnet18_fc::preprocess::Limits {
                exact_jpeg: args.exact_jpeg,
                ..Default::default()
            };
            let output = cli_classify::Output {
                json: args.json,
                lang: args.lang,
            };
            cli_classify::run(
                &args.model,
                (limits, args.precision),
                args.top_k,
                output,
                &args.images,
            )
        }
        Some(Command::Eval(args)) => {
            let limits = resnet18_fc::preprocess::Limits {
                exact_jpeg: args.exact_jpeg,
                ..Default::default()
            };
            cli_eval::run(&args.model, &args.set, limits)
        }
        Some(Command::Convert(args)) => cli_weights::convert(&args),
        Some(Command::FetchModel(args)) => cli_weights::fetch(&args),
    }
}
