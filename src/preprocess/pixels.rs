//! The decoded image seen through PIL's `Image.convert("RGB")` and the EXIF orientation,
//! read row by row without converting or rotating the whole buffer.
//!
//! Conversion rules, each checked empirically with Pillow 13.0
//! (`tools/preprocess/probe_pil_convert.py` prints them; the format fixtures check them end
//! to end) and named after the Pillow functions that implement them
//! (`src/libImaging/Convert.c`, raw modes in `Unpack.c`):
//!
//! | decoded as | PIL mode | rule |
//! |---|---|---|
//! | 8-bit gray, gray + alpha | `L`, `LA` | `(v, v, v)`; alpha dropped (`l2rgb`, `la2rgb`) |
//! | 8-bit RGB, RGBA, palette | `RGB`, `RGBA`, `P` | channels copied; alpha dropped, **not** composited (`rgba2rgb`); a palette index maps to its colour even when it is the transparent one |
//! | 16-bit gray (PNG colour type 0, TIFF) | `I;16` | `min(v, 255)`: Pillow **clips**, it does not scale (`I16_RGB`), so most 16-bit gray photos come out nearly white, and so do ours |
//! | 16-bit gray + alpha, 48-bit RGB, 64-bit RGBA | `RGBA`, `RGB`, `RGBA` (raw modes `LA;16B`, `RGB;16B`, `RGBA;16B`) | `v >> 8`: the high byte, truncated, not rounded |
//! | CMYK JPEG (Adobe, inverted) | `CMYK` | `(255−C)(255−K)/255` rounded (`cmyk2rgb`: `nk − MULDIV255(C, nk)`); zune-jpeg's `blinn_8x8` on the inverted samples is the same rounding, checked by the `jpeg_cmyk` fixture |
//!
//! Known differences that remain (no fixture, rare): a CMYK *TIFF* is converted by the image
//! crate with a truncating float formula (can be one level below Pillow's); floating-point
//! pixels (float TIFFs) are refused as an unsupported format rather than guessed at.

use image::DynamicImage;
use image::metadata::Orientation;

/// How one stored pixel becomes PIL RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// 8-bit samples; gray replicated, alpha dropped.
    Gray8,
    /// 8-bit samples; first three channels.
    Rgb8,
    /// 16-bit gray (`I;16`): clipped to 255.
    Gray16Clip,
    /// 16-bit gray + alpha: high byte.
    Gray16High,
    /// 16-bit RGB(A): high byte of each channel.
    Rgb16High,
}

/// Sample storage of the decoded image.
enum Samples<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
}

/// A read-only RGB view of a decoded image with its orientation applied.
pub(crate) struct RgbView<'a> {
    samples: Samples<'a>,
    channels: usize,
    rule: Rule,
    width: usize,
    height: usize,
    /// Sample index of oriented pixel (0, 0), and signed steps (in pixels) for +x and +y.
    origin: isize,
    step_x: isize,
    step_y: isize,
}

/// Why a decoded image cannot be viewed as RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnsupportedPixels;

impl<'a> RgbView<'a> {
    /// Views `image` as PIL RGB. `gray16_png` says the file was a 16-bit gray PNG, which
    /// Pillow opens as `I;16` (clipped) even when a `tRNS` chunk made the image crate add
    /// an alpha channel.
    pub(crate) fn new(
        image: &'a DynamicImage,
        orientation: Orientation,
        gray16_png: bool,
    ) -> Result<Self, UnsupportedPixels> {
        let channels = usize::from(image.color().channel_count());
        let (samples, rule) = match image {
            DynamicImage::ImageLuma8(b) => (Samples::U8(b.as_raw()), Rule::Gray8),
            DynamicImage::ImageLumaA8(b) => (Samples::U8(b.as_raw()), Rule::Gray8),
            DynamicImage::ImageRgb8(b) => (Samples::U8(b.as_raw()), Rule::Rgb8),
            DynamicImage::ImageRgba8(b) => (Samples::U8(b.as_raw()), Rule::Rgb8),
            DynamicImage::ImageLuma16(b) => (Samples::U16(b.as_raw()), Rule::Gray16Clip),
            DynamicImage::ImageLumaA16(b) if gray16_png => {
                (Samples::U16(b.as_raw()), Rule::Gray16Clip)
            }
            DynamicImage::ImageLumaA16(b) => (Samples::U16(b.as_raw()), Rule::Gray16High),
            DynamicImage::ImageRgb16(b) => (Samples::U16(b.as_raw()), Rule::Rgb16High),
            DynamicImage::ImageRgba16(b) => (Samples::U16(b.as_raw()), Rule::Rgb16High),
            _ => return Err(UnsupportedPixels),
        };
        let (w, h) = (image.width() as usize, image.height() as usize);
        let geometry = Geometry::new(w, h, orientation);
        Ok(Self {
            samples,
            channels,
            rule,
            width: geometry.width,
            height: geometry.height,
            origin: geometry.origin,
            step_x: geometry.step_x,
            step_y: geometry.step_y,
        })
    }

    /// Width after orientation.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Height after orientation.
    pub(crate) fn height(&self) -> usize {
        self.height
    }

    /// The conversion rule in use.
    #[cfg(test)]
    pub(crate) fn rule(&self) -> Rule {
        self.rule
    }

    /// The RGB bytes of `len` pixels of oriented row `y` from column `x0`: borrowed straight
    /// from the decoded buffer when it already is upright 8-bit RGB, otherwise converted
    /// into `scratch`. The caller keeps `y < height` and `x0 + len <= width`.
    pub(crate) fn row<'s>(
        &'s self,
        y: usize,
        x0: usize,
        len: usize,
        scratch: &'s mut Vec<u8>,
    ) -> &'s [u8] {
        if let (Samples::U8(s), Rule::Rgb8, 3, 1) =
            (&self.samples, self.rule, self.channels, self.step_x)
        {
            let first = self.pixel_index(y, x0) * 3;
            return &s[first..first + len * 3];
        }
        scratch.resize(len * 3, 0);
        self.read_row(y, x0, scratch);
        scratch
    }

    /// Writes `out.len() / 3` RGB pixels of oriented row `y`, starting at column `x0`.
    /// The caller keeps `y < height` and `x0 + out.len() / 3 <= width`.
    pub(crate) fn read_row(&self, y: usize, x0: usize, out: &mut [u8]) {
        let (first, step) = (self.pixel_index(y, x0), self.step_x);
        let ch = self.channels;
        match (&self.samples, self.rule) {
            (Samples::U8(s), Rule::Gray8) => fill(s, ch, first, step, out, |p| [p[0]; 3]),
            (Samples::U8(s), _) => fill(s, ch, first, step, out, |p| [p[0], p[1], p[2]]),
            (Samples::U16(s), Rule::Gray16Clip) => {
                fill(s, ch, first, step, out, |p| [p[0].min(255) as u8; 3])
            }
            (Samples::U16(s), Rule::Gray16High) => {
                fill(s, ch, first, step, out, |p| [high(p[0]); 3])
            }
            (Samples::U16(s), _) => fill(s, ch, first, step, out, |p| {
                [high(p[0]), high(p[1]), high(p[2])]
            }),
        }
    }

    /// Index (in pixels) of oriented pixel `(x, y)` in the stored buffer. The geometry
    /// keeps it in `0..stored pixels` for every in-range `(x, y)`.
    fn pixel_index(&self, y: usize, x: usize) -> usize {
        (self.origin + self.step_y * y as isize + self.step_x * x as isize) as usize
    }
}

/// The high byte of a 16-bit sample (Pillow's `;16B` unpackers keep it, truncating).
fn high(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Converts `out.len() / 3` pixels of `channels` samples each, the first at pixel index
/// `first` and the next ones `step` pixels apart, into `out` (RGB).
fn fill<T: Copy>(
    samples: &[T],
    channels: usize,
    first: usize,
    step: isize,
    out: &mut [u8],
    convert: impl Fn(&[T]) -> [u8; 3],
) {
    let count = out.len() / 3;
    if step == 1 {
        // Upright rows are contiguous: walk them without per-pixel index arithmetic.
        let run = &samples[first * channels..(first + count) * channels];
        for (px, sample) in out.chunks_exact_mut(3).zip(run.chunks_exact(channels)) {
            px.copy_from_slice(&convert(sample));
        }
        return;
    }
    let mut at = first as isize;
    for px in out.chunks_exact_mut(3) {
        let i = at as usize * channels;
        px.copy_from_slice(&convert(&samples[i..i + channels]));
        at += step;
    }
}

/// Whether `orientation` turns a stored `w × h` image into an `h × w` one.
pub(crate) fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Where oriented pixel (x, y) lives in the stored buffer: `origin + x·step_x + y·step_y`
/// (in pixels), following `image::DynamicImage::apply_orientation`.
struct Geometry {
    width: usize,
    height: usize,
    origin: isize,
    step_x: isize,
    step_y: isize,
}

impl Geometry {
    fn new(w: usize, h: usize, orientation: Orientation) -> Self {
        let (wi, hi) = (w as isize, h as isize);
        // Stored coordinates (sx, sy) of oriented (0, 0), and their derivatives by x and y.
        let ((sx0, sy0), (dsx_dx, dsy_dx), (dsx_dy, dsy_dy)) = match orientation {
            Orientation::NoTransforms => ((0, 0), (1, 0), (0, 1)),
            Orientation::FlipHorizontal => ((wi - 1, 0), (-1, 0), (0, 1)),
            Orientation::FlipVertical => ((0, hi - 1), (1, 0), (0, -1)),
            Orientation::Rotate180 => ((wi - 1, hi - 1), (-1, 0), (0, -1)),
            // Clockwise: oriented (x, y) = stored (y, h − 1 − x).
            Orientation::Rotate90 => ((0, hi - 1), (0, -1), (1, 0)),
            // Counter-clockwise: oriented (x, y) = stored (w − 1 − y, x).
            Orientation::Rotate270 => ((wi - 1, 0), (0, 1), (-1, 0)),
            // Transpose: oriented (x, y) = stored (y, x).
            Orientation::Rotate90FlipH => ((0, 0), (0, 1), (1, 0)),
            // Transverse: oriented (x, y) = stored (w − 1 − y, h − 1 − x).
            Orientation::Rotate270FlipH => ((wi - 1, hi - 1), (0, -1), (-1, 0)),
        };
        let swaps = dsx_dx == 0;
        let (width, height) = if swaps { (h, w) } else { (w, h) };
        Self {
            width,
            height,
            origin: sy0 * wi + sx0,
            step_x: dsy_dx * wi + dsx_dx,
            step_y: dsy_dy * wi + dsx_dy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    const ALL: [Orientation; 8] = [
        Orientation::NoTransforms,
        Orientation::FlipHorizontal,
        Orientation::FlipVertical,
        Orientation::Rotate180,
        Orientation::Rotate90,
        Orientation::Rotate270,
        Orientation::Rotate90FlipH,
        Orientation::Rotate270FlipH,
    ];

    fn view_to_vec(view: &RgbView) -> Vec<u8> {
        let mut out = vec![0u8; view.width() * view.height() * 3];
        for (y, row) in out.chunks_exact_mut(view.width() * 3).enumerate() {
            view.read_row(y, 0, row);
        }
        out
    }

    #[test]
    fn every_orientation_matches_the_image_crate_rotation() {
        // 5×3 so that any swap of width and height or off-by-one shows.
        let img = ImageBuffer::from_fn(5, 3, |x, y| Rgb([x as u8 * 40, y as u8 * 70, 7]));
        for orientation in ALL {
            let mut expected = DynamicImage::ImageRgb8(img.clone());
            expected.apply_orientation(orientation);
            let source = DynamicImage::ImageRgb8(img.clone());
            let view = RgbView::new(&source, orientation, false).expect("RGB8 is supported");
            assert_eq!(
                (view.width(), view.height()),
                (expected.width() as usize, expected.height() as usize),
                "{orientation:?}"
            );
            assert_eq!(
                view_to_vec(&view),
                expected.to_rgb8().into_raw(),
                "{orientation:?}"
            );
            assert_eq!(
                swaps_axes(orientation),
                expected.width() == 3,
                "{orientation:?}"
            );
        }
    }

    #[test]
    fn borrowed_and_converted_rows_agree_in_every_orientation() {
        let img = ImageBuffer::from_fn(7, 4, |x, y| Rgb([x as u8 * 30, y as u8 * 50, 9]));
        let rgba = ImageBuffer::from_fn(7, 4, |x, y| Rgba([x as u8 * 30, y as u8 * 50, 9, 1]));
        let sources = [DynamicImage::ImageRgb8(img), DynamicImage::ImageRgba8(rgba)];
        for source in &sources {
            for orientation in ALL {
                let view = RgbView::new(source, orientation, false).expect("supported");
                let mut scratch = Vec::new();
                for y in 0..view.height() {
                    let mut expected = vec![0u8; (view.width() - 1) * 3];
                    view.read_row(y, 1, &mut expected);
                    let row = view.row(y, 1, view.width() - 1, &mut scratch);
                    assert_eq!(row, &expected[..], "{orientation:?} row {y}");
                }
            }
        }
    }

    #[test]
    fn a_row_segment_starts_at_the_requested_column() {
        let img = ImageBuffer::from_fn(6, 2, |x, y| Rgb([x as u8, y as u8, 0]));
        let source = DynamicImage::ImageRgb8(img);
        let view = RgbView::new(&source, Orientation::Rotate180, false).expect("supported");
        let mut out = [0u8; 6];
        view.read_row(0, 2, &mut out);
        // Rotated 180°: row 0 is stored row 1 reversed; columns 2, 3 are stored x = 3, 2.
        assert_eq!(out, [3, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn rgba_drops_alpha_without_compositing() {
        let img = ImageBuffer::from_pixel(1, 1, Rgba([10u8, 20, 30, 0]));
        let source = DynamicImage::ImageRgba8(img);
        let view = RgbView::new(&source, Orientation::NoTransforms, false).expect("supported");
        assert_eq!(view_to_vec(&view), [10, 20, 30]);
    }

    #[test]
    fn sixteen_bit_gray_is_clipped_like_pil_i16() {
        // Pillow 13: I;16 [0, 100, 255, 256, 1000, 65535] → RGB [0, 100, 255, 255, 255, 255].
        let values = [0u16, 100, 255, 256, 1000, 65535];
        let img = ImageBuffer::<Luma<u16>, _>::from_raw(6, 1, values.to_vec()).expect("6 px");
        let source = DynamicImage::ImageLuma16(img);
        let view = RgbView::new(&source, Orientation::NoTransforms, false).expect("supported");
        assert_eq!(view.rule(), Rule::Gray16Clip);
        let reds: Vec<u8> = view_to_vec(&view).iter().step_by(3).copied().collect();
        assert_eq!(reds, [0, 100, 255, 255, 255, 255]);
    }

    #[test]
    fn sixteen_bit_rgb_keeps_the_high_byte() {
        // Pillow 13 on a 48-bit PNG: 0x00FF → 0, 0x7FFF → 127, 0x80FF → 128, 0xFF7F → 255.
        let values = [0x00FFu16, 0x7FFF, 0x80FF, 0xFF7F, 0x0100, 0x01FF];
        let img = ImageBuffer::<Rgb<u16>, _>::from_raw(2, 1, values.to_vec()).expect("2 px");
        let source = DynamicImage::ImageRgb16(img);
        let view = RgbView::new(&source, Orientation::NoTransforms, false).expect("supported");
        assert_eq!(view_to_vec(&view), [0, 127, 128, 255, 1, 1]);
    }

    #[test]
    fn gray16_png_with_alpha_is_still_clipped() {
        let img = ImageBuffer::<image::LumaA<u16>, _>::from_raw(2, 1, vec![300, 0, 200, 65535])
            .expect("2 px");
        let source = DynamicImage::ImageLumaA16(img);
        let clipped = RgbView::new(&source, Orientation::NoTransforms, true).expect("supported");
        assert_eq!(view_to_vec(&clipped), [255, 255, 255, 200, 200, 200]);
        let high = RgbView::new(&source, Orientation::NoTransforms, false).expect("supported");
        assert_eq!(view_to_vec(&high), [1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn float_pixels_are_refused() {
        let source = DynamicImage::new_rgb32f(2, 2);
        assert!(RgbView::new(&source, Orientation::NoTransforms, false).is_err());
    }
}
