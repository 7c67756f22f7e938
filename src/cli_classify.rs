//! `resnet18-fc classify`: classify image files, print a table or JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use resnet18_fc::classifier::{Classifier, ClassifyError, Prediction, Ranking};
use resnet18_fc::labels::Lang;
use resnet18_fc::preprocess::Limits;
use resnet18_fc::resnet::Precision;
use serde_json::json;

/// Number of files from which a progress bar is shown on stderr.
const PROGRESS_THRESHOLD: usize = 8;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object per line instead of a table.
    pub json: bool,
    /// Language of the class names.
    pub lang: Lang,
}

/// Classifies every file; a bad file is reported and skipped. Exit status is non-zero when the
/// model cannot be loaded or any file failed.
pub fn run(
    model: &Path,
    (limits, precision): (Limits, Precision),
    k: usize,
    output: Output,
    images: &[PathBuf],
) -> ExitCode {
    let classifier = match Classifier::load_with_options(model, limits, precision) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = progress_bar(images.len());
    let mut failures = 0usize;
    let mut out = std::io::stdout().lock();
    for path in images {
        let result = std::fs::read(path)
            .map_err(|e| FileError::Io(e.to_string()))
            .and_then(|bytes| classifier.classify(&bytes, k).map_err(FileError::Classify));
        failures += usize::from(result.is_err());
        let text = if output.json {
            json_line(path, &result, output.lang)
        } else {
            table(path, &result, output.lang)
        };
        progress.suspend(|| {
            let _ = writeln!(out, "{text}");
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
    if failures > 0 {
        eprintln!(
            "{failures} of {} file(s) could not be classified",
            images.len()
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Why one file failed.
enum FileError {
    Io(String),
    Classify(ClassifyError),
}

impl FileError {
    fn code(&self) -> &'static str {
        match self {
            Self::Io(_) => "unreadable_file",
            Self::Classify(e) => e.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Io(m) => m.clone(),
            Self::Classify(e) => e.to_string(),
        }
    }
}

fn progress_bar(files: usize) -> ProgressBar {
    if files < PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(files as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} images ({eta} left)") {
        bar.set_style(style);
    }
    bar
}

/// The classes of `p` as the HTTP API names them: `label` in `lang`, `label_en` alongside
/// when that is not English.
fn predictions(p: &Ranking, lang: Lang) -> Vec<Prediction> {
    p.classes.iter().cloned().map(|c| c.in_lang(lang)).collect()
}

fn json_line(path: &Path, result: &Result<Ranking, FileError>, lang: Lang) -> String {
    let file = path.display().to_string();
    match result {
        Ok(p) => {
            json!({"file": file, "predictions": predictions(p, lang), "timing_ms": p.timing})
        }
        Err(e) => json!({"file": file, "error": {"code": e.code(), "message": e.message()}}),
    }
    .to_string()
}

fn table(path: &Path, result: &Result<Ranking, FileError>, lang: Lang) -> String {
    let mut text = format!("{}\n", path.display());
    match result {
        Ok(p) => {
            for c in predictions(p, lang) {
                let english = c.label_en.map(|en| format!(" ({en})")).unwrap_or_default();
                text += &format!(
                    "  {:>2}. {:>6.2}%  {:<4} {}{}\n",
                    c.rank,
                    c.score * 100.0,
                    c.index,
                    c.label,
                    english
                );
            }
        }
        Err(e) => text += &format!("  error ({}): {}\n", e.code(), e.message()),
    }
    text.trim_end().to_string()
}
