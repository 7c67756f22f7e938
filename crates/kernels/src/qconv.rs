//! 8-bit convolution on channels-last f32 activations: dynamic per-tensor activation
//! quantization, u8 im2col, the [`crate::qgemm`] kernels and a fused f32 epilogue.
//!
//! Weights are quantized once, when the layer is built: per output channel, symmetric,
//! `q = round(w / s)` with `s = max|w| / 127`, so `q ∈ [-127, 127]`.
//!
//! Activations are quantized at run time, per tensor, with no calibration: one parallel pass
//! measures the input's range, a second writes `q = round(x / s) + zp` as bytes (asymmetric
//! unsigned, `zp = 0` and `s = max / 255` for the non-negative inputs every layer after a ReLU
//! sees). The im2col rows are then byte copies of that quantized input, the zero padding of the
//! convolution being `zp`. The GEMM accumulates exactly in i32 and its epilogue computes
//! `f32(acc − zp·Σq_w)·s·s_w + bias (+ residual)`, then ReLU, into an f32 NHWC output — so
//! residual connections, pooling and the classifier stay in f32.
//!
//! Work is split as in [`crate::conv`]: tiles of output pixels, each building its own im2col
//! block, or (few pixels, as in the last layers at batch 1) one im2col matrix and tiles of
//! output channels.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::nhwc_op::{self, Geometry, NhwcConv};
use crate::qgemm::{Epilogue, PackedQ, QIsa, QOperands};
use crate::threads::{budget, task_count};
use crate::{SharedMut, assume_filled, uninit_output};

/// Output pixels per tile (a multiple of every micro-tile height: 12, 6, 3, 4).
const ROW_TILE: usize = 72;

/// Smallest number of output channels a task computes when channels are split.
const MIN_COL_TILE: usize = 32;

/// Elements per task of the range and quantization passes.
const QUANT_CHUNK: usize = 1 << 15;

thread_local! {
    /// Per-thread u8 im2col scratch, reused across calls.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The quantized input of the call running on this thread, kept between calls so that it
    /// is neither zero-filled nor page-faulted in again on every layer (taken out while in use,
    /// so a nested call on the same thread simply allocates its own).
    static QUANTIZED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Per-tensor affine quantization of activations: `x ≈ (q − zero_point) · scale`, `q ∈ 0..=255`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// Size of one step.
    pub scale: f32,
    /// The byte that stands for 0.0.
    pub zero_point: u8,
}

impl ActQuant {
    /// Parameters covering `[min, max]` (widened to include 0, so that 0.0 — the convolution's
    /// padding — is exactly representable). Non-finite or empty ranges give scale 1.
    pub fn from_range(min: f32, max: f32) -> Self {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let span = hi - lo;
        if !span.is_finite() || span <= 0.0 {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = span / 255.0;
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }

    /// The byte for `x`: `round(x / scale) + zero_point`, clamped to `0..=255` (ties round up;
    /// NaN maps to 0).
    #[inline]
    pub fn quantize(&self, x: f32, inverse: f32) -> u8 {
        // Round half up by truncation after clamping to [0.5, 255.5); written as selects so
        // the loops that call it vectorize (NaN fails both compares and maps to 0).
        let v = x * inverse + (f32::from(self.zero_point) + 0.5);
        let v = if v >= 0.5 { v } else { 0.5 };
        let v = if v < 255.0 { v } else { 255.0 };
        v as i32 as u8
    }

    /// The value byte `q` stands for.
    pub fn dequantize(&self, q: u8) -> f32 {
        (f32::from(q) - f32::from(self.zero_point)) * self.scale
    }
}

/// Lanes of the vertical min/max and quantization loops (written so the compiler vectorizes
/// them: plain compare-and-select per lane, no cross-lane dependency).
const LANES: usize = 16;

/// Whether the AVX-512 range and quantization loops can run.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `(min, max)` of `values` (NaN ignored); `(+∞, −∞)` when empty.
fn range_of(values: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F detected.
        return unsafe { x86::range_of(values) };
    }
    range_of_portable(values)
}

/// [`range_of`] without intrinsics.
fn range_of_portable(values: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for j in 0..LANES {
            lo[j] = if chunk[j] < lo[j] { chunk[j] } else { lo[j] };
            hi[j] = if chunk[j] > hi[j] { chunk[j] } else { hi[j] };
        }
    }
    let acc = lo
        .iter()
        .zip(&hi)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |acc, (l, h)| {
            (acc.0.min(*l), acc.1.max(*h))
        });
    tail.iter()
        .fold(acc, |acc, &x| (acc.0.min(x), acc.1.max(x)))
}

/// Writes [`ActQuant::quantize`] of every element of `src` into `dst`.
fn quantize_run(quant: &ActQuant, src: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F/BW detected.
        return unsafe { x86::quantize_run(quant, src, dst) };
    }
    quantize_run_portable(quant, src, dst);
}

/// [`quantize_run`] without intrinsics.
fn quantize_run_portable(quant: &ActQuant, src: &[f32], dst: &mut [u8]) {
    let inverse = 1.0 / quant.scale;
    let mut src_chunks = src.chunks_exact(LANES);
    let mut dst_chunks = dst.chunks_exact_mut(LANES);
    for (s, d) in (&mut src_chunks).zip(&mut dst_chunks) {
        for j in 0..LANES {
            d[j] = quant.quantize(s[j], inverse);
        }
    }
    for (d, &x) in dst_chunks
        .into_remainder()
        .iter_mut()
        .zip(src_chunks.remainder())
    {
        *d = quant.quantize(x, inverse);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ActQuant, LANES};

    /// [`super::range_of`] with AVX-512 (same NaN rule: a NaN lane keeps the running value).
    ///
    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn range_of(values: &[f32]) -> (f32, f32) {
        let chunks = values.chunks_exact(LANES);
        let tail = chunks.remainder();
        let mut lo = _mm512_set1_ps(f32::INFINITY);
        let mut hi = _mm512_set1_ps(f32::NEG_INFINITY);
        for chunk in chunks {
            // SAFETY: the chunk holds 16 floats.
            let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            // min/max return the second operand when the first is NaN.
            lo = _mm512_min_ps(x, lo);
            hi = _mm512_max_ps(x, hi);
        }
        let acc = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        tail.iter()
            .fold(acc, |acc, &x| (acc.0.min(x), acc.1.max(x)))
    }

    /// [`super::quantize_run`] with AVX-512: the same operations as [`ActQuant::quantize`]
    /// (multiply, add, clamp, truncate), so the bytes are identical.
    ///
    /// # Safety
    /// AVX-512F and AVX-512BW available.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_run(quant: &ActQuant, src: &[f32], dst: &mut [u8]) {
        let inverse = 1.0 / quant.scale;
        let inv = _mm512_set1_ps(inverse);
        let offset = _mm512_set1_ps(f32::from(quant.zero_point) + 0.5);
        let (low, high) = (_mm512_set1_ps(0.5), _mm512_set1_ps(255.0));
        let mut src_chunks = src.chunks_exact(LANES);
        let mut dst_chunks = dst.chunks_exact_mut(LANES);
        for (s, d) in (&mut src_chunks).zip(&mut dst_chunks) {
            // SAFETY: both chunks hold 16 elements.
            unsafe {
                let v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(s.as_ptr()), inv), offset);
                // max returns `low` for NaN lanes, as the scalar select does.
                let v = _mm512_min_ps(_mm512_max_ps(v, low), high);
                let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
                _mm_storeu_si128(d.as_mut_ptr().cast(), bytes);
            }
        }
        for (d, &x) in dst_chunks
            .into_remainder()
            .iter_mut()
            .zip(src_chunks.remainder())
        {
            *d = quant.quantize(x, inverse);
        }
    }
}

/// Symmetric per-output-channel weight quantization: returns the quantized `O×rest` weights and
/// one scale per output channel (`w ≈ q · scale`, `q ∈ [-127, 127]`; an all-zero channel gets
/// scale 1).
pub fn quantize_weights(weight: &[f32], out_channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = weight.len() / out_channels.max(1);
    let mut q = Vec::with_capacity(weight.len());
    let mut scales = Vec::with_capacity(out_channels);
    for channel in weight.chunks(per.max(1)).take(out_channels) {
        let max = channel.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            1.0
        };
        scales.push(scale);
        q.extend(
            channel
                .iter()
                .map(|&w| (w / scale).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// A convolution with int8 weights for the NHWC kernel, plus f32 bias and optional ReLU.
/// Cheap to clone: the packed weights are shared.
#[derive(Clone)]
pub struct QConv {
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    relu: bool,
    /// `K×C_out` int8, `K` ordered `(ky, kx, c)`.
    weights: Arc<PackedQ>,
    /// Per output channel weight scale, padded to whole panels.
    weight_scale: Arc<[f32]>,
    /// Per output channel `Σ_k q_w`, padded (for the zero-point correction).
    weight_sum: Arc<[i32]>,
    /// Per output channel bias, padded.
    bias: Arc<[f32]>,
}

impl std::fmt::Debug for QConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QConv")
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .field("kernel", &self.kernel)
            .field("stride", &self.stride)
            .field("padding", &self.padding)
            .field("relu", &self.relu)
            .field("isa", &self.weights.isa())
            .finish_non_exhaustive()
    }
}

/// One call's quantized input and epilogue vectors.
struct Prepared {
    /// The quantized input in its first `len` bytes (the buffer may be longer).
    buffer: Vec<u8>,
    len: usize,
    quant: ActQuant,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

impl Prepared {
    /// The quantized input.
    fn input(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl QConv {
    /// Quantizes and packs an `O×I×k×k` (PyTorch OIHW) f32 weight, with an f32 `O` bias, for
    /// the path of this process ([`QIsa::detect`]).
    pub fn new(
        weight_oihw: &[f32],
        bias: &[f32],
        shape: [usize; 4],
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> Result<Self> {
        Self::new_for(
            weight_oihw,
            bias,
            shape,
            (stride, padding, relu),
            QIsa::detect(),
        )
    }

    /// [`Self::new`] for an explicit path (tests run every supported one).
    pub fn new_for(
        weight_oihw: &[f32],
        bias: &[f32],
        shape: [usize; 4],
        (stride, padding, relu): (usize, usize, bool),
        isa: QIsa,
    ) -> Result<Self> {
        let [out_channels, in_channels, kernel, kernel_w] = shape;
        if kernel != kernel_w || kernel == 0 || stride == 0 || out_channels == 0 {
            bail!("qconv: unsupported kernel {kernel}x{kernel_w} stride {stride}");
        }
        if weight_oihw.len() != shape.iter().product::<usize>() || bias.len() != out_channels {
            bail!("qconv: weight/bias sizes do not match shape {shape:?}");
        }
        if !isa.supported() {
            bail!(
                "qconv: the {} path is not supported by this CPU",
                isa.name()
            );
        }
        let (q, scales) = quantize_weights(weight_oihw, out_channels);
        let k_dim = kernel * kernel * in_channels;
        // GEMM row `(ky·k + kx)·C_in + c` of output channel `o` is OIHW element
        // `o·K + (c·k + ky)·k + kx`.
        let source_index = |row: usize, o: usize| {
            let (tap, c) = (row / in_channels, row % in_channels);
            o * k_dim + c * kernel * kernel + tap
        };
        let weights =
            PackedQ::pack_with(k_dim, out_channels, isa, |row, o| q[source_index(row, o)]);
        let np = weights.padded_n();
        let padded = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(np, 0.0);
            Arc::<[f32]>::from(p)
        };
        let mut sums: Vec<i32> = q
            .chunks(k_dim.max(1))
            .map(|c| c.iter().map(|&v| i32::from(v)).sum())
            .collect();
        sums.resize(np, 0);
        Ok(Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            relu,
            weights: Arc::new(weights),
            weight_scale: padded(&scales),
            weight_sum: sums.into(),
            bias: padded(bias),
        })
    }

    /// `conv(x) + bias`, then ReLU if configured. `x` is NHWC f32; so is the result.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        nhwc_op::forward(self, x)
    }

    /// `conv(x) + bias + residual`, then ReLU if configured.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        nhwc_op::forward_add(self, x, residual)
    }

    /// Output spatial size for an `h×w` input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        nhwc_op::output_size(h, w, [self.kernel, self.stride, self.padding])
    }

    /// Bytes of packed int8 weights.
    pub fn weight_bytes(&self) -> usize {
        self.weights.size_bytes()
    }

    fn geometry(&self, shape: &Shape) -> Result<Geometry> {
        let window = [self.kernel, self.stride, self.padding];
        Geometry::of("qconv", shape, self.in_channels, window)
    }

    fn output_shape(&self, g: &Geometry) -> Shape {
        Shape::from((g.batch, g.out_height, g.out_width, self.out_channels))
    }

    /// Measures the input's range, quantizes it and derives the epilogue vectors.
    fn prepare(&self, input: &[f32]) -> Prepared {
        let (min, max) = input.par_chunks(QUANT_CHUNK).map(range_of).reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        );
        let quant = ActQuant::from_range(min, max);
        let mut buffer = QUANTIZED.with_borrow_mut(std::mem::take);
        if buffer.len() < input.len() {
            buffer.resize(input.len(), 0);
        }
        buffer[..input.len()]
            .par_chunks_mut(QUANT_CHUNK)
            .zip(input.par_chunks(QUANT_CHUNK))
            .for_each(|(dst, src)| quantize_run(&quant, src, dst));
        let scale = self.weight_scale.iter().map(|&s| s * quant.scale).collect();
        let zp = i32::from(quant.zero_point);
        let zero = self.weight_sum.iter().map(|&s| s * zp).collect();
        Prepared {
            buffer,
            len: input.len(),
            quant,
            scale,
            zero,
        }
    }

    /// Runs the whole convolution; `residual`, when given, has the output's shape.
    fn run(&self, input: &[f32], g: &Geometry, residual: Option<&[f32]>) -> Vec<f32> {
        self.run_with_tasks(input, g, residual, task_count(budget()))
    }

    /// [`Self::run`] with an explicit task count (tests force both tiling strategies with it).
    fn run_with_tasks(
        &self,
        input: &[f32],
        g: &Geometry,
        residual: Option<&[f32]>,
        tasks: usize,
    ) -> Vec<f32> {
        let prepared = self.prepare(input);
        let rows = g.rows();
        let mut out = uninit_output(rows * self.out_channels);
        let epilogue = Epilogue {
            scale: &prepared.scale,
            zero: &prepared.zero,
            bias: &self.bias,
            residual: residual.map_or(std::ptr::null(), <[f32]>::as_ptr),
            relu: self.relu,
        };
        if tasks == 1 || rows.div_ceil(ROW_TILE) >= tasks {
            self.run_row_tiles(&prepared, g, &epilogue, &mut out);
        } else {
            self.run_split(&prepared, g, &epilogue, &mut out, tasks);
        }
        QUANTIZED.with_borrow_mut(|kept| {
            if kept.len() < prepared.buffer.len() {
                *kept = prepared.buffer;
            }
        });
        // SAFETY: both strategies cover every (row, column) of the output with one GEMM call,
        // whose epilogue writes every element of its range.
        unsafe { assume_filled(out) }
    }

    /// One task per tile of `ROW_TILE` output pixels, all output channels.
    fn run_row_tiles(
        &self,
        p: &Prepared,
        g: &Geometry,
        epilogue: &Epilogue,
        out: &mut [MaybeUninit<f32>],
    ) {
        let o = self.out_channels;
        let lda = self.im2col_stride();
        let shared = SharedMut(out.as_mut_ptr().cast());
        let rows = g.rows();
        (0..rows.div_ceil(ROW_TILE))
            .into_par_iter()
            .for_each(|tile| {
                let r0 = tile * ROW_TILE;
                let r1 = (r0 + ROW_TILE).min(rows);
                SCRATCH.with_borrow_mut(|scratch| {
                    scratch.resize((r1 - r0) * lda, 0);
                    self.im2col(p.input(), p.quant.zero_point, g, r0, r1, scratch);
                    // SAFETY: rows r0..r1 of the output belong to this task alone.
                    let c = unsafe { shared.ptr().add(r0 * o) };
                    let epilogue = epilogue.offset_residual(r0 * o);
                    self.gemm_tile(scratch, lda, c, r1 - r0, (0, o), &epilogue);
                });
            });
    }

    /// Builds the whole im2col matrix once, then one task per (pixel tile × channel tile).
    fn run_split(
        &self,
        p: &Prepared,
        g: &Geometry,
        epilogue: &Epilogue,
        out: &mut [MaybeUninit<f32>],
        tasks: usize,
    ) {
        let rows = g.rows();
        let o = self.out_channels;
        let lda = self.im2col_stride();
        let mut cols = vec![0u8; rows * lda];
        cols.par_chunks_mut(ROW_TILE * lda)
            .enumerate()
            .for_each(|(tile, block)| {
                let r0 = tile * ROW_TILE;
                self.im2col(
                    p.input(),
                    p.quant.zero_point,
                    g,
                    r0,
                    r0 + block.len() / lda,
                    block,
                );
            });
        let row_tiles = rows.div_ceil(ROW_TILE);
        let col_splits = tasks.div_ceil(row_tiles);
        let step = self.weights.column_step();
        let col_tile = o
            .div_ceil(col_splits)
            .next_multiple_of(step)
            .max(MIN_COL_TILE.next_multiple_of(step));
        let col_tiles = o.div_ceil(col_tile);
        let shared = SharedMut(out.as_mut_ptr().cast());
        (0..row_tiles * col_tiles).into_par_iter().for_each(|t| {
            let r0 = (t / col_tiles) * ROW_TILE;
            let r1 = (r0 + ROW_TILE).min(rows);
            let c0 = (t % col_tiles) * col_tile;
            let c1 = (c0 + col_tile).min(o);
            // SAFETY: row r0 of the output exists; this task alone writes rows r0..r1,
            // columns c0..c1.
            let c = unsafe { shared.ptr().add(r0 * o) };
            let a = &cols[r0 * lda..r1 * lda];
            let epilogue = epilogue.offset_residual(r0 * o);
            self.gemm_tile(a, lda, c, r1 - r0, (c0, c1), &epilogue);
        });
    }

    /// `out[r, c0..c1] = epilogue(a[r, :] · W[:, c0..c1])` for the `rows` rows of a tile;
    /// `out_tile` and the epilogue's residual point at the tile's first row.
    fn gemm_tile(
        &self,
        a: &[u8],
        lda: usize,
        out_tile: *mut f32,
        rows: usize,
        (c0, c1): (usize, usize),
        epilogue: &Epilogue,
    ) {
        assert!(lda >= self.weights.padded_k() && a.len() >= rows * lda && c1 <= self.out_channels);
        // SAFETY: `a` holds `rows` rows of ≥ Kp initialised bytes (checked above); `out_tile`
        // and `residual` (when not null) address `rows` rows of C_out floats whose columns
        // c0..c1 belong to the caller; c0 is 0 or a multiple of the column step.
        unsafe {
            self.weights.gemm(
                &QOperands {
                    a: a.as_ptr(),
                    lda,
                    rows,
                    c: out_tile,
                    ldc: self.out_channels,
                    c0,
                    c1,
                },
                epilogue,
            );
        }
    }

    /// Row stride of im2col blocks: `Kp` rounded up to a cache line, plus one line (against
    /// 4 KiB set aliasing between the rows of a micro-tile strip).
    fn im2col_stride(&self) -> usize {
        self.weights.padded_k().next_multiple_of(64) + 64
    }

    /// Writes the u8 im2col rows of output pixels `r0..r1` into `block`; taps in the
    /// convolution's zero padding get `zero_point`.
    fn im2col(
        &self,
        input: &[u8],
        zero_point: u8,
        g: &Geometry,
        r0: usize,
        r1: usize,
        block: &mut [u8],
    ) {
        let (c, k) = (self.in_channels, self.kernel);
        let run = k * c;
        let plane = g.out_height * g.out_width;
        for (row, dst) in (r0..r1).zip(block.chunks_exact_mut(self.im2col_stride())) {
            let n = row / plane;
            let oy = (row % plane) / g.out_width;
            let ox = row % g.out_width;
            let iy0 = (oy * self.stride) as isize - self.padding as isize;
            let ix0 = (ox * self.stride) as isize - self.padding as isize;
            let kx_lo = (-ix0).clamp(0, k as isize) as usize;
            let kx_hi = (g.width as isize - ix0).clamp(kx_lo as isize, k as isize) as usize;
            for (ky, dst_run) in dst[..k * run].chunks_exact_mut(run).enumerate() {
                let iy = iy0 + ky as isize;
                if iy < 0 || iy >= g.height as isize {
                    dst_run.fill(zero_point);
                    continue;
                }
                let pixel = (n * g.height + iy as usize) * g.width;
                let start = (pixel as isize + ix0 + kx_lo as isize) as usize * c;
                dst_run[..kx_lo * c].fill(zero_point);
                dst_run[kx_lo * c..kx_hi * c]
                    .copy_from_slice(&input[start..start + (kx_hi - kx_lo) * c]);
                dst_run[kx_hi * c..].fill(zero_point);
            }
        }
    }
}

impl NhwcConv for QConv {
    const NAME: &'static str = "nhwc-qconv";
    const RESIDUAL_NAME: &'static str = "nhwc-qconv-residual";
    type Plan = Geometry;

    fn plan(&self, input: &Shape) -> Result<(Geometry, Shape)> {
        let g = self.geometry(input)?;
        let shape = self.output_shape(&g);
        Ok((g, shape))
    }

    fn run(&self, input: &[f32], plan: &Geometry, residual: Option<&[f32]>) -> Vec<f32> {
        QConv::run(self, input, plan, residual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{max_abs_diff, random_tensor as random};
    use candle_core::Device;

    struct Case {
        batch: usize,
        in_ch: usize,
        h: usize,
        w: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    }

    fn to_vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn nhwc(t: &Tensor) -> Tensor {
        t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    /// candle's NCHW conv2d + bias (+ residual), then ReLU.
    fn conv_ref(x: &Tensor, w: &Tensor, b: &Tensor, res: Option<&Tensor>, c: &Case) -> Tensor {
        let y = x.conv2d(w, c.padding, c.stride, 1, 1).unwrap();
        let y = y
            .broadcast_add(&b.reshape((1, c.out_ch, 1, 1)).unwrap())
            .unwrap();
        let y = match res {
            Some(r) => (y + r).unwrap(),
            None => y,
        };
        y.relu().unwrap()
    }

    /// Every supported path, every tiling, with and without residual, against candle's f32
    /// convolution of the *dequantized* operands: the integer GEMM plus epilogue must equal it
    /// to float rounding. `shift` moves the input range (negative values exercise the zero
    /// point).
    fn check(c: &Case, seed: u64, shift: f32) {
        let x = (random(&[c.batch, c.in_ch, c.h, c.w], seed) + f64::from(shift)).unwrap();
        let w = random(&[c.out_ch, c.in_ch, c.kernel, c.kernel], seed + 1);
        let b = random(&[c.out_ch], seed + 2);
        let xs = to_vec(&x);
        let (min, max) = xs
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let aq = ActQuant::from_range(min, max);
        let inv = 1.0 / aq.scale;
        let xd: Vec<f32> = xs
            .iter()
            .map(|&v| aq.dequantize(aq.quantize(v, inv)))
            .collect();
        let xd = Tensor::from_vec(xd, x.shape(), &Device::Cpu).unwrap();
        let (wq, ws) = quantize_weights(&to_vec(&w), c.out_ch);
        let per = wq.len() / c.out_ch;
        let wd: Vec<f32> = wq
            .iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * ws[i / per])
            .collect();
        let wd = Tensor::from_vec(wd, w.shape(), &Device::Cpu).unwrap();
        let input = to_vec(&nhwc(&x));
        let wv = to_vec(&w);
        let bv = to_vec(&b);
        let shape = [c.out_ch, c.in_ch, c.kernel, c.kernel];
        for isa in QIsa::ALL.into_iter().filter(|i| i.supported()) {
            let conv = QConv::new_for(&wv, &bv, shape, (c.stride, c.padding, true), isa).unwrap();
            let g = conv
                .geometry(&Shape::from((c.batch, c.h, c.w, c.in_ch)))
                .unwrap();
            let res = random(&[c.batch, c.out_ch, g.out_height, g.out_width], seed + 3);
            let res_nhwc = to_vec(&nhwc(&res));
            for residual in [false, true] {
                let expected = conv_ref(&xd, &wd, &b, residual.then_some(&res), c);
                let bound = 1e-5
                    * (1.0
                        + to_vec(&expected.abs().unwrap())
                            .iter()
                            .fold(0f32, |m, &v| m.max(v)));
                for tasks in [1, 8, 64] {
                    let out =
                        conv.run_with_tasks(&input, &g, residual.then_some(&res_nhwc[..]), tasks);
                    let got = Tensor::from_vec(out, conv.output_shape(&g), &Device::Cpu)
                        .unwrap()
                        .permute((0, 3, 1, 2))
                        .unwrap();
                    let diff = max_abs_diff(&got, &expected);
                    assert!(
                        diff <= bound,
                        "{isa:?} k{} s{} p{} residual={residual} tasks={tasks}: diff {diff} > {bound}",
                        c.kernel,
                        c.stride,
                        c.padding
                    );
                }
            }
        }
    }

    #[test]
    fn qconv_3x3_equals_conv_of_dequantized_operands_on_every_path() {
        let case = Case {
            batch: 1,
            in_ch: 7,
            h: 13,
            w: 11,
            out_ch: 19,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        check(&case, 10, 1.0);
    }

    #[test]
    fn qconv_with_negative_inputs_uses_the_zero_point_and_pads_with_it() {
        // Inputs in [-1, 1): zero point near 128; the padded border must count as 0.0.
        let case = Case {
            batch: 2,
            in_ch: 3,
            h: 23,
            w: 17,
            out_ch: 16,
            kernel: 7,
            stride: 2,
            padding: 3,
        };
        check(&case, 30, 0.0);
    }

    #[test]
    fn qconv_stride_2_and_1x1_downsample_equal_conv_of_dequantized_operands() {
        let stride2 = Case {
            batch: 3,
            in_ch: 16,
            h: 15,
            w: 14,
            out_ch: 48,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        check(&stride2, 20, 1.0);
        let pointwise = Case {
            batch: 2,
            in_ch: 24,
            h: 9,
            w: 7,
            out_ch: 33,
            kernel: 1,
            stride: 2,
            padding: 0,
        };
        check(&pointwise, 40, 1.0);
    }

    #[test]
    fn qconv_with_many_row_tiles_and_long_k_equals_conv_of_dequantized_operands() {
        let case = Case {
            batch: 2,
            in_ch: 64,
            h: 16,
            w: 16,
            out_ch: 64,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        check(&case, 60, 1.0);
    }

    #[test]
    fn activation_quantization_round_trips_within_half_a_step() {
        let non_negative = ActQuant::from_range(0.0, 5.1);
        assert_eq!(non_negative.zero_point, 0);
        assert!((non_negative.scale - 0.02).abs() < 1e-7);
        let signed = ActQuant::from_range(-1.0, 3.0);
        assert_eq!(signed.zero_point, 64); // 1.0 / (4.0 / 255) = 63.75
        for q in [non_negative, signed] {
            let inv = 1.0 / q.scale;
            assert_eq!(q.dequantize(q.quantize(0.0, inv)), 0.0, "0.0 is exact");
            let (lo, hi) = (q.dequantize(0), q.dequantize(255));
            for i in 0..=1000 {
                let x = lo + (hi - lo) * i as f32 / 1000.0;
                let err = (q.dequantize(q.quantize(x, inv)) - x).abs();
                assert!(err <= q.scale * 0.5 + 1e-6, "{q:?} x={x}: error {err}");
            }
            // Out of range clamps to the ends.
            assert_eq!(q.quantize(hi + 10.0, inv), 255);
            assert_eq!(q.quantize(lo - 10.0, inv), 0);
        }
        assert_eq!(ActQuant::from_range(0.0, 0.0).scale, 1.0);
        assert_eq!(ActQuant::from_range(f32::NAN, 1.0).zero_point, 0);
    }

    #[test]
    fn range_and_quantization_runs_match_the_scalar_definitions() {
        // 16-lane bodies plus a tail of 5; the extremes sit in the body and in the tail.
        let mut values: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        values[3] = -2.5;
        values[35] = 4.0;
        values[20] = f32::NAN;
        assert_eq!(range_of(&values), (-2.5, 4.0));
        assert_eq!(range_of_portable(&values), (-2.5, 4.0));
        assert_eq!(range_of(&[]), (f32::INFINITY, f32::NEG_INFINITY));
        let q = ActQuant::from_range(-2.5, 4.0);
        let mut bytes = vec![7u8; values.len()];
        quantize_run(&q, &values, &mut bytes);
        let mut portable = vec![7u8; values.len()];
        quantize_run_portable(&q, &values, &mut portable);
        assert_eq!(bytes, portable);
        let inverse = 1.0 / q.scale;
        for (i, (&b, &x)) in bytes.iter().zip(&values).enumerate() {
            let want = if x.is_nan() {
                0
            } else {
                (x / q.scale + f32::from(q.zero_point))
                    .round()
                    .clamp(0.0, 255.0) as u8
            };
            assert!(
                b.abs_diff(want) <= u8::from((x * inverse).fract().abs() > 0.49),
                "{i}: {b} vs {want}"
            );
            assert_eq!(b, q.quantize(x, inverse));
        }
        assert_eq!(bytes[3], 0);
        assert_eq!(bytes[35], 255);
    }

    #[test]
    fn weights_quantize_symmetrically_per_output_channel() {
        let w = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, 1.0, -0.01];
        let (q, s) = quantize_weights(&w, 3);
        assert_eq!(s, vec![1.0 / 127.0, 1.0, 3.0 / 127.0]);
        assert_eq!(&q[..3], &[64, -127, 32]); // 63.5 rounds away from zero
        assert_eq!(&q[3..6], &[0, 0, 0]);
        assert_eq!(&q[6..], &[127, 42, 0]);
        for (i, (&qi, &wi)) in q.iter().zip(&w).enumerate() {
            assert!((f32::from(qi) * s[i / 3] - wi).abs() <= s[i / 3] / 2.0 + 1e-7);
        }
    }

    #[test]
    fn qconv_stays_close_to_the_f32_convolution() {
        // Not an exactness check: int8 error on a 3×3×64 layer stays under 2 % of the output
        // range (the dequantized-operand tests above pin the arithmetic itself).
        let x = (random(&[1, 64, 14, 14], 90) + 1.0).unwrap();
        let w = random(&[32, 64, 3, 3], 91);
        let b = random(&[32], 92);
        let conv = QConv::from_parts(&w, &b, 1, 1, false);
        let exact = crate::PackedConv::from_tensors(&w, &b, 1, 1, false).unwrap();
        let xn = nhwc(&x);
        let got = conv.forward(&xn).unwrap();
        let want = exact.forward(&xn).unwrap();
        let range = to_vec(&want.abs().unwrap())
            .iter()
            .fold(0f32, |m, &v| m.max(v));
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 0.02 * range, "diff {diff}, range {range}");
    }

    #[test]
    fn qconv_custom_ops_check_shapes_and_add_the_residual() {
        let w = random(&[8, 4, 3, 3], 80);
        let b = random(&[8], 81);
        let conv = QConv::from_parts(&w, &b, 1, 1, false);
        assert!(conv.forward(&random(&[1, 5, 5, 3], 82)).is_err());
        let x = random(&[1, 5, 5, 4], 83);
        assert!(conv.forward_add(&x, &random(&[1, 5, 4, 8], 84)).is_err());
        let r = random(&[1, 5, 5, 8], 85);
        let y = conv.forward(&x).unwrap();
        let z = conv.forward_add(&x, &r).unwrap();
        assert!(max_abs_diff(&z, &(y + &r).unwrap()) <= 1e-5);
        assert!(QConv::new(&[0.0; 10], &[0.0; 8], [8, 4, 3, 3], 1, 1, true).is_err());
    }

    impl QConv {
        fn from_parts(w: &Tensor, b: &Tensor, stride: usize, padding: usize, relu: bool) -> Self {
            let shape: [usize; 4] = w.dims().try_into().unwrap();
            Self::new(&to_vec(w), &to_vec(b), shape, stride, padding, relu).unwrap()
        }
    }
}
