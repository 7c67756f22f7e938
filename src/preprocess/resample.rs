//! PIL's antialiased bilinear resize (`Image.resize(size, Image.BILINEAR)` on an 8-bit RGB
//! image), evaluated only on a window of the output.
//!
//! The algorithm is Pillow's documented two-pass convolution (`libImaging/Resample.c`),
//! re-implemented here from its description:
//!
//! * per output axis, `scale = in / out`, `filterscale = max(scale, 1)`,
//!   `support = 1 · filterscale` (bilinear support is 1);
//! * output index `i` is centred on `center = (i + 0.5) · scale`; it reads the input
//!   indices `xmin = max(trunc(center − support + 0.5), 0)` up to
//!   `min(trunc(center + support + 0.5), in)` (exclusive), with weights
//!   `tri((j − center + 0.5) · (1 / filterscale))`, `tri(x) = max(1 − |x|, 0)`, computed in
//!   `f64` and divided by their sum;
//! * weights go to fixed point with `PRECISION_BITS = 32 − 8 − 2 = 22`, rounded half away
//!   from zero; a pass sums `sample · weight` in `i32` starting from `1 << 21` and keeps
//!   `sum >> 22` clamped to `0..=255`;
//! * the horizontal pass runs first (8-bit result), then the vertical pass on it.
//!
//! Each output pixel depends only on its own coefficients, so computing the window
//! `[x0, x0 + w) × [y0, y0 + h)` of an `out_w × out_h` resize gives exactly the pixels that
//! resizing the whole image and then cropping would give. The horizontal pass only touches
//! the source rows the window's vertical taps need, and only the source columns its
//! horizontal taps need.

use super::pixels::RgbView;

/// Fixed-point fraction bits of the weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The taps of a run of consecutive output indices along one axis.
#[derive(Debug)]
pub(crate) struct Taps {
    /// First input index read by each output index.
    start: Vec<usize>,
    /// Number of input indices read by each output index.
    len: Vec<usize>,
    /// `ksize` fixed-point weights per output index (unused ones are zero).
    weights: Vec<i32>,
    ksize: usize,
}

impl Taps {
    /// Taps of output indices `first .. first + count` of a resize from `in_size` to
    /// `out_size` samples. Needs `in_size ≥ 1`, `out_size ≥ 1`.
    #[cfg(test)]
    pub(crate) fn bilinear(in_size: usize, out_size: u64, first: u64, count: usize) -> Self {
        Self::bilinear_extent(in_size, in_size as f64, out_size, first, count)
    }

    /// As [`Taps::bilinear`], with `out_size` mapped onto the first `extent` input samples
    /// (`scale = extent / out_size`) instead of all `in_size`. A JPEG decoded at `1/d` scale
    /// has `⌈n / d⌉` samples for `n / d` samples' worth of image (its last one covers a
    /// partial block); mapping onto `n / d` keeps every output sample centred where it is
    /// in the full-size resize. Reads stay within `in_size`.
    pub(crate) fn bilinear_extent(
        in_size: usize,
        extent: f64,
        out_size: u64,
        first: u64,
        count: usize,
    ) -> Self {
        let scale = extent / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut taps = Self {
            start: Vec::with_capacity(count),
            len: Vec::with_capacity(count),
            weights: vec![0; count * ksize],
            ksize,
        };
        let inverse = 1.0 / filterscale;
        let mut row = vec![0f64; ksize];
        for (n, out) in (first..first + count as u64).enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // `as` truncates toward zero and saturates, as C's (int) cast does in range.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let len = xmax.saturating_sub(xmin).min(ksize);
            let mut sum = 0.0;
            for (j, w) in row.iter_mut().enumerate().take(len) {
                *w = triangle(((j + xmin) as f64 - center + 0.5) * inverse);
                sum += *w;
            }
            let fixed = &mut taps.weights[n * ksize..n * ksize + len];
            for (k, w) in fixed.iter_mut().zip(&row) {
                let normalised = if sum != 0.0 { w / sum } else { *w };
                *k = to_fixed(normalised);
            }
            taps.start.push(xmin);
            taps.len.push(len);
        }
        taps
    }

    /// Input range `[lo, hi)` read by all these taps together.
    pub(crate) fn span(&self) -> (usize, usize) {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self
            .start
            .iter()
            .zip(&self.len)
            .map(|(s, l)| s + l)
            .max()
            .unwrap_or(0);
        (lo, hi.max(lo))
    }

    /// `(start, weights)` of output index `n` of this run.
    fn get(&self, n: usize) -> (usize, &[i32]) {
        let base = n * self.ksize;
        (self.start[n], &self.weights[base..base + self.len[n]])
    }

    fn count(&self) -> usize {
        self.start.len()
    }
}

/// PIL's bilinear filter, `1 − |x|` on `(−1, 1)`.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// A normalised weight in fixed point, rounded half away from zero (as Pillow does).
fn to_fixed(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Fixed-point sum → 8-bit sample (`clip8`).
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// The output window of a resize: `width × height` pixels at `(x0, y0)` of a resize of
/// the source's first `extent_x × extent_y` samples (normally all of it) to
/// `out_width × out_height`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub extent_x: f64,
    pub extent_y: f64,
    pub out_width: u64,
    pub out_height: u64,
    pub x0: u64,
    pub y0: u64,
    pub width: usize,
    pub height: usize,
}

/// Resizes `src` as PIL's bilinear `resize((out_width, out_height))` would and returns the
/// window as HWC RGB bytes.
///
/// Memory: besides the coefficients (`width + height` times `2·⌈max(scale, 1)⌉ + 1`
/// weights), one intermediate of `rows × width × 3` bytes, where `rows` is the number of
/// source rows the window's vertical taps read: at most
/// `height · scale_y + 2·⌈max(scale_y, 1)⌉ + 1` (`scale_y = source height / out_height`)
/// and never more than the source height.
pub(crate) fn resize_window(src: &RgbView, window: Window) -> Vec<u8> {
    let horizontal = Taps::bilinear_extent(
        src.width(),
        window.extent_x,
        window.out_width,
        window.x0,
        window.width,
    );
    let vertical = Taps::bilinear_extent(
        src.height(),
        window.extent_y,
        window.out_height,
        window.y0,
        window.height,
    );
    let (col_lo, col_hi) = horizontal.span();
    let (row_lo, row_hi) = vertical.span();
    let stride = window.width * 3;
    let mut scratch = Vec::new();
    let mut temp = vec![0u8; (row_hi - row_lo) * stride];
    for (y, out) in (row_lo..row_hi).zip(temp.chunks_exact_mut(stride)) {
        let row = src.row(y, col_lo, col_hi - col_lo, &mut scratch);
        horizontal_pass(row, col_lo, &horizontal, out);
    }
    let mut dst = vec![0u8; window.height * stride];
    vertical_pass(&temp, row_lo, stride, &vertical, &mut dst);
    dst
}

/// One row: `row` holds source pixels from column `col_lo`; writes `taps.count()` pixels.
fn horizontal_pass(row: &[u8], col_lo: usize, taps: &Taps, out: &mut [u8]) {
    for (n, px) in out.chunks_exact_mut(3).enumerate().take(taps.count()) {
        let (start, weights) = taps.get(n);
        let first = (start - col_lo) * 3;
        let pixels = &row[first..first + weights.len() * 3];
        px.copy_from_slice(&convolve_rgb(pixels, weights));
    }
}

/// `Σ pixel · weight` over RGB `pixels` (one per weight), rounded and clipped to 8 bits.
fn convolve_rgb(pixels: &[u8], weights: &[i32]) -> [u8; 3] {
    let (mut r, mut g, mut b) = (ROUNDING, ROUNDING, ROUNDING);
    for (&w, p) in weights.iter().zip(pixels.chunks_exact(3)) {
        r += i32::from(p[0]) * w;
        g += i32::from(p[1]) * w;
        b += i32::from(p[2]) * w;
    }
    [clip8(r), clip8(g), clip8(b)]
}

/// All rows: `temp` holds horizontally resized rows from source row `row_lo`, `stride`
/// bytes each; writes `taps.count()` rows into `dst`.
fn vertical_pass(temp: &[u8], row_lo: usize, stride: usize, taps: &Taps, dst: &mut [u8]) {
    let mut acc = vec![0i32; stride];
    for (n, out) in dst.chunks_exact_mut(stride).enumerate().take(taps.count()) {
        let (start, weights) = taps.get(n);
        acc.fill(ROUNDING);
        let rows = temp[(start - row_lo) * stride..].chunks_exact(stride);
        for (w, row) in weights.iter().zip(rows) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += i32::from(v) * w;
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights_f64(taps: &Taps, n: usize) -> (usize, Vec<f64>) {
        let (start, w) = taps.get(n);
        let scale = f64::from(1u32 << PRECISION_BITS);
        (start, w.iter().map(|&k| f64::from(k) / scale).collect())
    }

    #[test]
    fn same_size_is_the_identity() {
        let taps = Taps::bilinear(10, 10, 0, 10);
        for n in 0..10 {
            let (start, w) = taps.get(n);
            assert_eq!(start, n);
            assert_eq!(w[0], 1 << PRECISION_BITS);
            assert!(w[1..].iter().all(|&k| k == 0), "{w:?}");
        }
    }

    #[test]
    fn halving_averages_neighbouring_pairs_with_a_triangle() {
        // 8 → 4: scale 2, support 2, output 1 centred on 3.0 reads inputs 1..5 with
        // weights tri((j − 3 + 0.5) / 2) = 1/4, 3/4, 3/4, 1/4, normalised by 2.
        let taps = Taps::bilinear(8, 4, 0, 4);
        let (start, w) = weights_f64(&taps, 1);
        assert_eq!(start, 1);
        let expected = [0.125, 0.375, 0.375, 0.125];
        assert_eq!(w.len(), expected.len());
        for (a, b) in w.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
        // Output 0 is cut by the border: inputs 0..3 weighted 3/4, 3/4, 1/4.
        let (start, w) = weights_f64(&taps, 0);
        assert_eq!(start, 0);
        for (a, b) in w.iter().zip([3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0]) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn a_window_of_taps_equals_the_same_taps_of_the_full_axis() {
        let full = Taps::bilinear(1000, 341, 0, 341);
        let window = Taps::bilinear(1000, 341, 58, 224);
        for n in 0..224 {
            assert_eq!(window.get(n), full.get(n + 58), "output {}", n + 58);
        }
    }

    #[test]
    fn the_rows_read_by_a_224_window_stay_within_the_documented_bound() {
        // (source side, resized side, window offset): square photos up to the 40 MP limit,
        // an upscale, and the long axis of a 6666×6000 image.
        for (src, out, first) in [
            (6324, 256, 16),
            (3024, 256, 16),
            (300, 256, 16),
            (100, 256, 16),
            (6666, 284, 30),
        ] {
            let taps = Taps::bilinear(src, out, first, 224);
            let (lo, hi) = taps.span();
            let scale = src as f64 / out as f64;
            let bound = 224.0 * scale + 2.0 * scale.max(1.0).ceil() + 1.0;
            assert!(
                (hi - lo) as f64 <= bound,
                "{src}→{out}: {} rows > {bound}",
                hi - lo
            );
            assert!(hi <= src);
        }
    }

    #[test]
    fn a_partial_last_sample_keeps_the_full_size_geometry() {
        // 4001 samples at 1/4 scale: 1001 decoded samples for 1000.25 samples of image.
        // Output index n must centre on (n + 0.5)·4001/256 in full-size samples, i.e. on
        // (n + 0.5)·1000.25/256 in decoded ones. Away from the borders the triangle is
        // whole and symmetric, so the weighted mean of `index + 0.5` is its centre.
        let scaled = Taps::bilinear_extent(1001, 1000.25, 256, 0, 256);
        let full = Taps::bilinear(4001, 256, 0, 256);
        let centre = |taps: &Taps, n: usize| -> f64 {
            let (start, w) = weights_f64(taps, n);
            w.iter()
                .enumerate()
                .map(|(j, k)| ((start + j) as f64 + 0.5) * k)
                .sum()
        };
        // Sampling a triangle 3.9 decoded samples wide moves its mean by < 0.02 sample
        // (0.08 full-size); mapping onto all 1001 samples instead would move output 100 by
        // 100.5 · 0.75 / 256 = 0.29 decoded samples (1.2 full-size).
        for n in [10, 100, 200, 245] {
            let expected = (n as f64 + 0.5) * 4001.0 / 256.0;
            assert!((centre(&full, n) - expected).abs() < 0.01, "full {n}");
            assert!(
                (centre(&scaled, n) * 4.0 - expected).abs() < 0.25,
                "scaled {n}: {} vs {expected}",
                centre(&scaled, n) * 4.0
            );
        }
        assert!(scaled.span().1 <= 1001);
        // The extent of a whole image is the plain resize.
        let whole = Taps::bilinear_extent(1000, 1000.0, 341, 58, 224);
        let plain = Taps::bilinear(1000, 341, 58, 224);
        for n in 0..224 {
            assert_eq!(whole.get(n), plain.get(n));
        }
    }

    #[test]
    fn fixed_point_rounds_half_away_from_zero() {
        let unit = f64::from(1u32 << PRECISION_BITS);
        assert_eq!(to_fixed(0.5 / unit), 1);
        assert_eq!(to_fixed(0.49 / unit), 0);
        assert_eq!(to_fixed(-0.5 / unit), -1);
        assert_eq!(to_fixed(1.0), 1 << PRECISION_BITS);
    }

    #[test]
    fn clip8_rounds_through_the_initial_half_and_clamps() {
        assert_eq!(clip8(ROUNDING + 254 * (1 << PRECISION_BITS)), 254);
        assert_eq!(clip8(ROUNDING - 1 + (1 << PRECISION_BITS) / 2), 0);
        assert_eq!(clip8(ROUNDING + (1 << PRECISION_BITS) / 2), 1);
        assert_eq!(clip8(-5), 0);
        assert_eq!(clip8(i32::MAX), 255);
    }
}
