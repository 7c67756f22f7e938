//! Bytes → decoded pixels, within the per-image budget of [`Limits`]: the declared size,
//! the decoder work and the decoded bytes are checked from the container before any pixel
//! buffer is allocated, the decoder gets an allocation limit, and it reads through a
//! [`GuardedReader`] that stops it when the request is cancelled or out of time.

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::cancel::{Cancel, GuardedReader};
use super::container::{self, ContainerError, JpegFrame, JpegStructure};
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

/// Allowance for a decoder's own tables, palettes, row buffers and the metadata it reads,
/// beyond the budget of [`decoded_bytes`].
const WORK_BYTES_FIXED: u64 = 16 << 20;

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

/// Decodes `bytes` if it is one of [`FORMATS`], within `limits` (the module doc of
/// [`super`] lists them) and until `cancel` fires. In order, before any pixel buffer exists:
/// 1. the container ([`container`]): declared size against `max_pixels` (413 for every
///    format), a JPEG's completeness and scan count against `max_jpeg_scans`, and the
///    metadata hidden from the decoder;
/// 2. the decoder reads the header through a [`GuardedReader`] with an allocation limit of
///    twice `max_decoded_bytes` (plus 16 MiB), then its size is checked again;
/// 3. the bytes the decode will hold ([`decoded_bytes`]: the output buffer, plus a
///    progressive JPEG's coefficients) against `max_decoded_bytes`; the decoder's own
///    allocation limit becomes twice that (plus 16 MiB), so a file whose body claims more
///    than its header (a GIF frame larger than its screen, a lying TIFF strip) fails instead
///    of allocating.
///
/// A large JPEG is decoded at reduced scale unless `limits.exact_jpeg`
/// ([`super::jpeg_scaled`]).
pub(crate) fn decode(
    bytes: &[u8],
    limits: &Limits,
    cancel: &Cancel,
) -> Result<Decoded, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    cancel.check()?;
    let format = image::guess_format(bytes).map_err(|_| PreprocessError::UnsupportedFormat)?;
    if !FORMATS.contains(&format) {
        return Err(PreprocessError::UnsupportedFormat);
    }
    let container = container::read(format, bytes).map_err(container_error)?;
    if let Some(size) = container.size {
        check_size(size, limits)?;
    }
    if let Some(jpeg) = &container.jpeg {
        check_jpeg(jpeg, limits)?;
    }
    let kept = container.kept.clone();
    let guarded = || match &kept {
        Some(ranges) => GuardedReader::with_ranges(bytes, ranges.clone(), cancel.clone()),
        None => GuardedReader::new(bytes, cancel.clone()),
    };
    let mut reader = ImageReader::with_format(guarded(), format);
    reader.limits(allocation_limit(limits.max_decoded_bytes));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decoder_error(e, cancel))?;
    let full_size = decoder.dimensions();
    check_size(full_size, limits)?;
    let frame = container.jpeg.as_ref().and_then(|j| j.frame.as_ref());
    let orientation = decoder
        .orientation()
        .map_err(|e| decoder_error(e, cancel))?;
    if format == ImageFormat::Jpeg
        && !limits.exact_jpeg
        && let Some(scaled) = scaled_jpeg(guarded(), full_size, frame, limits)?
    {
        return Ok(Decoded {
            image: scaled.image,
            orientation,
            gray16_png: false,
            full_size,
            denominator: scaled.denominator,
        });
    }
    let needed = check_bytes(decoded_bytes(decoder.total_bytes(), frame), limits)?;
    let mut allocation = allocation_limit(needed);
    allocation
        .reserve(decoder.total_bytes())
        .map_err(|e| decoder_error(e, cancel))?;
    decoder
        .set_limits(allocation)
        .map_err(|e| decoder_error(e, cancel))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| decoder_error(e, cancel))?;
    // zune-jpeg reads its whole input first: the token is only seen again here.
    cancel.check()?;
    Ok(Decoded {
        image,
        orientation,
        gray16_png: format == ImageFormat::Png && is_gray16_png(bytes),
        full_size,
        denominator: 1,
    })
}

/// A JPEG of `full_size` decoded at reduced scale when [`jpeg_scaled::denominator`] says so,
/// its decoded bytes checked first; `None` = decode it exactly (see [`jpeg_scaled::decode`]).
fn scaled_jpeg(
    reader: GuardedReader<'_>,
    full_size: (u32, u32),
    frame: Option<&JpegFrame>,
    limits: &Limits,
) -> Result<Option<jpeg_scaled::Scaled>, PreprocessError> {
    let denominator = jpeg_scaled::denominator(full_size.0, full_size.1);
    if denominator == 1 {
        return Ok(None);
    }
    // Three channels at most (CMYK files take the exact path).
    let output = u64::from(full_size.0.div_ceil(denominator))
        * u64::from(full_size.1.div_ceil(denominator))
        * 3;
    check_bytes(decoded_bytes(output, frame), limits)?;
    let cancel = reader.cancel().clone();
    let scaled = jpeg_scaled::decode(reader, full_size);
    // A failed read (cancelled) ends `jpeg-decoder` like a corrupt file: say which it was.
    cancel.check()?;
    Ok(scaled)
}

/// Bytes a decode holds: its output buffer, plus every DCT coefficient of a progressive
/// JPEG (`frame`), which both JPEG decoders keep until the last scan.
fn decoded_bytes(output: u64, frame: Option<&JpegFrame>) -> u64 {
    let coefficients = frame
        .filter(|f| f.progressive)
        .map_or(0, JpegFrame::coefficient_bytes);
    output.saturating_add(coefficients)
}

/// `needed` if it is within `limits.max_decoded_bytes`.
fn check_bytes(needed: u64, limits: &Limits) -> Result<u64, PreprocessError> {
    if needed > limits.max_decoded_bytes {
        return Err(PreprocessError::OverBudget(format!(
            "decoding this image needs {} of memory (pixels, plus the coefficients of a \
             progressive JPEG), more than the limit of {}",
            megabytes(needed),
            megabytes(limits.max_decoded_bytes)
        )));
    }
    Ok(needed)
}

fn megabytes(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{bytes} bytes")
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// Completeness and scan count of a JPEG.
fn check_jpeg(jpeg: &JpegStructure, limits: &Limits) -> Result<(), PreprocessError> {
    if !jpeg.complete {
        // zune-jpeg would fill the missing rows with gray; PIL (libjpeg) raises
        // "image file is truncated". We side with PIL.
        return Err(PreprocessError::Corrupt(
            "the JPEG data ends before its end-of-image marker (truncated file)".into(),
        ));
    }
    if jpeg.scans > limits.max_jpeg_scans {
        return Err(PreprocessError::OverBudget(format!(
            "the JPEG has {} scans, more than the limit of {} (each scan is a pass over \
             the whole image)",
            jpeg.scans, limits.max_jpeg_scans
        )));
    }
    Ok(())
}

/// The decoder's allocation limit when a decode is to hold `bytes`: room for one more copy
/// of that (a frame buffer next to a canvas) and [`WORK_BYTES_FIXED`].
fn allocation_limit(bytes: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(bytes.saturating_mul(2).saturating_add(WORK_BYTES_FIXED));
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

fn container_error(e: ContainerError) -> PreprocessError {
    match e {
        ContainerError::Corrupt(message) => PreprocessError::Corrupt(message),
        ContainerError::TooManyChunks(limit) => PreprocessError::OverBudget(format!(
            "the file interleaves more than {limit} metadata chunks with its image data"
        )),
    }
}

/// A decoder's error, or the interruption that caused it (the reader fails once `cancel`
/// fires, which the decoder reports as an I/O error).
fn decoder_error(e: image::ImageError, cancel: &Cancel) -> PreprocessError {
    if let Err(interrupted) = cancel.check() {
        return PreprocessError::Interrupted(interrupted);
    }
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

    #[test]
    fn the_allocation_limit_allows_one_more_copy_and_the_fixed_work() {
        assert_eq!(allocation_limit(300).max_alloc, Some(600 + (16 << 20)));
        assert_eq!(allocation_limit(u64::MAX).max_alloc, Some(u64::MAX));
    }

    #[test]
    fn decoded_bytes_add_coefficients_of_progressive_jpegs_only() {
        let mut frame = JpegFrame {
            width: 16,
            height: 16,
            progressive: false,
            sampling: vec![(1, 1)],
        };
        assert_eq!(decoded_bytes(768, Some(&frame)), 768);
        frame.progressive = true;
        assert_eq!(decoded_bytes(768, Some(&frame)), 768 + 4 * 128);
        assert_eq!(decoded_bytes(768, None), 768);
        let limits = Limits {
            max_decoded_bytes: 1000,
            ..Limits::DEFAULT
        };
        assert_eq!(check_bytes(1000, &limits).ok(), Some(1000));
        assert!(matches!(
            check_bytes(1001, &limits),
            Err(PreprocessError::OverBudget(m)) if m.contains("needs 1001 bytes")
        ));
    }

    #[test]
    fn truncated_and_many_scan_jpegs_are_refused_from_the_structure() {
        let limits = Limits {
            max_jpeg_scans: 3,
            ..Limits::DEFAULT
        };
        let mut jpeg = JpegStructure {
            complete: true,
            scans: 3,
            frame: None,
        };
        assert!(check_jpeg(&jpeg, &limits).is_ok());
        jpeg.scans = 4;
        assert!(matches!(
            check_jpeg(&jpeg, &limits),
            Err(PreprocessError::OverBudget(m)) if m.contains("4 scans")
        ));
        jpeg.complete = false;
        assert!(matches!(
            check_jpeg(&jpeg, &limits),
            Err(PreprocessError::Corrupt(_))
        ));
    }

    #[test]
    fn size_zero_and_over_limit_are_refused() {
        let limits = Limits {
            max_pixels: 100,
            ..Limits::DEFAULT
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
