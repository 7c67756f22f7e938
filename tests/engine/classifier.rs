//! The `Classifier` API on synthetic weights: loading and validation of weights files, batch vs
//! single agreement, per-image errors, dtype handling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor};
use image::{ImageFormat, Rgb, RgbImage};
use resnet18_fc::classifier::{Classifier, ClassifyError};
use resnet18_fc::resnet::{ModelError, expected_tensors};
use resnet18_fc::synthetic::synthetic_values;

/// Synthetic weights as candle tensors, generated once per test binary.
fn tensors() -> &'static HashMap<String, Tensor> {
    static TENSORS: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    TENSORS.get_or_init(|| {
        expected_tensors()
            .into_iter()
            .map(|spec| {
                let t =
                    Tensor::from_vec(synthetic_values(&spec), spec.shape.as_slice(), &Device::Cpu)
                        .expect("tensor");
                (spec.name, t)
            })
            .collect()
    })
}

fn write(dir: &Path, name: &str, map: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join(name);
    candle_core::safetensors::save(map, &path).expect("save");
    path
}

fn f32_model() -> &'static (tempfile::TempDir, PathBuf) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(dir.path(), "f32.safetensors", tensors());
        (dir, path)
    })
}

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| Classifier::load(&f32_model().1).expect("load f32 weights"))
}

fn png(seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(320, 240, |x, y| {
        let v = x.wrapping_mul(seed) ^ y.wrapping_mul(seed + 3);
        Rgb([v as u8, (v >> 3) as u8, (x + y + seed) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

fn load_error(map: &HashMap<String, Tensor>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "bad.safetensors", map);
    match Classifier::load(&path) {
        Ok(_) => panic!("loading {path:?} should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn classifier_is_send_sync_and_shared_behind_arc() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let shared = Arc::new(classifier().clone());
    assert_send_sync(&shared);
    let image = png(5);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let c = Arc::clone(&shared);
            let bytes = image.clone();
            std::thread::spawn(move || c.classify(&bytes, 3).map(|p| p.classes))
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").expect("classify"))
        .collect();
    assert_eq!(results[0], results[1]);
}

#[test]
fn probabilities_are_a_softmax_over_all_classes() {
    let p = classifier().classify(&png(11), 1000).expect("classify");
    assert_eq!(p.classes.len(), 1000);
    let total: f32 = p.classes.iter().map(|c| c.score).sum();
    assert!((total - 1.0).abs() < 1e-3, "probabilities sum to {total}");
    let ranks: Vec<usize> = p.classes.iter().map(|c| c.rank).collect();
    assert_eq!(ranks, (1..=1000).collect::<Vec<_>>());
}

#[test]
fn batch_matches_single_image_calls_and_keeps_per_image_errors() {
    let c = classifier();
    let a = png(1);
    let b = png(2);
    let garbage = b"not an image".to_vec();
    let batch = c.classify_batch(&[&a, &garbage, &b], 3).expect("batch");
    assert_eq!(batch.len(), 3);
    let single_a = c.classify(&a, 3).expect("a");
    let single_b = c.classify(&b, 3).expect("b");
    let batch_a = batch[0].as_ref().expect("batch a");
    let batch_b = batch[2].as_ref().expect("batch b");
    for (x, y) in batch_a
        .classes
        .iter()
        .zip(&single_a.classes)
        .chain(batch_b.classes.iter().zip(&single_b.classes))
    {
        assert_eq!(x.index, y.index);
        assert!(
            (x.score - y.score).abs() < 1e-5,
            "{} vs {}",
            x.score,
            y.score
        );
    }
    assert!(matches!(batch[1], Err(ClassifyError::Image(_))));
}

#[test]
fn invalid_top_k_is_refused() {
    assert!(matches!(
        classifier().classify(&png(1), 0),
        Err(ClassifyError::InvalidTopK { .. })
    ));
    assert!(matches!(
        classifier().classify_batch(&[&png(1)], 1001),
        Err(ClassifyError::InvalidTopK { .. })
    ));
}

#[test]
fn half_precision_files_load_and_agree_with_f32() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = png(9);
    let reference = classifier().classify(&image, 3).expect("f32");
    for dtype in [DType::F16, DType::BF16] {
        let map: HashMap<String, Tensor> = tensors()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dtype).expect("convert")))
            .collect();
        let path = write(dir.path(), &format!("{dtype:?}.safetensors"), &map);
        let half = Classifier::load(&path).expect("load half weights");
        let p = half.classify(&image, 3).expect("classify");
        assert_eq!(
            p.classes[0].index, reference.classes[0].index,
            "{dtype:?} top-1"
        );
        assert!((p.classes[0].score - reference.classes[0].score).abs() < 0.05);
    }
}

#[test]
fn missing_tensor_is_named_in_the_error() {
    let mut map = tensors().clone();
    map.remove("layer3.1.bn2.running_var");
    let message = load_error(&map);
    assert!(
        message.contains("missing tensor layer3.1.bn2.running_var"),
        "{message}"
    );
    assert!(message.contains("[256]"), "{message}");
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let mut map = tensors().clone();
    map.insert(
        "fc.weight".into(),
        Tensor::zeros((10, 512), DType::F32, &Device::Cpu).expect("zeros"),
    );
    let message = load_error(&map);
    assert!(message.contains("fc.weight"), "{message}");
    assert!(
        message.contains("[10, 512]") && message.contains("[1000, 512]"),
        "{message}"
    );
}

#[test]
fn integer_tensor_is_refused_by_dtype() {
    let mut map = tensors().clone();
    map.insert(
        "bn1.running_mean".into(),
        Tensor::zeros(64, DType::I64, &Device::Cpu).expect("zeros"),
    );
    let message = load_error(&map);
    assert!(
        message.contains("bn1.running_mean") && message.contains("i64"),
        "{message}"
    );
}

#[test]
fn unreadable_file_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"garbage").expect("write");
    let err = Classifier::load(&path).expect_err("must fail");
    assert!(matches!(
        err,
        ClassifyError::Model(ModelError::Unreadable { .. })
    ));
    assert!(err.to_string().contains("fetch-model"));
}
