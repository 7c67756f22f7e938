//! The tests' stand-in for a camera photo: the golden fixture `chelsea.jpg` resized, with
//! grain and texture so JPEG encoders work as hard as on a real photo. Also used by
//! `benches/big_jpeg.rs` (`#[path]`), so benchmark and tests measure the same pictures.

use image::{RgbImage, imageops};

/// A deterministic hash of `(x, y, salt)` to `0..=255` (SplitMix64 finaliser).
fn hash(x: u32, y: u32, salt: u64) -> u8 {
    let mut z = (u64::from(x) << 32 | u64::from(y)) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u8
}

/// The chelsea fixture resized to `width × height`, plus ±8 levels of per-pixel grain
/// and ±12 levels of 4×4-pixel texture.
pub fn photo(width: u32, height: u32) -> RgbImage {
    let fixture = image::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden/chelsea.jpg"
    ))
    .expect("chelsea fixture decodes")
    .to_rgb8();
    let mut img = imageops::resize(&fixture, width, height, imageops::FilterType::Triangle);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let grain = i32::from(hash(x, y, 1)) / 16 - 8;
        let texture = i32::from(hash(x / 4, y / 4, 2)) * 24 / 256 - 12;
        for c in &mut px.0 {
            *c = (i32::from(*c) + grain + texture).clamp(0, 255) as u8;
        }
    }
    img
}
