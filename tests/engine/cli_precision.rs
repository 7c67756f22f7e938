//! `--precision` / `RESNET18_FC_PRECISION` on the real binary: int8 is selected by either, gives
//! the same kind of answer with different scores, and unknown values are refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::weights;
use image::{Rgb, RgbImage};

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("resnet18.safetensors");
    weights().write_safetensors(&model).expect("write weights");
    let image = dir.path().join("a.png");
    RgbImage::from_fn(280, 230, |x, y| {
        Rgb([
            (x as u8).wrapping_mul(5),
            (y as u8) ^ 0x5a,
            ((x + 2 * y) as u8),
        ])
    })
    .save(&image)
    .expect("write image");
    (dir, model, image)
}

/// Top-5 `(index, score)` from `classify --json --top-k 5` with extra args / environment.
fn classify(model: &Path, image: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<(u64, f64)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet18-fc"));
    cmd.env_remove("RESNET18_FC_PRECISION")
        .args(["classify", "--json", "--top-k", "5", "--model"])
        .arg(model)
        .args(args)
        .arg(image);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run resnet18-fc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON line");
    line["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| (p["index"].as_u64().unwrap(), p["score"].as_f64().unwrap()))
        .collect()
}

#[test]
fn int8_is_chosen_by_flag_or_environment_and_changes_the_scores_only_slightly() {
    let (_dir, model, image) = setup();
    let f32 = classify(&model, &image, &[], &[]);
    let by_flag = classify(&model, &image, &["--precision", "int8"], &[]);
    let by_env = classify(&model, &image, &[], &[("RESNET18_FC_PRECISION", "int8")]);
    let flag_wins = classify(
        &model,
        &image,
        &["--precision", "f32"],
        &[("RESNET18_FC_PRECISION", "int8")],
    );
    assert_eq!(
        by_flag, by_env,
        "flag and environment select the same engine"
    );
    assert_eq!(flag_wins, f32, "--precision f32 overrides the environment");
    assert_ne!(
        by_flag, f32,
        "int8 scores differ from f32 (int8 actually ran)"
    );
    let (f, q) = (f32[0].1, by_flag[0].1);
    assert!(
        (f - q).abs() < 0.05 * f.max(1e-3),
        "top score {f} (f32) vs {q} (int8)"
    );
}

#[test]
fn unknown_precision_is_refused_by_classify_and_serve() {
    let (_dir, model, image) = setup();
    for sub in ["classify", "serve"] {
        let out = Command::new(env!("CARGO_BIN_EXE_resnet18-fc"))
            .args([sub, "--precision", "int4", "--model"])
            .arg(&model)
            .args((sub == "classify").then_some(&image))
            .output()
            .expect("run resnet18-fc");
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("expected f32 or int8"), "{sub}: {stderr}");
    }
}
