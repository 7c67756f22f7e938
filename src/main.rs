//! Command line of resnet18-fc: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli_classify;
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
    /// Image files to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
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
            cli_classify::run(&args.model, limits, args.top_k, output, &args.images)
        }
        Some(Command::Convert(args)) => cli_weights::convert(&args),
        Some(Command::FetchModel(args)) => cli_weights::fetch(&args),
    }
}
