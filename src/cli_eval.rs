//! `resnet18-fc eval PATH`: top-1 / top-5 accuracy of f32 and int8 side by side on a labelled
//! image set, and how often their top-1 classes agree (see `resnet18_fc::eval` for layouts).

use std::path::Path;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use resnet18_fc::classifier::{Classifier, ClassifyError, top_k};
use resnet18_fc::eval::{Tally, collect};
use resnet18_fc::preprocess::Limits;
use resnet18_fc::resnet::Precision;

/// Ranks every labelled image with both precisions and prints the summary. Exit status 2 when
/// the set or the model cannot be read, 1 when some images failed, 0 otherwise.
pub fn run(model: &Path, set: &Path, limits: Limits) -> ExitCode {
    let items = match collect(set) {
        Ok(items) => items,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let load = |precision| Classifier::load_with_options(model, limits, precision);
    let (f32_model, int8_model) = match (load(Precision::F32), load(Precision::Int8)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = ProgressBar::new(items.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} images ({eta} left)") {
        bar.set_style(style);
    }
    let mut tally = Tally::default();
    for (path, truth) in &items {
        match rank_both(path, &f32_model, &int8_model) {
            Ok((a, b)) => tally.add(*truth, &a, &b),
            Err(e) => {
                tally.failed += 1;
                bar.suspend(|| eprintln!("{}: {e}", path.display()));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_summary(&tally);
    if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The five best classes of each precision for one file (preprocessed once).
fn rank_both(
    path: &Path,
    f32_model: &Classifier,
    int8_model: &Classifier,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let pre = f32_model
        .prepare(&bytes)
        .map_err(|e: ClassifyError| e.to_string())?;
    let top5 = |model: &Classifier| -> Result<Vec<usize>, String> {
        let probabilities = model
            .probabilities(&pre.chw, 1)
            .map_err(|e| e.to_string())?;
        Ok(top_k(&probabilities[0], 5)
            .iter()
            .map(|c| c.index)
            .collect())
    };
    Ok((top5(f32_model)?, top5(int8_model)?))
}

fn print_summary(t: &Tally) {
    println!("images: {} ranked, {} failed", t.images, t.failed);
    println!("| precision | top-1 | top-5 |");
    println!("|---|---|---|");
    println!(
        "| f32 | {:.2} % | {:.2} % |",
        t.percent(t.f32_top1),
        t.percent(t.f32_top5)
    );
    println!(
        "| int8 | {:.2} % | {:.2} % |",
        t.percent(t.int8_top1),
        t.percent(t.int8_top5)
    );
    println!("top-1 agreement f32 / int8: {:.2} %", t.percent(t.agree));
}
