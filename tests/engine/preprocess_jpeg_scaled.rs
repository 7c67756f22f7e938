//! Big JPEGs decoded at reduced DCT scale: the scaled path's 224×224 tensor stays
//! close to the exact path's, the synthetic model's top-1 agrees, the decoded size follows
//! the rule (largest 1/2^k keeping the shorter side ≥ 512), small JPEGs take the exact path
//! byte for byte, and the pixel limit still refuses a bomb before decoding.
//!
//! The test images are made here: the committed `chelsea.jpg` parity fixture upscaled to
//! photo size, with grain (per-pixel noise) and a 4-pixel texture added so that there is
//! detail at the scales a reduced IDCT drops, then encoded with `jpeg-encoder` (4:2:0,
//! quality 85, like a phone camera). Run with `-- --nocapture` to see the figures.

use std::sync::OnceLock;

use image::RgbImage;
use jpeg_encoder::{ColorType, Encoder};
use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{
    Limits, PreprocessError, STD, TENSOR_LEN, jpeg_scale_denominator, preprocess,
};

/// Mean absolute difference between the scaled and the exact tensor, in 8-bit levels
/// (`|Δ| · std · 255`), that no big test image may exceed. Measured 0.18–0.24 at 1/2 and
/// 1/4 scale, 0.89 at 1/8 (docs/performance.md, "Big JPEGs"); the exact path itself is
/// 0.17–0.23 level from Pillow on the JPEG fixtures.
const MEAN_LEVELS_BOUND: f64 = 1.0;
/// Largest single-element difference, in levels, allowed. Measured 1–3 (7 at 1/8).
const MAX_LEVELS_BOUND: f64 = 12.0;
/// Largest change of any logit of the synthetic model allowed. Measured 0.008–0.034.
const LOGIT_BOUND: f32 = 0.05;
/// Top-1 must agree whenever the exact path's top-1 leads its runner-up by more than this
/// (2× the largest logit change measured on the 12 MP images, 0.0102). The synthetic
/// (untrained) model has near ties: on the 4000×3000 photo its top two logits are 0.0075
/// apart, which any perturbation of 0.01 flips, the JPEG decoder's own (zune-jpeg vs
/// libjpeg) included; there the logit bound is the check.
const CLEAR_MARGIN: f32 = 0.02;

const SCALED: Limits = Limits {
    max_pixels: 40_000_000,
    exact_jpeg: false,
    ..Limits::DEFAULT
};
const EXACT: Limits = Limits {
    max_pixels: 40_000_000,
    exact_jpeg: true,
    ..Limits::DEFAULT
};

// ------------------------------------------------------------------ allocation probe

use crate::largest_allocation::largest_allocation;
use crate::support::photo::photo;

// ------------------------------------------------------------------ test images

/// The 4000×3000 photo, made once.
fn photo_4000x3000() -> &'static RgbImage {
    static PHOTO: OnceLock<RgbImage> = OnceLock::new();
    PHOTO.get_or_init(|| photo(4000, 3000))
}

/// How to encode a test JPEG.
#[derive(Clone, Copy)]
struct Encoding {
    color: ColorType,
    progressive: bool,
    /// EXIF orientation tag value to embed, if any.
    orientation: Option<u16>,
}

const BASELINE: Encoding = Encoding {
    color: ColorType::Rgb,
    progressive: false,
    orientation: None,
};

/// A big-endian TIFF header with one IFD entry: Orientation (0x0112), SHORT, 1, `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut tiff = Vec::from(*b"MM\0\x2A\0\0\0\x08");
    tiff.extend([0, 1]); // one entry
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend(value.to_be_bytes());
    tiff.extend([0, 0]); // value padding
    tiff.extend([0, 0, 0, 0]); // no next IFD
    tiff
}

/// Encodes `img` (converted to `encoding.color`) at quality 85 (4:2:0 for colour).
fn encode(img: &RgbImage, encoding: Encoding) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let data: Vec<u8> = match encoding.color {
        ColorType::Luma => image::DynamicImage::ImageRgb8(img.clone())
            .to_luma8()
            .into_raw(),
        ColorType::Cmyk => img
            .pixels()
            .flat_map(|p| {
                let k = 255 - p.0.iter().copied().max().unwrap_or(0);
                [255 - p.0[0] - k, 255 - p.0[1] - k, 255 - p.0[2] - k, k]
            })
            .collect(),
        _ => img.as_raw().clone(),
    };
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, 85);
    encoder.set_progressive(encoding.progressive);
    if let Some(value) = encoding.orientation {
        encoder
            .add_exif_metadata(&exif_orientation(value))
            .expect("exif fits");
    }
    encoder
        .encode(
            &data,
            u16::try_from(w).expect("width"),
            u16::try_from(h).expect("height"),
            encoding.color,
        )
        .expect("encodes");
    out
}

// ------------------------------------------------------------------ comparison

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        Classifier::from_source(crate::support::weights(), "synthetic", SCALED)
            .expect("synthetic model builds")
    })
}

/// What the scaled path did to one file, next to the exact path.
struct Comparison {
    decoded_exact: (u32, u32),
    decoded_scaled: (u32, u32),
    mean_levels: f64,
    max_levels: f64,
    top1_exact: usize,
    top1_scaled: usize,
    exact_margin: f32,
    logit_diff: f32,
}

fn logits(chw: &[f32]) -> Vec<f32> {
    let mut rows = classifier().logits(chw, 1).expect("forward");
    rows.pop().expect("one row")
}

fn top1(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .expect("1000 logits")
}

/// Top-1 logit minus the runner-up's.
fn margin(row: &[f32]) -> f32 {
    let best = top1(row);
    let second = (0..row.len())
        .filter(|&i| i != best)
        .map(|i| row[i])
        .fold(f32::NEG_INFINITY, f32::max);
    row[best] - second
}

fn compare(name: &str, bytes: &[u8]) -> Comparison {
    let exact = preprocess(bytes, &EXACT).expect("exact path decodes");
    let scaled = preprocess(bytes, &SCALED).expect("scaled path decodes");
    assert_eq!(scaled.chw.len(), TENSOR_LEN);
    let plane = TENSOR_LEN / 3;
    let (mut sum, mut max) = (0f64, 0f64);
    for (i, (a, b)) in exact.chw.iter().zip(&scaled.chw).enumerate() {
        let levels = f64::from((a - b).abs()) * f64::from(STD[i / plane]) * 255.0;
        sum += levels;
        max = max.max(levels);
    }
    let (exact_logits, scaled_logits) = (logits(&exact.chw), logits(&scaled.chw));
    let logit_diff = exact_logits
        .iter()
        .zip(&scaled_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let c = Comparison {
        decoded_exact: exact.decoded_size,
        decoded_scaled: scaled.decoded_size,
        mean_levels: sum / TENSOR_LEN as f64,
        max_levels: max,
        top1_exact: top1(&exact_logits),
        top1_scaled: top1(&scaled_logits),
        exact_margin: margin(&exact_logits),
        logit_diff,
    };
    eprintln!(
        "{name}: decoded {:?} (exact {:?}); scaled vs exact: mean {:.3} level, max {:.2} \
         levels, logits max diff {logit_diff:.4}; top-1 {} vs {} (exact margin {:.4}, \
         scaled {:.4})",
        c.decoded_scaled,
        c.decoded_exact,
        c.mean_levels,
        c.max_levels,
        c.top1_scaled,
        c.top1_exact,
        margin(&exact_logits),
        margin(&scaled_logits),
    );
    c
}

/// The checks every big scaled image must pass.
fn assert_close(c: &Comparison, name: &str) {
    assert!(
        c.mean_levels <= MEAN_LEVELS_BOUND,
        "{name}: mean {:.3} levels",
        c.mean_levels
    );
    assert!(
        c.max_levels <= MAX_LEVELS_BOUND,
        "{name}: max {:.2} levels",
        c.max_levels
    );
    assert!(
        c.logit_diff <= LOGIT_BOUND,
        "{name}: logits moved by {:.4}",
        c.logit_diff
    );
    if c.exact_margin > CLEAR_MARGIN {
        assert_eq!(c.top1_scaled, c.top1_exact, "{name}: top-1 differs");
    }
    // Something was actually dropped: the paths are not secretly the same.
    assert!(c.mean_levels > 0.0, "{name}: scaled equals exact");
}

// ------------------------------------------------------------------ tests

#[test]
fn a_4000x3000_baseline_jpeg_is_decoded_at_quarter_scale_and_stays_close() {
    let bytes = encode(photo_4000x3000(), BASELINE);
    let c = compare("4000×3000 baseline", &bytes);
    assert_eq!(c.decoded_exact, (4000, 3000));
    assert_eq!(c.decoded_scaled, (1000, 750));
    assert_close(&c, "4000×3000 baseline");
}

#[test]
fn a_portrait_with_exif_orientation_6_is_scaled_and_still_rotated() {
    // Stored 4000×3000, shown 3000×4000 (rotate 90° clockwise). Were the orientation lost
    // on the scaled path, the crop would come from a different region and the tensors
    // would differ by tens of levels.
    let bytes = encode(
        photo_4000x3000(),
        Encoding {
            orientation: Some(6),
            ..BASELINE
        },
    );
    let c = compare("3000×4000 EXIF 6", &bytes);
    assert!(c.exact_margin > CLEAR_MARGIN, "a clear top-1 here");
    assert_eq!(c.decoded_exact, (4000, 3000));
    assert_eq!(c.decoded_scaled, (1000, 750));
    assert_close(&c, "3000×4000 EXIF 6");
}

#[test]
fn a_gray_jpeg_is_scaled() {
    let bytes = encode(
        photo_4000x3000(),
        Encoding {
            color: ColorType::Luma,
            ..BASELINE
        },
    );
    let c = compare("4000×3000 gray", &bytes);
    assert_eq!(c.decoded_scaled, (1000, 750));
    assert_close(&c, "4000×3000 gray");
}

#[test]
fn a_progressive_jpeg_is_scaled() {
    let bytes = encode(
        photo_4000x3000(),
        Encoding {
            progressive: true,
            ..BASELINE
        },
    );
    let c = compare("4000×3000 progressive", &bytes);
    assert_eq!(c.decoded_scaled, (1000, 750));
    assert_close(&c, "4000×3000 progressive");
}

#[test]
fn the_other_scales_follow_the_rule() {
    // 2048×1537: shorter side 1537 ≥ 1024 but < 2048 → 1/2, ⌈2048/2⌉×⌈1537/2⌉ = 1024×769
    // (odd height: the last row covers half a block). 4096×4096: exactly 512·8 → 1/8.
    for (w, h, expected) in [(2048, 1537, (1024, 769)), (4096, 4096, (512, 512))] {
        let name = format!("{w}×{h}");
        let bytes = encode(&photo(w, h), BASELINE);
        let c = compare(&name, &bytes);
        assert_eq!(c.decoded_exact, (w, h));
        assert_eq!(c.decoded_scaled, expected, "{name}");
        assert_close(&c, &name);
    }
}

#[test]
fn a_big_cmyk_jpeg_takes_the_exact_path() {
    let bytes = encode(
        photo_4000x3000(),
        Encoding {
            color: ColorType::Cmyk,
            ..BASELINE
        },
    );
    let exact = preprocess(&bytes, &EXACT).expect("decodes");
    let scaled = preprocess(&bytes, &SCALED).expect("decodes");
    assert_eq!(scaled.decoded_size, (4000, 3000));
    assert_eq!(scaled.chw, exact.chw);
}

#[test]
fn jpegs_below_the_threshold_take_the_exact_path_byte_for_byte() {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    // Shorter side 1023 is one pixel short of 1/2 scale; 1000×4000 is tall but narrow.
    for (w, h) in [(500, 375), (1023, 1400), (1000, 4000)] {
        files.push((format!("{w}×{h}"), encode(&photo(w, h), BASELINE)));
    }
    let dirs = ["tests/fixtures/golden", "tests/fixtures/formats"];
    for dir in dirs {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&path).expect("fixture dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "jpg") {
                let bytes = std::fs::read(&path).expect("fixture reads");
                files.push((path.display().to_string(), bytes));
            }
        }
    }
    assert!(files.len() >= 8, "found {} files", files.len());
    for (name, bytes) in &files {
        let exact = preprocess(bytes, &EXACT).expect("decodes");
        let scaled = preprocess(bytes, &SCALED).expect("decodes");
        assert_eq!(scaled.decoded_size, exact.decoded_size, "{name}");
        assert_eq!(scaled.chw, exact.chw, "{name}");
    }
}

#[test]
fn the_rule_is_the_largest_power_of_two_keeping_512_pixels() {
    assert_eq!(jpeg_scale_denominator(500, 375), 1);
    assert_eq!(jpeg_scale_denominator(4000, 1023), 1);
    assert_eq!(jpeg_scale_denominator(1024, 768), 1);
    assert_eq!(jpeg_scale_denominator(2048, 1024), 2);
    assert_eq!(jpeg_scale_denominator(4000, 3000), 4);
    assert_eq!(jpeg_scale_denominator(3000, 4000), 4);
    assert_eq!(jpeg_scale_denominator(6000, 4000), 4);
    assert_eq!(jpeg_scale_denominator(6324, 6324), 8);
}

/// Writes `height` and `width` into the SOF0 segment of `jpeg` (T.81 §B.2.2: after the
/// marker, length (2), precision (1), then Y (2) and X (2), big-endian).
fn patch_size(jpeg: &mut [u8], width: u16, height: u16) {
    let sof = jpeg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("baseline SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
}

#[test]
fn a_jpeg_bomb_is_refused_from_its_header_on_the_scaled_path() {
    // A small file whose header claims 8000×6000 = 48 MP, over the 40 MP default.
    let mut bytes = encode(&photo(64, 48), BASELINE);
    patch_size(&mut bytes, 8000, 6000);
    let (result, largest) = largest_allocation(|| preprocess(&bytes, &SCALED));
    match result {
        Err(PreprocessError::TooManyPixels {
            width: 8000,
            height: 6000,
            ..
        }) => {}
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
    eprintln!("largest allocation while refusing an 8000×6000 JPEG header: {largest} bytes");
    assert!(largest < 1 << 20, "allocated {largest} bytes");
}

#[test]
fn a_truncated_big_jpeg_is_refused_on_the_scaled_path() {
    let bytes = encode(photo_4000x3000(), BASELINE);
    let half = &bytes[..bytes.len() / 2];
    assert!(matches!(
        preprocess(half, &SCALED),
        Err(PreprocessError::Corrupt(_))
    ));
}
