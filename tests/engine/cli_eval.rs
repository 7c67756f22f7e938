//! `resnet18-fc eval` end to end: the real binary on synthetic weights.
//!
//! The true classes are set from `classify --top-k 5` (whose f32 answers the parity tests pin to
//! TorchVision's): one image is filed under its f32 top-1 class, one under a class outside its
//! f32 top-5, so f32 must score exactly 50 % top-1 and top-5.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::weights;
use image::{ImageFormat, Rgb, RgbImage};

fn write_image(path: &Path, seed: u8) {
    let img = RgbImage::from_fn(260, 240, |x, y| {
        Rgb([
            (x as u8).wrapping_mul(seed),
            (y as u8).wrapping_add(seed),
            ((x * y) as u8) ^ seed,
        ])
    });
    img.save_with_format(path, ImageFormat::Png)
        .expect("write test image");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_resnet18-fc"))
}

/// The f32 top-5 class indices of `image`, from `classify --json --top-k 5`.
fn top5(model: &Path, image: &Path) -> Vec<usize> {
    let out = bin()
        .args(["classify", "--json", "--top-k", "5", "--model"])
        .arg(model)
        .arg(image)
        .output()
        .expect("run classify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    line["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p["index"].as_u64().expect("index") as usize)
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("resnet18.safetensors");
    weights().write_safetensors(&model).expect("write weights");
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let (a, b) = (staging.join("a.png"), staging.join("b.png"));
    write_image(&a, 3);
    write_image(&b, 11);
    let set = dir.path().join("set");
    let right = top5(&model, &a)[0];
    let wrong = (0..1000).find(|c| !top5(&model, &b).contains(c)).unwrap();
    for (file, class) in [(&a, right), (&b, wrong)] {
        let folder = set.join(class.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(file, folder.join(file.file_name().unwrap())).unwrap();
    }
    (dir, model, set)
}

#[test]
fn eval_reports_f32_and_int8_accuracy_and_agreement() {
    let (_dir, model, set) = setup();
    let out = bin()
        .arg("eval")
        .arg("--model")
        .arg(&model)
        .arg(&set)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("images: 2 ranked, 0 failed"), "{stdout}");
    assert!(stdout.contains("| f32 | 50.00 % | 50.00 % |"), "{stdout}");
    assert!(stdout.contains("| int8 |"), "{stdout}");
    assert!(stdout.contains("top-1 agreement f32 / int8: "), "{stdout}");
}

#[test]
fn eval_counts_unreadable_images_and_fails_on_a_bad_set() {
    let (dir, model, set) = setup();
    let broken = set.join("7");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("broken.jpg"), b"not an image").unwrap();
    let out = bin()
        .arg("eval")
        .arg("--model")
        .arg(&model)
        .arg(&set)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("images: 2 ranked, 1 failed"), "{stdout}");
    let csv = dir.path().join("labels.csv");
    std::fs::write(&csv, "a.png,1\nb.png,1000\n").unwrap();
    let out = bin()
        .arg("eval")
        .arg("--model")
        .arg(&model)
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}
