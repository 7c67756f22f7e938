//! Writes the deterministic synthetic ResNet-18 weights (see `resnet18_fc::synthetic`) to a
//! safetensors file, for packaging tests on machines that cannot download the real checkpoint.
//!
//! `cargo run --example synthetic_weights -- OUT.safetensors`

use std::path::PathBuf;
use std::process::ExitCode;

use resnet18_fc::synthetic::SyntheticWeights;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: synthetic_weights OUT.safetensors");
        return ExitCode::from(2);
    };
    match SyntheticWeights::generate().write_safetensors(&out) {
        Ok(()) => {
            println!("wrote synthetic weights to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
