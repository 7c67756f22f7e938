//! Image bytes → normalised `3×224×224` tensor data, exactly as TorchVision's classic
//! ImageNet evaluation transform does on a PIL image:
//! `Image.open(f).convert("RGB")` → `Resize(256)` (shorter side, PIL's antialiased bilinear)
//! → `CenterCrop(224)` → `ToTensor()` → `Normalize(mean, std)`.
//!
//! * **Decode** (`decode` submodule): JPEG, PNG, WebP, GIF (first frame), BMP, TIFF, within
//!   the budget of [`Limits`]: the declared size, the decoded bytes and a JPEG's scan count
//!   are checked from the container (`container` submodule) before any pixel buffer
//!   exists; colour profiles and text chunks, which `convert("RGB")` never uses, are hidden
//!   from the decoders; the decoder gets an `image::Limits::max_alloc` budget and reads
//!   through a reader that stops it when the request's [`Cancel`] token fires (`cancel`
//!   submodule). Concurrent decodes share a [`DecodeMemory`] (`memory` submodule), in
//!   which each reserves [`memory_bound`] first.
//! * **To RGB** (`pixels` submodule): PIL's `convert("RGB")` rules per mode (gray, palette,
//!   alpha dropped without compositing, CMYK, 16-bit clip / high byte), documented there
//!   with their Pillow source. No converted copy of the image is made: rows are converted as
//!   the resampler reads them.
//! * **Resize + crop** (`resample` submodule): PIL's own two-pass fixed-point bilinear
//!   convolution, evaluated only on the 224×224 window that survives the crop, which gives
//!   the same bytes as resizing everything and cropping. The output size follows
//!   torchvision's `_compute_resized_output_size` and the crop offset its `center_crop`.
//!
//! Parity: on lossless inputs the 224×224 crop equals Pillow 13's byte for byte (fixtures in
//! `tests/fixtures/formats/`, made by `tools/preprocess/make_format_fixtures.py`); JPEG and
//! lossy WebP differ only by the decoders (zune-jpeg vs libjpeg-turbo, image-webp vs libwebp).
//!
//! Big JPEGs: unless [`Limits::exact_jpeg`], a JPEG whose shorter side is ≥ 1024 is decoded
//! at 1/2, 1/4 or 1/8 scale by a reduced inverse DCT (`jpeg_scaled` submodule, rule in
//! [`jpeg_scale_denominator`]) and resized from there, mapped onto the same geometry as the
//! full-size resize. That trades exactness (a few levels, README "Big JPEGs") for a 12 MP
//! photo costing about what a 1 MP one does. Smaller JPEGs, and every other format, take
//! the exact path.
//!
//! One deliberate difference from TorchVision: the EXIF orientation is applied
//! (as `PIL.ImageOps.exif_transpose` would), since phone photos would otherwise be
//! classified sideways. It costs nothing: the orientation is a change of coordinates in the
//! row reader, not a rotated copy.
//!
//! Memory: the decoded image (one buffer, in its stored sample type, at most
//! [`Limits::max_decoded_bytes`] with a progressive JPEG's coefficients) plus an intermediate
//! of at most `(224·s + 2·⌈max(s, 1)⌉ + 1) × 224 × 3` bytes, where `s` is the vertical
//! scale factor (≈ shorter side / 256): 3.56 MiB for 6324×6324, the largest square under
//! the default 40 MP limit. This holds whatever the aspect ratio: a 40000×1 strip resizes
//! a 224×224 window of its 10 240 000×256 virtual resize, never the whole.
//!
//! This module knows nothing about the model or HTTP.

mod cancel;
mod container;
mod decode;
mod jpeg_scaled;
mod memory;
#[cfg(fuzzing)]
pub use jpeg_scaled::fuzzing;
mod pixels;
mod resample;

use std::time::{Duration, Instant};

pub use cancel::{Cancel, CancelOnDrop, Interrupted};
pub use memory::{DecodeMemory, Reservation};
use pixels::RgbView;
use resample::Window;

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

/// The budget of one image, checked before any pixel is decoded (README "Limits"). Exceeding
/// any of them is [`PreprocessError::TooManyPixels`] or [`PreprocessError::OverBudget`]
/// (413 `image_too_large` on the server). The compressed size is bounded before this, by the
/// server's body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width × height` accepted, read from the image header before decoding.
    pub max_pixels: u64,
    /// Largest memory a decode may hold, in bytes: the decoded pixels in their stored sample
    /// type (plus the DCT coefficients a progressive JPEG keeps until its last scan). The
    /// default, 3 × `max_pixels`, lets 8-bit RGB images reach the pixel limit while 16-bit
    /// and alpha images, which take more bytes per pixel, stop earlier.
    pub max_decoded_bytes: u64,
    /// Most scans a JPEG may have (decoder work: each progressive scan is a pass over the
    /// whole image). The default, 100, is zune-jpeg's own limit; an ordinary progressive
    /// JPEG has about 10.
    pub max_jpeg_scans: u64,
    /// Decode every JPEG at full size, as Pillow does (bit-exact with TorchVision up to the
    /// decoder). `false` (the default) decodes JPEGs whose shorter side is ≥ 1024 at 1/2,
    /// 1/4 or 1/8 scale ([`jpeg_scale_denominator`]): a 12 MP photo then costs about as
    /// much as a 1 MP one, for a tensor within a few levels of the exact one (README,
    /// "Big JPEGs").
    pub exact_jpeg: bool,
}

impl Limits {
    /// The defaults: 40 MP, 120 MB decoded, 100 JPEG scans, reduced-size big JPEGs. Usable
    /// in `const` items (`Limits { max_pixels: 1000, ..Limits::DEFAULT }`).
    pub const DEFAULT: Self = Self {
        max_pixels: 40_000_000,
        max_decoded_bytes: 120_000_000,
        max_jpeg_scans: 100,
        exact_jpeg: false,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The DCT scale denominator (1, 2, 4 or 8) a `width × height` JPEG is decoded at unless
/// [`Limits::exact_jpeg`]: the largest that keeps ≥ 512 decoded pixels (2 × the resize
/// target) along the shorter side; 1 means full size.
pub fn jpeg_scale_denominator(width: u32, height: u32) -> u32 {
    jpeg_scaled::denominator(width, height)
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
    /// Decoding would exceed a budget of [`Limits`] other than the pixel count: decoded
    /// bytes, JPEG scans, metadata chunks. The message names the limit.
    #[error("image is too costly to decode: {0}")]
    OverBudget(String),
    /// The format was recognised but the data is corrupt or truncated.
    #[error("cannot decode image: {0}")]
    Corrupt(String),
    /// The work was given up: the request was cancelled or its deadline passed ([`Cancel`]).
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

/// A preprocessed image with the time each stage took.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `3×224×224` values, channel-major (CHW), normalised.
    pub chw: Vec<f32>,
    /// Size of the decoded pixel buffer (stored orientation): the header's size, or
    /// `⌈size / d⌉` for a JPEG decoded at `1/d` scale.
    pub decoded_size: (u32, u32),
    /// Time spent decoding the file.
    pub decode: Duration,
    /// Time spent converting, resizing, cropping and normalising.
    pub transform: Duration,
}

/// Decodes `bytes` and applies the TorchVision evaluation transform.
pub fn preprocess(bytes: &[u8], limits: &Limits) -> Result<Preprocessed, PreprocessError> {
    preprocess_until(bytes, limits, &Cancel::never())
}

/// [`preprocess`], given up with [`PreprocessError::Interrupted`] once `cancel` fires: the
/// decoders read their input through a reader that checks it, and it is checked again
/// between decoding and resizing.
pub fn preprocess_until(
    bytes: &[u8],
    limits: &Limits,
    cancel: &Cancel,
) -> Result<Preprocessed, PreprocessError> {
    let started = Instant::now();
    let decoded = decode::decode(bytes, limits, cancel)?;
    let decode = started.elapsed();
    cancel.check()?;
    let started = Instant::now();
    let crop = resize_and_crop(&decoded)?;
    let chw = normalize_hwc(&crop);
    Ok(Preprocessed {
        chw,
        decoded_size: (decoded.image.width(), decoded.image.height()),
        decode,
        transform: started.elapsed(),
    })
}

/// An upper bound of the bytes [`preprocess`] will hold while decoding `bytes`, from the
/// container alone (no decoding), at most `limits.max_decoded_bytes`: what to reserve in a
/// [`DecodeMemory`] before decoding.
pub fn memory_bound(bytes: &[u8], limits: &Limits) -> u64 {
    memory::memory_bound(bytes, limits)
}

/// Decodes `bytes` to the full 8-bit RGB image PIL's `convert("RGB")` would give, with the
/// EXIF orientation applied. [`preprocess`] does not use it (it never materialises this
/// copy); it is for tools and tests that need the whole converted image. JPEGs are always
/// decoded at full size here, whatever `limits.exact_jpeg` says.
pub fn decode_rgb(bytes: &[u8], limits: &Limits) -> Result<image::RgbImage, PreprocessError> {
    let exact = Limits {
        exact_jpeg: true,
        ..*limits
    };
    let decoded = decode::decode(bytes, &exact, &Cancel::never())?;
    let view = rgb_view(&decoded)?;
    let (width, height) = (view.width(), view.height());
    let mut rgb = vec![0u8; width * height * 3];
    for (y, row) in rgb.chunks_exact_mut(width * 3).enumerate() {
        view.read_row(y, 0, row);
    }
    image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| PreprocessError::Corrupt("decoded size mismatch".into()))
}

fn rgb_view(decoded: &decode::Decoded) -> Result<RgbView<'_>, PreprocessError> {
    RgbView::new(&decoded.image, decoded.orientation, decoded.gray16_png)
        .map_err(|_| PreprocessError::UnsupportedFormat)
}

/// Size after `Resize(256)`: the shorter side becomes 256 and the longer side
/// `int(256 · long / short)` (torchvision's `_compute_resized_output_size` truncates).
/// `u64` because a very elongated image's virtual resize can exceed `u32`.
pub fn resized_size(width: u32, height: u32) -> (u64, u64) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python evaluates `256 * long / short` in f64; 256·long is exact there.
    let new_long = (f64::from(RESIZE_SHORTER) * f64::from(long) / f64::from(short)) as u64;
    let short_side = u64::from(RESIZE_SHORTER);
    if width <= height {
        (short_side, new_long)
    } else {
        (new_long, short_side)
    }
}

/// Top-left corner of `CenterCrop(224)` along an axis of the given resized length:
/// `int(round((size − 224) / 2))` with Python's round-half-to-even.
pub fn crop_offset(resized: u64) -> u64 {
    ((resized as f64 - INPUT_SIZE as f64) / 2.0).round_ties_even() as u64
}

/// Resizes (PIL's antialiased bilinear) and centre-crops to a 224×224 RGB buffer (HWC).
/// Output size and crop follow the image's full size even when it was decoded at `1/d`
/// scale, so both paths crop the same region of the picture.
fn resize_and_crop(decoded: &decode::Decoded) -> Result<Vec<u8>, PreprocessError> {
    let view = rgb_view(decoded)?;
    let (width, height) = match (decoded.denominator, decoded.full_size) {
        // The view's sides come from a `u32 × u32` image.
        (1, _) => (view.width() as u32, view.height() as u32),
        (_, (w, h)) if pixels::swaps_axes(decoded.orientation) => (h, w),
        (_, size) => size,
    };
    let (out_width, out_height) = resized_size(width, height);
    let scale = f64::from(decoded.denominator);
    let window = Window {
        extent_x: f64::from(width) / scale,
        extent_y: f64::from(height) / scale,
        out_width,
        out_height,
        x0: crop_offset(out_width),
        y0: crop_offset(out_height),
        width: INPUT_SIZE,
        height: INPUT_SIZE,
    };
    Ok(resample::resize_window(&view, window))
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

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image =
            image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("encode");
        out.into_inner()
    }

    #[test]
    fn a_cancelled_or_late_token_stops_preprocessing() {
        let png = png(64, 48);
        let limits = Limits::DEFAULT;
        assert!(preprocess_until(&png, &limits, &Cancel::never()).is_ok());
        let (cancel, guard) = Cancel::new(None);
        assert!(preprocess_until(&png, &limits, &cancel).is_ok());
        drop(guard);
        assert!(matches!(
            preprocess_until(&png, &limits, &cancel),
            Err(PreprocessError::Interrupted(Interrupted::Cancelled))
        ));
        let past = Instant::now().checked_sub(Duration::from_millis(1));
        let (late, _guard) = Cancel::new(past);
        assert!(matches!(
            preprocess_until(&png, &limits, &late),
            Err(PreprocessError::Interrupted(Interrupted::DeadlineExceeded))
        ));
    }

    #[test]
    fn the_decoded_bytes_limit_counts_the_stored_sample_type() {
        // 64×48 RGB = 9216 bytes decoded.
        let png = png(64, 48);
        let tight = Limits {
            max_decoded_bytes: 9216,
            ..Limits::DEFAULT
        };
        assert!(preprocess(&png, &tight).is_ok());
        let tighter = Limits {
            max_decoded_bytes: 9215,
            ..Limits::DEFAULT
        };
        assert!(matches!(
            preprocess(&png, &tighter),
            Err(PreprocessError::OverBudget(m)) if m.contains("9216 bytes")
        ));
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
