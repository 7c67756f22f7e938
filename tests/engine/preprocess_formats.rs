//! Preprocessing parity with TorchVision-on-PIL for every decoder path, and the limits.
//!
//! Fixtures: `tests/fixtures/formats/NAME.EXT` with `NAME.expected.png`, the 224×224 crop
//! Pillow + TorchVision's `Resize(256)`/`CenterCrop(224)` made of it
//! (`tools/preprocess/make_format_fixtures.py`, Pillow 13.0 / libjpeg-turbo 3.2 / libwebp 1.6).
//! Acceptance: lossless inputs within one 8-bit level on ≥ 99.9 % of tensor
//! elements; lossy ones (JPEG, lossy WebP) mean absolute difference ≤ 0.5 level.

use std::path::{Path, PathBuf};

use resnet18_fc::preprocess::{
    INPUT_SIZE, Limits, MEAN, PreprocessError, STD, TENSOR_LEN, decode_rgb, normalize_hwc,
    preprocess,
};

// ------------------------------------------------------------------ allocation probe

use crate::largest_allocation::largest_allocation;

// ------------------------------------------------------------------ fixtures

#[derive(Debug, Clone, Copy, PartialEq)]
enum Codec {
    Lossless,
    Lossy,
}

/// Every fixture the generator makes (the generator's MANIFEST.json must list the same).
const FIXTURES: [(&str, Codec); 22] = [
    ("jpeg_baseline.jpg", Codec::Lossy),
    ("jpeg_progressive.jpg", Codec::Lossy),
    ("jpeg_gray.jpg", Codec::Lossy),
    ("jpeg_cmyk.jpg", Codec::Lossy),
    ("jpeg_exif_orientation6.jpg", Codec::Lossy),
    ("png_rgb.png", Codec::Lossless),
    ("png_rgba.png", Codec::Lossless),
    ("png_la.png", Codec::Lossless),
    ("png_l.png", Codec::Lossless),
    ("png_palette.png", Codec::Lossless),
    ("png_palette_trns.png", Codec::Lossless),
    ("png_gray16.png", Codec::Lossless),
    ("png_gray16_trns.png", Codec::Lossless),
    ("png_rgb48.png", Codec::Lossless),
    ("webp_lossless.webp", Codec::Lossless),
    ("webp_lossy.webp", Codec::Lossy),
    ("gif_animated.gif", Codec::Lossless),
    ("bmp_rgb.bmp", Codec::Lossless),
    ("tiff_rgb.tiff", Codec::Lossless),
    ("small_100x80.png", Codec::Lossless),
    ("elongated_4000x30.png", Codec::Lossless),
    ("exact_341x256.png", Codec::Lossless),
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The normalised tensor of the PIL reference crop of fixture `name`.
fn reference(name: &str) -> Vec<f32> {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let png = read(&format!("{stem}.expected.png"));
    let crop = image::load_from_memory(&png).expect("reference PNG decodes");
    let crop = crop.as_rgb8().expect("reference PNG is 8-bit RGB");
    assert_eq!(crop.dimensions(), (INPUT_SIZE as u32, INPUT_SIZE as u32));
    normalize_hwc(crop.as_raw())
}

/// Differences between two CHW tensors, in 8-bit levels (`|Δ| · std · 255`).
#[derive(Debug)]
struct Diff {
    identical: f64,
    within_one: f64,
    mean: f64,
    max: f64,
}

fn diff(ours: &[f32], theirs: &[f32]) -> Diff {
    assert_eq!(ours.len(), TENSOR_LEN);
    assert_eq!(theirs.len(), TENSOR_LEN);
    let plane = INPUT_SIZE * INPUT_SIZE;
    let (mut identical, mut within_one, mut sum, mut max) = (0usize, 0usize, 0f64, 0f64);
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let levels = f64::from((a - b).abs() * STD[i / plane] * 255.0);
        identical += usize::from(a == b);
        // A tolerance far below one level absorbs the f32 rounding of the level size.
        within_one += usize::from(levels <= 1.0 + 1e-3);
        sum += levels;
        max = max.max(levels);
    }
    let n = TENSOR_LEN as f64;
    Diff {
        identical: identical as f64 / n,
        within_one: within_one as f64 / n,
        mean: sum / n,
        max,
    }
}

fn compare(name: &str) -> Diff {
    let ours = preprocess(&read(name), &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .chw;
    let d = diff(&ours, &reference(name));
    eprintln!(
        "{name:28} identical {:7.3} %  within 1 level {:7.3} %  mean {:.4}  max {:.2} levels",
        100.0 * d.identical,
        100.0 * d.within_one,
        d.mean,
        d.max
    );
    d
}

// ------------------------------------------------------------------ parity

/// Compares every fixture of `codec` and lists those for which `fails` holds.
fn failures(codec: Codec, fails: impl Fn(&Diff) -> bool) -> Vec<String> {
    FIXTURES
        .iter()
        .filter(|(_, c)| *c == codec)
        .filter_map(|(name, _)| {
            let d = compare(name);
            fails(&d).then(|| format!("{name}: {d:?}"))
        })
        .collect()
}

#[test]
fn lossless_formats_match_pil_within_one_level_on_999_per_mille() {
    let failed = failures(Codec::Lossless, |d| d.within_one < 0.999);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn lossless_formats_are_byte_exact_with_pil() {
    // Stronger than the acceptance: the same resampler arithmetic gives the same bytes.
    let failed = failures(Codec::Lossless, |d| d.identical < 1.0);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn lossy_formats_stay_within_half_a_level_on_average() {
    let failed = failures(Codec::Lossy, |d| d.mean > 0.5);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn exif_orientation_6_is_applied_like_exif_transpose() {
    let bytes = read("jpeg_exif_orientation6.jpg");
    // Stored 400×300 with orientation 6 (rotate 90° clockwise to display): 300×400.
    let upright = decode_rgb(&bytes, &Limits::default()).expect("decodes");
    assert_eq!(upright.dimensions(), (300, 400));
    // The reference is the crop of `ImageOps.exif_transpose(img)`; the crop of the stored
    // (sideways) pixels would be a different picture.
    let d = compare("jpeg_exif_orientation6.jpg");
    assert!(d.mean <= 0.5, "{d:?}");
    let sideways = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
    assert_eq!(sideways.dimensions(), (400, 300));
}

#[test]
fn every_fixture_file_is_tested_and_listed_in_the_manifest() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("MANIFEST.json")).expect("MANIFEST.json parses");
    let listed: Vec<&str> = manifest["fixtures"]
        .as_array()
        .expect("fixtures array")
        .iter()
        .filter_map(|f| f["file"].as_str())
        .collect();
    let tested: Vec<&str> = FIXTURES.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, tested);
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        let is_reference = name.ends_with(".expected.png") || name == "MANIFEST.json";
        assert!(
            is_reference || tested.contains(&&*name),
            "untested fixture {name}"
        );
    }
    for (entry, (_, codec)) in manifest["fixtures"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(FIXTURES)
    {
        assert_eq!(
            entry["lossy"].as_bool(),
            Some(codec == Codec::Lossy),
            "{entry}"
        );
    }
}

#[test]
fn sixteen_bit_gray_is_clipped_not_scaled() {
    // The fixture spans 0..600: Pillow's I;16 → RGB clips at 255, so the crop has both
    // saturated white and mid-gray pixels; scaling (v / 257) would make it nearly black.
    let rgb = decode_rgb(&read("png_gray16.png"), &Limits::default()).expect("decodes");
    let white = rgb.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    let mid = rgb.pixels().filter(|p| (64..192).contains(&p.0[0])).count();
    assert!(white > 1000 && mid > 1000, "white {white}, mid {mid}");
}

#[test]
fn normalisation_constants_are_torchvision_s() {
    assert_eq!(MEAN, [0.485, 0.456, 0.406]);
    assert_eq!(STD, [0.229, 0.224, 0.225]);
}

// ------------------------------------------------------------------ limits and errors

/// A PNG of just a signature, an IHDR chunk declaring `width × height` 8-bit RGB and an
/// empty IDAT chunk (the decoder reads the header up to the first IDAT): no pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::from(*b"IHDR");
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = Vec::from(*b"\x89PNG\r\n\x1a\n");
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png.extend(0u32.to_be_bytes());
    png.extend(b"IDAT");
    png.extend(crc32(b"IDAT").to_be_bytes());
    png
}

/// CRC-32 (ISO-HDLC, the PNG chunk CRC), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32_matches_the_known_check_value() {
    // The standard check value of CRC-32/ISO-HDLC over "123456789".
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn a_huge_header_is_refused_before_any_pixel_is_allocated() {
    let png = png_header_only(100_000, 100_000);
    let (result, largest) = largest_allocation(|| preprocess(&png, &Limits::default()));
    match result {
        Err(PreprocessError::TooManyPixels {
            width: 100_000,
            height: 100_000,
            pixels: 10_000_000_000,
            limit: 40_000_000,
        }) => {}
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
    eprintln!("largest allocation while refusing a 100000×100000 header: {largest} bytes");
    assert!(largest < 1 << 20, "allocated {largest} bytes");
}

#[test]
fn the_pixel_limit_is_configurable() {
    let limits = Limits {
        max_pixels: 10_000,
        ..Limits::default()
    };
    let err = preprocess(&read("png_rgb.png"), &limits).expect_err("480×360 > 10 000 pixels");
    assert!(matches!(
        err,
        PreprocessError::TooManyPixels {
            width: 480,
            height: 360,
            ..
        }
    ));
}

/// A GIF whose 16×16 screen holds one `frame × frame` frame (an empty LZW stream).
fn gif_with_oversized_frame(frame: u16) -> Vec<u8> {
    let mut gif = Vec::from(*b"GIF89a");
    gif.extend(16u16.to_le_bytes());
    gif.extend(16u16.to_le_bytes());
    gif.extend([0x80, 0, 0]); // global colour table of 2 entries
    gif.extend([0, 0, 0, 255, 255, 255]);
    gif.push(0x2C); // image descriptor
    gif.extend([0, 0, 0, 0]);
    gif.extend(frame.to_le_bytes());
    gif.extend(frame.to_le_bytes());
    gif.push(0);
    // LZW minimum code size 2: clear (4) then end (5), 3-bit codes, LSB first.
    gif.extend([2, 1, 0b0010_1100, 0, 0x3B]);
    gif
}

#[test]
fn a_body_larger_than_its_header_cannot_allocate_past_the_budget() {
    // 2100×2100 RGBA = 17.6 MB: under the image crate's own 512 MiB default, over our
    // budget for a 16×16 image (1 KiB output + 2 KiB work + 16 MiB).
    let gif = gif_with_oversized_frame(2100);
    let (result, largest) = largest_allocation(|| preprocess(&gif, &Limits::default()));
    eprintln!("oversized GIF frame: {result:?}, largest allocation {largest} bytes");
    assert!(
        matches!(result, Err(PreprocessError::Corrupt(_))),
        "{result:?}"
    );
    assert!(largest < 4 << 20, "allocated {largest} bytes");
}

#[test]
fn a_very_elongated_image_never_materialises_its_resize() {
    // 20000×2: torchvision would resize to 2 560 000×256 (1.9 GB of RGB) and crop.
    let strip = image::RgbImage::from_fn(20_000, 2, |x, y| {
        image::Rgb([(x % 251) as u8, (y * 100) as u8, (x / 100 % 256) as u8])
    });
    let mut png = Vec::new();
    strip
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encodes");
    let (result, largest) = largest_allocation(|| preprocess(&png, &Limits::default()));
    let tensor = result.expect("preprocesses");
    assert_eq!(tensor.chw.len(), TENSOR_LEN);
    eprintln!("20000×2 strip: largest allocation {largest} bytes");
    // The decoded strip itself is 120 000 bytes; the tensor 602 112.
    assert!(largest < 1 << 20, "allocated {largest} bytes");
}

#[test]
fn a_truncated_png_is_corrupt() {
    let bytes = read("png_rgb.png");
    let half = &bytes[..bytes.len() / 2];
    let result = preprocess(half, &Limits::default());
    assert!(
        matches!(result, Err(PreprocessError::Corrupt(_))),
        "{result:?}"
    );
}

#[test]
fn a_truncated_jpeg_is_corrupt_as_in_pil() {
    // PIL raises "image file is truncated" for these; zune-jpeg alone would fill with gray.
    for name in ["jpeg_baseline.jpg", "jpeg_progressive.jpg"] {
        let bytes = read(name);
        for keep in [bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
            let result = preprocess(&bytes[..keep], &Limits::default());
            assert!(
                matches!(result, Err(PreprocessError::Corrupt(_))),
                "{name} cut to {keep}: {result:?}"
            );
        }
    }
}

#[test]
fn bytes_after_a_jpeg_s_end_are_ignored() {
    let mut bytes = read("jpeg_baseline.jpg");
    let clean = preprocess(&bytes, &Limits::default()).expect("decodes").chw;
    bytes.extend(b"some camera appends its own data here");
    let padded = preprocess(&bytes, &Limits::default())
        .expect("still decodes")
        .chw;
    assert_eq!(clean, padded);
}

#[test]
fn a_truncated_gif_is_corrupt() {
    let bytes = read("gif_animated.gif");
    let result = preprocess(&bytes[..bytes.len() / 3], &Limits::default());
    assert!(
        matches!(result, Err(PreprocessError::Corrupt(_))),
        "{result:?}"
    );
}

#[test]
fn garbage_is_an_unsupported_format() {
    let result = preprocess(
        b"GET / HTTP/1.1\r\n\r\nnot an image at all",
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(PreprocessError::UnsupportedFormat)),
        "{result:?}"
    );
}

#[test]
fn formats_outside_the_list_are_refused_even_if_decodable() {
    // A valid 1×1 binary PPM: the image crate reads it, PIL too, but it is not a photo
    // format we accept.
    let result = preprocess(b"P6\n1 1\n255\n\x01\x02\x03", &Limits::default());
    assert!(
        matches!(result, Err(PreprocessError::UnsupportedFormat)),
        "{result:?}"
    );
}

#[test]
fn empty_input_is_empty() {
    assert!(matches!(
        preprocess(&[], &Limits::default()),
        Err(PreprocessError::Empty)
    ));
}
