//! `resnet18-fc classify` end to end: the real binary on synthetic weights.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{chinese_name, weights};
use image::{ImageFormat, Rgb, RgbImage};

fn write_image(dir: &Path, name: &str, format: ImageFormat, seed: u8) -> PathBuf {
    let img = RgbImage::from_fn(300, 200, |x, y| {
        Rgb([
            (x as u8).wrapping_mul(seed),
            (y as u8).wrapping_add(seed),
            ((x + y) as u8) ^ seed,
        ])
    });
    let path = dir.join(name);
    img.save_with_format(&path, format)
        .expect("write test image");
    path
}

fn setup() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("resnet18.safetensors");
    weights().write_safetensors(&model).expect("write weights");
    let images = vec![
        write_image(dir.path(), "a.png", ImageFormat::Png, 3),
        write_image(dir.path(), "b.jpg", ImageFormat::Jpeg, 7),
    ];
    (dir, model, images)
}

fn classify(model: &Path, args: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet18-fc"))
        .arg("classify")
        .arg("--model")
        .arg(model)
        .arg("--json")
        .args(args)
        .output()
        .expect("run resnet18-fc")
}

#[test]
fn json_output_has_one_line_with_three_predictions_per_image() {
    let (_dir, model, images) = setup();
    let paths: Vec<&Path> = images.iter().map(|p| p.as_path()).collect();
    let out = classify(&model, &paths);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, path) in lines.iter().zip(&images) {
        assert_eq!(line["file"], path.display().to_string());
        let predictions = line["predictions"].as_array().expect("predictions array");
        assert_eq!(predictions.len(), 3);
        let ranks: Vec<u64> = predictions
            .iter()
            .map(|p| p["rank"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(ranks, [1, 2, 3]);
        let scores: Vec<f64> = predictions
            .iter()
            .map(|p| p["score"].as_f64().unwrap_or(-1.0))
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "scores sorted: {scores:?}"
        );
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let index = predictions[0]["index"].as_u64().expect("index") as usize;
        assert_eq!(
            predictions[0]["label"],
            resnet18_fc::labels::label(index).expect("label")
        );
    }
}

#[test]
fn corrupt_file_gets_an_error_line_and_the_rest_still_succeed() {
    let (dir, model, images) = setup();
    let corrupt = dir.path().join("corrupt.jpg");
    let mut bytes = std::fs::read(&images[1]).expect("read jpeg");
    bytes.truncate(40);
    std::fs::write(&corrupt, bytes).expect("write corrupt");
    let missing = dir.path().join("missing.png");
    let out = classify(&model, &[&images[0], &corrupt, &missing, &images[1]]);
    assert!(!out.status.success(), "exit status must be non-zero");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["predictions"].as_array().map(Vec::len), Some(3));
    assert_eq!(lines[1]["file"], corrupt.display().to_string());
    assert_eq!(lines[1]["error"]["code"], "invalid_image");
    assert_eq!(lines[2]["error"]["code"], "unreadable_file");
    assert_eq!(lines[3]["predictions"].as_array().map(Vec::len), Some(3));
}

#[test]
fn missing_model_fails_with_advice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = write_image(dir.path(), "a.png", ImageFormat::Png, 1);
    let out = classify(&dir.path().join("nope.safetensors"), &[&image]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fetch-model"),
        "stderr should say what to do: {stderr}"
    );
}

/// Runs `classify` with `extra` arguments before the image paths (no `--json` unless given).
fn classify_with(model: &Path, extra: &[&str], images: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet18-fc"))
        .arg("classify")
        .arg("--model")
        .arg(model)
        .args(extra)
        .args(images)
        .output()
        .expect("run resnet18-fc")
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn lang_zh_prints_chinese_names_with_the_english_ones() {
    let (_dir, model, images) = setup();
    let image = images[0].as_path();
    let english = json_lines(&classify_with(&model, &["--json"], &[image]));
    let chinese = json_lines(&classify_with(
        &model,
        &["--json", "--lang", "zh"],
        &[image],
    ));
    let (en, zh) = (
        english[0]["predictions"].as_array().expect("predictions"),
        chinese[0]["predictions"].as_array().expect("predictions"),
    );
    assert_eq!(en.len(), 3);
    assert_eq!(zh.len(), 3);
    for (e, z) in en.iter().zip(zh) {
        assert!(e.get("label_en").is_none(), "default output unchanged: {e}");
        assert_eq!(z["index"], e["index"]);
        assert_eq!(z["label_en"], e["label"], "{z}");
        let index = z["index"].as_u64().expect("index");
        assert_eq!(z["label"], chinese_name(index), "{z}");
    }

    let table = classify_with(&model, &["--lang", "zh"], &[image]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).expect("utf-8");
    for z in zh {
        let row = format!(
            "{} ({})",
            z["label"].as_str().expect("label"),
            z["label_en"].as_str().expect("label_en")
        );
        assert!(text.contains(&row), "table lacks {row:?}:\n{text}");
    }
}

#[test]
fn unknown_lang_is_refused_with_the_accepted_values() {
    let (_dir, model, images) = setup();
    let out = classify_with(&model, &["--lang", "fr"], &[images[0].as_path()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`en`") && stderr.contains("`zh`"),
        "stderr should name the accepted values: {stderr}"
    );
}
