//! Image bytes → normalised `3×224×224` tensor data, as TorchVision's classic ImageNet
//! evaluation transform does on a PIL image:
//! `Resize(256)` (shorter side, antialiased bilinear) → `CenterCrop(224)` → `ToTensor()` →
//! `Normalize(mean, std)`.
//!
//! The only deliberate difference from TorchVision: the EXIF orientation tag is applied after
//! decoding (phone photos would otherwise be classified sideways).
//!
//! Only the 224×224 window that survives the centre crop is ever resized: the resize is run with
//! a source crop box equal to the pre-image of the crop window, which gives the same pixels as
//! resizing the whole image and cropping, and bounds the intermediate buffer to 224×224 whatever
//! the aspect ratio.
//!
//! This module knows nothing about the model or HTTP.

use std::io::Cursor;
use std::time::{Duration, Instant};

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader};

/// Side of the square network input.
pub const INPUT_SIZE: usize = 224;
/// Length the shorter side is resized to before the centre crop.
pub const RESIZE_SHORTER: u32 = 256;
/// Per-channel mean of `Normalize`, as the f32 values torchvision uses.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of `Normalize`.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Number of f32 values in one preprocessed image (`3 × 224 × 224`).
pub const TENSOR_LEN: usize = 3 * INPUT_SIZE * INPUT_SIZE;

/// Bounds applied before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width × height` accepted, read from the image header before decoding.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 40_000_000,
        }
    }
}

/// Why an image could not be turned into a tensor.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// No bytes at all.
    #[error("the image is empty")]
    Empty,
    /// The bytes are not in a format we decode.
    #[error("unsupported image format; send JPEG, PNG, WebP, GIF, BMP or TIFF")]
    UnsupportedFormat,
    /// The header declares more pixels than [`Limits::max_pixels`].
    #[error("image is {width}×{height} = {pixels} pixels, more than the limit of {limit}")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// `width × height`.
        pixels: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The format was recognised but the data is corrupt or truncated.
    #[error("cannot decode image: {0}")]
    Corrupt(String),
}

/// A preprocessed image with the time each stage took.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `3×224×224` values, channel-major (CHW), normalised.
    pub chw: Vec<f32>,
    /// Time spent decoding the file.
    pub decode: Duration,
    /// Time spent converting, resizing, cropping and normalising.
    pub transform: Duration,
}

/// Decodes `bytes` and applies the TorchVision evaluation transform.
pub fn preprocess(bytes: &[u8], limits: &Limits) -> Result<Preprocessed, PreprocessError> {
    let started = Instant::now();
    let rgb = decode_rgb(bytes, limits)?;
    let decode = started.elapsed();
    let started = Instant::now();
    let crop = resize_and_crop(&rgb)?;
    let chw = normalize_hwc(&crop);
    Ok(Preprocessed {
        chw,
        decode,
        transform: started.elapsed(),
    })
}

/// Decodes to 8-bit RGB with the EXIF orientation applied, refusing oversized images before
/// their pixels are allocated.
pub fn decode_rgb(bytes: &[u8], limits: &Limits) -> Result<image::RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(PreprocessError::UnsupportedFormat);
    }
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(PreprocessError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(map_image_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

fn map_image_error(e: image::ImageError) -> PreprocessError {
    match e {
        image::ImageError::Unsupported(_) => PreprocessError::UnsupportedFormat,
        other => PreprocessError::Corrupt(other.to_string()),
    }
}

/// Size after `Resize(256)`: the shorter side becomes 256 and the longer side
/// `int(256 · long / short)` (torchvision truncates).
pub fn resized_size(width: u32, height: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(RESIZE_SHORTER) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (RESIZE_SHORTER, new_long)
    } else {
        (new_long, RESIZE_SHORTER)
    }
}

/// Top-left corner of `CenterCrop(224)` in an image of the given size:
/// `int(round((size − 224) / 2))` with Python's round-half-to-even.
pub fn crop_offset(resized: u32) -> u32 {
    ((f64::from(resized) - INPUT_SIZE as f64) / 2.0).round_ties_even() as u32
}

/// Resizes (antialiased bilinear, as PIL) and centre-crops to a 224×224 RGB buffer (HWC).
fn resize_and_crop(rgb: &image::RgbImage) -> Result<Vec<u8>, PreprocessError> {
    let (width, height) = rgb.dimensions();
    let (rw, rh) = resized_size(width, height);
    let scale_x = f64::from(width) / f64::from(rw);
    let scale_y = f64::from(height) / f64::from(rh);
    let side = INPUT_SIZE as f64;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(
            f64::from(crop_offset(rw)) * scale_x,
            f64::from(crop_offset(rh)) * scale_y,
            side * scale_x,
            side * scale_y,
        );
    let src = Image::from_vec_u8(width, height, rgb.as_raw().clone(), PixelType::U8x3)
        .map_err(|e| PreprocessError::Corrupt(e.to_string()))?;
    let mut dst = Image::new(INPUT_SIZE as u32, INPUT_SIZE as u32, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| PreprocessError::Corrupt(e.to_string()))?;
    Ok(dst.into_vec())
}

/// `ToTensor()` + `Normalize()` on a 224×224 HWC RGB buffer, producing CHW f32 with the same
/// f32 operations as torchvision (`x / 255`, then `(x − mean) / std`).
pub fn normalize_hwc(hwc: &[u8]) -> Vec<f32> {
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut chw = vec![0f32; 3 * plane];
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    chw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_aspect_and_truncates_like_torchvision() {
        // 500×375: long = int(256·500/375) = int(341.33) = 341.
        assert_eq!(resized_size(500, 375), (341, 256));
        assert_eq!(resized_size(375, 500), (256, 341));
        assert_eq!(resized_size(100, 100), (256, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(crop_offset(256), 16);
        // (341 − 224) / 2 = 58.5 → 58 (banker's rounding), not 59.
        assert_eq!(crop_offset(341), 58);
        // (343 − 224) / 2 = 59.5 → 60.
        assert_eq!(crop_offset(343), 60);
    }

    #[test]
    fn normalize_maps_extremes_to_expected_values() {
        let mut hwc = vec![0u8; INPUT_SIZE * INPUT_SIZE * 3];
        hwc[0] = 255;
        let chw = normalize_hwc(&hwc);
        assert!((chw[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((chw[INPUT_SIZE * INPUT_SIZE] - (-0.456 / 0.224)).abs() < 1e-6);
    }

    #[test]
    fn empty_and_garbage_bytes_are_rejected() {
        let limits = Limits::default();
        assert!(matches!(
            preprocess(&[], &limits),
            Err(PreprocessError::Empty)
        ));
        assert!(matches!(
            preprocess(b"definitely not an image", &limits),
            Err(PreprocessError::UnsupportedFormat)
        ));
    }
}
