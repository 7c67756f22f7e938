//! 2-D convolution on channels-last activations: tiled im2col + GEMM with a fused epilogue.
//!
//! Layouts:
//! * input `N×H×W×C_in` (NHWC), contiguous f32;
//! * weights packed once by [`PackedConv::new`] into a `K×C_out` row-major matrix with
//!   `K = kh·kw·C_in` ordered `(ky, kx, c)` — the order in which an NHWC im2col row is laid out;
//! * output `N×OH×OW×C_out` (NHWC), contiguous f32: row `p` of the GEMM result is output pixel `p`;
//! * optional residual, same shape as the output, added before the ReLU (`relu(conv + b + r)`).
//!
//! An im2col row for one output pixel is, for each kernel row `ky`, one contiguous run of
//! `kw·C_in` input floats (minus the columns that fall in the zero padding), so it is copied
//! with at most `kh` `memcpy`s instead of `kh·kw·C_in` element copies.
//!
//! Work is split into tiles of output pixels (each tile builds its own im2col block in a
//! per-thread scratch buffer that stays in cache, then runs one single-threaded GEMM); when there
//! are too few pixels to keep every thread busy (the 7×7 and 14×14 layers at batch 1), the im2col
//! matrix is built once and the output channels are split instead.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::matmul::{Isa, Operands, PackedB};
use crate::nhwc_op::{self, Geometry, NhwcConv};
use crate::threads::{budget, task_count};
use crate::{SharedMut, assume_filled, filled_mut, uninit_output};

/// Output pixels per tile. Small enough that the tile's im2col block
/// (`ROW_TILE × K` floats, at most 1.3 MB for `K = 4608`) and its output stay in L2.
/// A multiple of both micro-tile heights (12 and 6).
const ROW_TILE: usize = 72;

/// Smallest number of output channels a task computes when channels are split.
const MIN_COL_TILE: usize = 32;

thread_local! {
    /// Per-thread im2col scratch, reused across calls (grows to the largest tile seen).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A convolution with its weights packed for the NHWC kernel, plus bias and optional ReLU.
/// Cheap to clone: the packed weights are shared.
#[derive(Clone)]
pub struct PackedConv {
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    relu: bool,
    /// `K×C_out`, `K` ordered `(ky, kx, c)`, packed for the matmul micro-kernel.
    weights: Arc<PackedB>,
    /// One value per output channel.
    bias: Arc<[f32]>,
}

impl std::fmt::Debug for PackedConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConv")
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .field("kernel", &self.kernel)
            .field("stride", &self.stride)
            .field("padding", &self.padding)
            .field("relu", &self.relu)
            .finish_non_exhaustive()
    }
}

impl PackedConv {
    /// Packs an `O×I×k×k` (PyTorch OIHW) weight and an `O` bias for square kernel `k`.
    ///
    /// Costs one pass over the weights; done once at model load.
    pub fn new(
        weight_oihw: &[f32],
        bias: &[f32],
        shape: [usize; 4],
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> Result<Self> {
        let [out_channels, in_channels, kernel, kernel_w] = shape;
        if kernel != kernel_w || kernel == 0 || stride == 0 {
            bail!("conv: unsupported kernel {kernel}x{kernel_w} stride {stride}");
        }
        if weight_oihw.len() != shape.iter().product::<usize>() || bias.len() != out_channels {
            bail!("conv: weight/bias sizes do not match shape {shape:?}");
        }
        let k_dim = kernel * kernel * in_channels;
        // GEMM row `(ky·k + kx)·C_in + c` of output channel `o` is OIHW element
        // `o·K + (c·k + ky)·k + kx`.
        let source_index = |row: usize, o: usize| {
            let (tap, c) = (row / in_channels, row % in_channels);
            o * k_dim + c * kernel * kernel + tap
        };
        let weights = PackedB::pack_with(k_dim, out_channels, Isa::detect(), |row, o| {
            weight_oihw[source_index(row, o)]
        });
        Ok(Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            relu,
            weights: Arc::new(weights),
            bias: bias.into(),
        })
    }

    /// Packs candle tensors: weight `O×I×k×k`, bias `O` (any float dtype, converted to f32).
    pub fn from_tensors(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> Result<Self> {
        let (o, i, kh, kw) = weight.dims4()?;
        let w = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        Self::new(&w, &b, [o, i, kh, kw], stride, padding, relu)
    }

    /// `conv(x) + bias`, then ReLU if configured. `x` is NHWC; so is the result.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        nhwc_op::forward(self, x)
    }

    /// `conv(x) + bias + residual`, then ReLU if configured (a ResNet block's second conv).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        nhwc_op::forward_add(self, x, residual)
    }

    /// Output spatial size for an `h×w` input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        nhwc_op::output_size(h, w, [self.kernel, self.stride, self.padding])
    }

    fn k_dim(&self) -> usize {
        self.kernel * self.kernel * self.in_channels
    }

    fn geometry(&self, shape: &Shape) -> Result<Geometry> {
        let window = [self.kernel, self.stride, self.padding];
        Geometry::of("conv", shape, self.in_channels, window)
    }

    fn output_shape(&self, g: &Geometry) -> Shape {
        Shape::from((g.batch, g.out_height, g.out_width, self.out_channels))
    }

    /// True when the im2col matrix is the input itself (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
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
        let rows = g.rows();
        let mut out = uninit_output(rows * self.out_channels);
        if tasks == 1 || rows.div_ceil(ROW_TILE) >= tasks {
            self.run_row_tiles(input, g, residual, &mut out);
        } else {
            self.run_split(input, g, residual, &mut out, tasks);
        }
        // SAFETY: both strategies start every output row with `init_row`, which writes it all.
        unsafe { assume_filled(out) }
    }

    /// One task per tile of `ROW_TILE` output pixels, all output channels.
    fn run_row_tiles(
        &self,
        input: &[f32],
        g: &Geometry,
        residual: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let o = self.out_channels;
        let k_dim = self.k_dim();
        let lda = self.im2col_stride();
        out.par_chunks_mut(ROW_TILE * o)
            .enumerate()
            .for_each(|(tile, out_tile)| {
                let r0 = tile * ROW_TILE;
                let r1 = r0 + out_tile.len() / o;
                for (i, row) in out_tile.chunks_exact_mut(o).enumerate() {
                    let r = r0 + i;
                    self.init_row(row, 0, residual.map(|res| &res[r * o..(r + 1) * o]));
                }
                // SAFETY: `init_row` wrote every row of the tile.
                let out_tile = unsafe { filled_mut(out_tile) };
                if self.is_pointwise() {
                    let a = &input[r0 * k_dim..r1 * k_dim];
                    self.gemm_tile(a, k_dim, out_tile.as_mut_ptr(), r1 - r0, 0, o);
                } else {
                    SCRATCH.with_borrow_mut(|scratch| {
                        scratch.resize((r1 - r0) * lda, 0.0);
                        self.im2col(input, g, r0, r1, scratch);
                        self.gemm_tile(scratch, lda, out_tile.as_mut_ptr(), r1 - r0, 0, o);
                    });
                }
                if self.relu {
                    relu_in_place(out_tile);
                }
            });
    }

    /// Builds the whole im2col matrix once, then one task per (pixel tile × channel tile).
    fn run_split(
        &self,
        input: &[f32],
        g: &Geometry,
        residual: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
        tasks: usize,
    ) {
        let rows = g.rows();
        let o = self.out_channels;
        let k_dim = self.k_dim();
        let owned;
        let (a, lda): (&[f32], usize) = if self.is_pointwise() {
            (input, k_dim)
        } else {
            let lda = self.im2col_stride();
            let mut cols = vec![0f32; rows * lda];
            cols.par_chunks_mut(ROW_TILE * lda)
                .enumerate()
                .for_each(|(tile, block)| {
                    let r0 = tile * ROW_TILE;
                    self.im2col(input, g, r0, r0 + block.len() / lda, block);
                });
            owned = cols;
            (&owned, lda)
        };
        let row_tiles = rows.div_ceil(ROW_TILE);
        let col_splits = tasks.div_ceil(row_tiles);
        // Column tiles start on packed-panel boundaries (a requirement of `gemm_acc`).
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
            let row_slice = |r: usize| {
                // SAFETY: r < rows and c1 ≤ o, so the range lies inside `out`; the
                // (row r, columns c0..c1) cell range belongs to this task alone.
                unsafe {
                    std::slice::from_raw_parts_mut(
                        shared.ptr().add(r * o + c0).cast::<MaybeUninit<f32>>(),
                        c1 - c0,
                    )
                }
            };
            for r in r0..r1 {
                self.init_row(
                    row_slice(r),
                    c0,
                    residual.map(|res| &res[r * o..(r + 1) * o]),
                );
            }
            // SAFETY: as above, row r0 of `out` exists.
            let base = unsafe { shared.ptr().add(r0 * o) };
            self.gemm_tile(&a[r0 * lda..r1 * lda], lda, base, r1 - r0, c0, c1);
            if self.relu {
                for r in r0..r1 {
                    // SAFETY: `init_row` wrote this run above.
                    relu_in_place(unsafe { filled_mut(row_slice(r)) });
                }
            }
        });
    }

    /// Writes `bias[c0..] (+ residual_row[c0..])` into `dst`, a run of one output row that
    /// starts at column `c0`.
    fn init_row(&self, dst: &mut [MaybeUninit<f32>], c0: usize, residual_row: Option<&[f32]>) {
        let bias = &self.bias[c0..c0 + dst.len()];
        match residual_row {
            Some(res) => {
                for ((d, &b), &r) in dst.iter_mut().zip(bias).zip(&res[c0..]) {
                    d.write(b + r);
                }
            }
            None => {
                for (d, &b) in dst.iter_mut().zip(bias) {
                    d.write(b);
                }
            }
        }
    }

    /// `out[r, c0..c1] += a[r, :] · W[:, c0..c1]` for the `rows` rows of a tile, single-threaded.
    /// `out_tile` points at row 0, column 0 of the tile inside the full `rows×C_out` output.
    /// `a` holds the tile's rows with row stride `lda ≥ K`.
    fn gemm_tile(
        &self,
        a: &[f32],
        lda: usize,
        out_tile: *mut f32,
        rows: usize,
        c0: usize,
        c1: usize,
    ) {
        let k_dim = self.k_dim();
        assert!(lda >= k_dim && a.len() >= rows * lda && c1 <= self.out_channels);
        // SAFETY: `a` holds `rows` rows of `k_dim` floats (row stride lda, checked above); `out_tile`
        // addresses `rows×C_out` floats (row stride C_out) whose columns c0..c1 belong to the
        // caller; c0 is 0 or a multiple of the column step (see `run_split`).
        unsafe {
            self.weights.gemm_acc(&Operands {
                a: a.as_ptr(),
                lda,
                rows,
                c: out_tile,
                ldc: self.out_channels,
                c0,
                c1,
            });
        }
    }

    /// Row stride of im2col blocks: `K` rounded up to a cache line, plus one line. Without the
    /// extra line, `K = 4608` (layer4) puts every row of a micro-tile strip at the same offset
    /// modulo 4 KiB, so the strip's rows all compete for one L1 set.
    fn im2col_stride(&self) -> usize {
        self.k_dim().next_multiple_of(16) + 16
    }

    /// Writes the im2col rows of output pixels `r0..r1` into `block` (row stride
    /// [`Self::im2col_stride`]; the padding after the first `K` floats is left as is).
    fn im2col(&self, input: &[f32], g: &Geometry, r0: usize, r1: usize, block: &mut [f32]) {
        let (c, k) = (self.in_channels, self.kernel);
        let run = k * c;
        let plane = g.out_height * g.out_width;
        for (row, dst) in (r0..r1).zip(block.chunks_exact_mut(self.im2col_stride())) {
            let n = row / plane;
            let oy = (row % plane) / g.out_width;
            let ox = row % g.out_width;
            let iy0 = (oy * self.stride) as isize - self.padding as isize;
            let ix0 = (ox * self.stride) as isize - self.padding as isize;
            // Kernel columns whose input column lies inside the image.
            let kx_lo = (-ix0).clamp(0, k as isize) as usize;
            let kx_hi = (g.width as isize - ix0).clamp(kx_lo as isize, k as isize) as usize;
            for (ky, dst_run) in dst[..k * run].chunks_exact_mut(run).enumerate() {
                let iy = iy0 + ky as isize;
                if iy < 0 || iy >= g.height as isize {
                    dst_run.fill(0.0);
                    continue;
                }
                let pixel = (n * g.height + iy as usize) * g.width;
                let start = (pixel as isize + ix0 + kx_lo as isize) as usize * c;
                dst_run[..kx_lo * c].fill(0.0);
                dst_run[kx_lo * c..kx_hi * c]
                    .copy_from_slice(&input[start..start + (kx_hi - kx_lo) * c]);
                dst_run[kx_hi * c..].fill(0.0);
            }
        }
    }
}

fn relu_in_place(values: &mut [f32]) {
    for v in values {
        *v = v.max(0.0);
    }
}

impl NhwcConv for PackedConv {
    const NAME: &'static str = "nhwc-conv";
    const RESIDUAL_NAME: &'static str = "nhwc-conv-residual";
    type Plan = Geometry;

    fn plan(&self, input: &Shape) -> Result<(Geometry, Shape)> {
        let g = self.geometry(input)?;
        let shape = self.output_shape(&g);
        Ok((g, shape))
    }

    fn run(&self, input: &[f32], plan: &Geometry, residual: Option<&[f32]>) -> Vec<f32> {
        PackedConv::run(self, input, plan, residual)
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

    /// Reference: candle's NCHW conv2d + bias (+ residual), then ReLU.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, res: Option<&Tensor>, c: &Case) -> Tensor {
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

    /// Runs one case through both tiling strategies, with and without a residual.
    fn check(c: &Case, seed: u64) {
        let x = random(&[c.batch, c.in_ch, c.h, c.w], seed);
        let w = random(&[c.out_ch, c.in_ch, c.kernel, c.kernel], seed + 1);
        let b = random(&[c.out_ch], seed + 2);
        let conv = PackedConv::from_tensors(&w, &b, c.stride, c.padding, true).unwrap();
        let nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        let input = nhwc.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = conv.geometry(nhwc.shape()).unwrap();
        let out_shape = conv.output_shape(&g);
        let (oh, ow) = (g.out_height, g.out_width);
        let res_nchw = random(&[c.batch, c.out_ch, oh, ow], seed + 3);
        let res_nhwc = res_nchw
            .permute((0, 2, 3, 1))
            .unwrap()
            .contiguous()
            .unwrap();
        let res_vec = res_nhwc.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for residual in [false, true] {
            let expected = reference(&x, &w, &b, residual.then_some(&res_nchw), c);
            for tasks in [1, 8, 64] {
                let out = conv.run_with_tasks(&input, &g, residual.then_some(&res_vec[..]), tasks);
                let got = Tensor::from_vec(out, out_shape.clone(), &Device::Cpu)
                    .unwrap()
                    .permute((0, 3, 1, 2))
                    .unwrap();
                let diff = max_abs_diff(&got, &expected);
                assert!(
                    diff <= 1e-4,
                    "k{} s{} p{} {}x{}x{}x{} -> {} residual={residual} tasks={tasks}: max diff {diff}",
                    c.kernel,
                    c.stride,
                    c.padding,
                    c.batch,
                    c.in_ch,
                    c.h,
                    c.w,
                    c.out_ch
                );
            }
        }
    }

    #[test]
    fn conv_3x3_same_padding_matches_candle_on_odd_sizes() {
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
        check(&case, 10);
    }

    #[test]
    fn conv_3x3_stride_2_matches_candle_with_batch_of_three() {
        let case = Case {
            batch: 3,
            in_ch: 16,
            h: 15,
            w: 14,
            out_ch: 48,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        check(&case, 20);
    }

    #[test]
    fn conv_7x7_stride_2_pad_3_stem_shape_matches_candle() {
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
        check(&case, 30);
    }

    #[test]
    fn conv_1x1_stride_2_downsample_matches_candle() {
        let case = Case {
            batch: 2,
            in_ch: 24,
            h: 9,
            w: 7,
            out_ch: 33,
            kernel: 1,
            stride: 2,
            padding: 0,
        };
        check(&case, 40);
    }

    #[test]
    fn conv_1x1_stride_1_reads_the_input_directly_and_matches_candle() {
        let case = Case {
            batch: 2,
            in_ch: 5,
            h: 12,
            w: 11,
            out_ch: 70,
            kernel: 1,
            stride: 1,
            padding: 0,
        };
        check(&case, 50);
    }

    #[test]
    fn conv_with_many_row_tiles_and_long_k_matches_candle() {
        // 2×16×16 = 512 output pixels (8 row tiles); K = 9×64 = 576 as in ResNet's layer1.
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
        check(&case, 60);
    }

    #[test]
    fn conv_through_candle_custom_op_matches_direct_run() {
        let x = random(&[2, 5, 6, 4], 70);
        let w = random(&[8, 4, 3, 3], 71);
        let b = random(&[8], 72);
        let conv = PackedConv::from_tensors(&w, &b, 1, 1, false).unwrap();
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 5, 6, 8]);
        let r = random(&[2, 5, 6, 8], 73);
        let z = conv.forward_add(&x, &r).unwrap();
        // Without ReLU, the residual variant is exactly the plain one plus the residual.
        assert!(max_abs_diff(&z, &(y + &r).unwrap()) <= 1e-6);
        // Negative outputs survive when ReLU is off.
        let min = z
            .flatten_all()
            .unwrap()
            .min(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(min < 0.0);
    }

    #[test]
    fn conv_rejects_wrong_channel_count_and_mismatched_residual() {
        let w = random(&[8, 4, 3, 3], 80);
        let b = random(&[8], 81);
        let conv = PackedConv::from_tensors(&w, &b, 1, 1, true).unwrap();
        assert!(conv.forward(&random(&[1, 5, 5, 3], 82)).is_err());
        let x = random(&[1, 5, 5, 4], 83);
        assert!(conv.forward_add(&x, &random(&[1, 5, 4, 8], 84)).is_err());
        assert!(PackedConv::new(&[0.0; 10], &[0.0; 8], [8, 4, 3, 3], 1, 1, true).is_err());
    }
}
