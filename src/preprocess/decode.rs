//! Bytes → decoded pixels, with the size checked from the header before any pixel buffer
//! is allocated and an allocation budget handed to the decoder.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::{Limits, PreprocessError, jpeg_scaled};

/// The formats we decode (TorchVision users send these; PIL opens them all).
/// Anything else the image crate could read (ICO, TGA, PNM, EXR, …) is refused.
pub(crate) const FORMATS: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Bytes a decoder may use for its own work beyond the output buffer, per pixel
/// (a progressive 4:4:4 CMYK JPEG keeps four `i16` coefficient planes) ...
const WORK_BYTES_PER_PIXEL: u64 = 8;
/// ... plus a fixed allowance for tables, palettes and metadata.
const WORK_BYTES_FIXED: u64 = 16 << 20;
/// Largest output sample size: RGBA with 16 bits per channel.
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// A decoded image, still in its stored layout and sample type.
pub(crate) struct Decoded {
    /// The pixels as the decoder produced them.
    pub image: DynamicImage,
    /// The EXIF orientation (applied later, by the view).
    pub orientation: Orientation,
    /// The file is a 16-bit gray PNG, which Pillow opens as `I;16` even with a `tRNS` chunk.
    pub gray16_png: bool,
    /// Width and height the header declares (stored orientation).
    pub full_size: (u32, u32),
    /// `image` holds the file at `1/denominator` of `full_size` (a JPEG decoded with a
    /// reduced IDCT, see [`super::jpeg_scaled`]); 1 for an exact decode.
    pub denominator: u32,
}

/// Decodes `bytes` if it is one of [`FORMATS`], refusing images of more than
/// `limits.max_pixels` pixels from the header alone. A large JPEG is decoded at reduced
/// scale unless `limits.exact_jpeg` ([`super::jpeg_scaled`]); the size check comes first
/// either way.
///
/// The decoder gets an `image::Limits::max_alloc` of the output buffer plus
/// `8 bytes × pixels + 16 MiB`, so a file whose body claims more than its header (a GIF
/// frame larger than its screen, a lying TIFF strip, a huge PNG text chunk) fails instead of
/// allocating. Before the header is read, the budget is the one of the largest image
/// `max_pixels` allows.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(PreprocessError::UnsupportedFormat)?;
    if !FORMATS.contains(&format) {
        return Err(PreprocessError::UnsupportedFormat);
    }
    if format == ImageFormat::Jpeg && !jpeg_reaches_eoi(bytes) {
        // zune-jpeg would fill the missing rows with gray; PIL (libjpeg) raises
        // "image file is truncated". We side with PIL.
        return Err(PreprocessError::Corrupt(
            "the JPEG data ends before its end-of-image marker (truncated file)".into(),
        ));
    }
    let largest = limits.max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL);
    reader.limits(budget(largest, limits.max_pixels));
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    let full_size = decoder.dimensions();
    let pixels = check_size(full_size, limits)?;
    let mut budget = budget(decoder.total_bytes(), pixels);
    budget
        .reserve(decoder.total_bytes())
        .map_err(map_image_error)?;
    decoder.set_limits(budget).map_err(map_image_error)?;
    let orientation = decoder.orientation().map_err(map_image_error)?;
    if format == ImageFormat::Jpeg
        && !limits.exact_jpeg
        && let Some(scaled) = jpeg_scaled::decode(bytes, full_size)
    {
        return Ok(Decoded {
            image: scaled.image,
            orientation,
            gray16_png: false,
            full_size,
            denominator: scaled.denominator,
        });
    }
    let image = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    Ok(Decoded {
        image,
        orientation,
        gray16_png: format == ImageFormat::Png && is_gray16_png(bytes),
        full_size,
        denominator: 1,
    })
}

/// The allocation limits for an output of `output_bytes` and `pixels` pixels.
fn budget(output_bytes: u64, pixels: u64) -> image::Limits {
    let work = pixels
        .saturating_mul(WORK_BYTES_PER_PIXEL)
        .saturating_add(WORK_BYTES_FIXED);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(output_bytes.saturating_add(work));
    limits
}

/// `width × height` if it is non-zero and within `limits`.
fn check_size((width, height): (u32, u32), limits: &Limits) -> Result<u64, PreprocessError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(PreprocessError::Corrupt(format!(
            "the header declares an empty {width}×{height} image"
        )));
    }
    if pixels > limits.max_pixels {
        return Err(PreprocessError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(pixels)
}

/// Whether a PNG's IHDR says 16-bit grayscale (colour type 0). PNG spec §11.2.2: the
/// signature (8 bytes), chunk length (4) and type `IHDR` (4) are followed by width (4),
/// height (4), bit depth (1 byte, offset 24) and colour type (offset 25).
fn is_gray16_png(bytes: &[u8]) -> bool {
    bytes.get(12..16) == Some(b"IHDR") && bytes.get(24..26) == Some(&[16, 0])
}

/// Whether a JPEG's marker structure (ITU-T T.81 §B.1) runs from SOI to an EOI marker:
/// marker segments carry a big-endian length; after a SOS header the entropy-coded data
/// runs to the next `FF xx` that is neither a stuffed `FF 00` nor a restart marker
/// `FF D0`–`FF D7`. Bytes after EOI are ignored, as libjpeg does.
fn jpeg_reaches_eoi(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.get(..2) != Some(&[0xFF, SOI]) {
        return false;
    }
    let mut at = 2;
    loop {
        // A marker: one or more 0xFF fill bytes, then the code.
        if bytes.get(at) != Some(&0xFF) {
            return false;
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at) else {
            return false;
        };
        at += 1;
        match code {
            EOI => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(&[hi, lo]) = bytes.get(at..at + 2) else {
            return false;
        };
        at += usize::from(u16::from_be_bytes([hi, lo]));
        if code == SOS {
            match entropy_coded_end(bytes, at) {
                Some(end) => at = end,
                None => return false,
            }
        }
    }
}

/// Offset of the marker that ends the entropy-coded data starting at `from`.
fn entropy_coded_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

fn map_image_error(e: image::ImageError) -> PreprocessError {
    match e {
        image::ImageError::Unsupported(_) => PreprocessError::UnsupportedFormat,
        image::ImageError::Limits(limit) => PreprocessError::Corrupt(format!(
            "the image data needs more memory than its header allows ({limit})"
        )),
        other => PreprocessError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray16_is_read_from_ihdr() {
        let mut header = Vec::from(*b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01");
        header.extend([16, 0, 0, 0, 0]);
        assert!(is_gray16_png(&header));
        header[25] = 4; // gray + alpha
        assert!(!is_gray16_png(&header));
        header[25] = 0;
        header[24] = 8;
        assert!(!is_gray16_png(&header));
        assert!(!is_gray16_png(&header[..20]));
    }

    /// SOI, a DQT-like segment, SOS with a 2-byte header payload, entropy data containing a
    /// stuffed `FF 00` and a restart marker, then EOI.
    fn tiny_jpeg_structure() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xDB, 0x00, 0x04, 0x11, 0x22]);
        j.extend([0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02]);
        j.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        j.extend([0xFF, 0xD9]);
        j
    }

    #[test]
    fn a_jpeg_is_complete_only_up_to_its_eoi() {
        let full = tiny_jpeg_structure();
        assert!(jpeg_reaches_eoi(&full));
        for cut in 0..full.len() {
            assert!(!jpeg_reaches_eoi(&full[..cut]), "cut at {cut}");
        }
        let mut trailing = full.clone();
        trailing.extend(b"trailing bytes after EOI are ignored");
        assert!(jpeg_reaches_eoi(&trailing));
    }

    #[test]
    fn the_budget_covers_output_and_work() {
        let limits = budget(300, 100);
        assert_eq!(limits.max_alloc, Some(300 + 800 + (16 << 20)));
        assert_eq!(budget(u64::MAX, u64::MAX).max_alloc, Some(u64::MAX));
    }

    #[test]
    fn size_zero_and_over_limit_are_refused() {
        let limits = Limits {
            max_pixels: 100,
            exact_jpeg: false,
        };
        assert!(matches!(
            check_size((0, 5), &limits),
            Err(PreprocessError::Corrupt(_))
        ));
        assert!(matches!(
            check_size((10, 11), &limits),
            Err(PreprocessError::TooManyPixels { pixels: 110, .. })
        ));
        assert_eq!(check_size((10, 10), &limits).ok(), Some(100));
    }
}
