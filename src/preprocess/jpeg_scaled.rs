//! Large JPEGs decoded at 1/2, 1/4 or 1/8 of their size by a reduced-size inverse DCT.
//!
//! TorchVision's transform resizes the shorter side to 256 and keeps a 224×224 crop, so a
//! 12 MP photo is decoded in full only to be averaged down ~12× by the resampler. A JPEG
//! stores 8×8 blocks of DCT coefficients; an `N×N` inverse DCT of the low-frequency
//! `N×N` corner of each block (N = 4, 2, 1) yields the image at `N/8` scale directly, with
//! a fraction of the entropy-independent work (IDCT, upsampling, colour conversion) and of
//! the memory. libjpeg's `scale_num/scale_denom` (Pillow's `Image.draft`) does the same.
//!
//! **Decoder choice.** The `image` crate decodes JPEG with `zune-jpeg` 0.5, which has no
//! scaled IDCT (its `idct_4x4` is a shortcut for sparse blocks that still outputs 8×8).
//! `jpeg-decoder` 0.3 (pure Rust, MIT/Apache-2.0, maintained by the image-rs organisation
//! that also maintains `image`) has `Decoder::scale`, implemented with 1×1, 2×2 and 4×4
//! IDCTs for baseline and progressive files, and outputs gray, RGB or CMYK. Its `rayon`
//! feature runs components on rayon's global pool, the pool the server already sizes to
//! the instance's vCPUs, so it adds no threads of its own.
//!
//! **Rule** ([`denominator`]): the largest of 8, 4, 2 whose scaled shorter side still spans
//! ≥ 2 × 256 = 512 source pixels, so the antialiased bilinear resize that follows still
//! averages ≥ 2 decoded pixels per output pixel on each axis. Anything smaller is decoded
//! exactly, as before: every parity fixture is below that size.
//!
//! **What is not scaled** (decoded exactly instead, never refused here): four-component
//! (CMYK/YCCK) files, since decoders disagree on when their samples are inverted (Adobe
//! APP14 or not) and such files are rare outside print; 12/16-bit files; anything
//! `jpeg-decoder` cannot read or reads to an unexpected size. The exact path then gives
//! the same result or the same error as with `--exact-jpeg`.

use std::io::Read;

use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::{Decoder, PixelFormat};

use super::RESIZE_SHORTER;

/// Decoded pixels per resized pixel, at least, along the shorter side.
const MIN_OVERSAMPLING: u32 = 2;

/// The DCT scale denominator (1, 2, 4 or 8) for a `width × height` JPEG: the largest `d`
/// with `min(width, height) / d ≥ 2 · 256`, else 1 (decode exactly).
pub fn denominator(width: u32, height: u32) -> u32 {
    let short = u64::from(width.min(height));
    let needed = u64::from(scale_from());
    [8u32, 4, 2]
        .into_iter()
        .find(|&d| short >= needed * u64::from(d))
        .unwrap_or(1)
}

/// The shorter side (in decoded pixels) a scaled decode must keep: 2 × 256.
#[cfg(not(fuzzing))]
fn scale_from() -> u32 {
    MIN_OVERSAMPLING * RESIZE_SHORTER
}

/// Fuzz builds only: the value of [`fuzzing::JPEG_SCALE_FROM`], 2 × 256 unless a fuzz
/// target lowers it.
#[cfg(fuzzing)]
fn scale_from() -> u32 {
    fuzzing::JPEG_SCALE_FROM.load(std::sync::atomic::Ordering::Relaxed)
}

/// Hooks for the cargo-fuzz targets (compiled only with `--cfg fuzzing`, which cargo-fuzz
/// sets): the `jpeg_scaled` target lowers the size from which JPEGs are decoded at reduced
/// scale, so that small, fast inputs take this path. Under AddressSanitizer with
/// comparison tracing, one 1024-px JPEG (the smallest the product scales) takes 6–37 s,
/// which is no fuzzing campaign.
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::sync::atomic::AtomicU32;

    /// The shorter side from which a scaled decode is chosen, divided by the denominator;
    /// see [`super::denominator`].
    pub static JPEG_SCALE_FROM: AtomicU32 =
        AtomicU32::new(super::MIN_OVERSAMPLING * super::RESIZE_SHORTER);
}

/// A JPEG decoded at `1/denominator` of its stored size.
pub(crate) struct Scaled {
    /// Gray or RGB pixels, `⌈width / d⌉ × ⌈height / d⌉`.
    pub image: DynamicImage,
    /// The `d` used (2, 4 or 8).
    pub denominator: u32,
}

/// Decodes the JPEG read from `reader`, whose header declares `width × height` (already
/// checked against the limits), at reduced scale when [`denominator`] says so. `None` means:
/// decode it exactly (small image, unsupported variant, or `jpeg-decoder` failed, which
/// includes the reader failing because the request was cancelled; the caller checks that).
pub(crate) fn decode(reader: impl Read, (width, height): (u32, u32)) -> Option<Scaled> {
    let denominator = denominator(width, height);
    if denominator == 1 {
        return None;
    }
    let (scaled_w, scaled_h) = (width.div_ceil(denominator), height.div_ceil(denominator));
    let mut decoder = Decoder::new(reader);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    if (u32::from(info.width), u32::from(info.height)) != (width, height) {
        return None;
    }
    let channels = match info.pixel_format {
        PixelFormat::L8 => 1,
        PixelFormat::RGB24 => 3,
        PixelFormat::L16 | PixelFormat::CMYK32 => return None,
    };
    let requested = (u16::try_from(scaled_w).ok()?, u16::try_from(scaled_h).ok()?);
    if decoder.scale(requested.0, requested.1).ok()? != requested {
        return None;
    }
    decoder.set_max_decoding_buffer_size(scaled_w as usize * scaled_h as usize * channels);
    let pixels = decoder.decode().ok()?;
    let image = match channels {
        1 => DynamicImage::ImageLuma8(GrayImage::from_raw(scaled_w, scaled_h, pixels)?),
        _ => DynamicImage::ImageRgb8(RgbImage::from_raw(scaled_w, scaled_h, pixels)?),
    };
    Some(Scaled { image, denominator })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denominator_keeps_the_shorter_side_at_least_512() {
        // (width, height, expected d): the boundaries are short side = 512·d.
        for (w, h, d) in [
            (500, 375, 1),
            (1023, 4000, 1),
            (4000, 1024, 2),
            (2047, 3000, 2),
            (2048, 2048, 4),
            (4000, 3000, 4),
            (3000, 4000, 4),
            (4095, 9000, 4),
            (4096, 4096, 8),
            (6324, 6324, 8),
            (40000, 1000, 1),
        ] {
            assert_eq!(denominator(w, h), d, "{w}×{h}");
        }
    }

    #[test]
    fn garbage_is_left_to_the_exact_path() {
        assert!(decode(&b"\xFF\xD8not really a jpeg"[..], (4000, 3000)).is_none());
    }

    #[test]
    fn small_images_are_not_scaled() {
        // The size check comes first: these bytes are never parsed.
        assert!(decode(&b""[..], (1000, 1000)).is_none());
    }
}
