//! Winograd convolution `F(m×m, 3×3)` for 3×3, stride-1, padding-1 layers on channels-last
//! activations, with the same fused bias + residual + ReLU epilogue as [`crate::conv`].
//!
//! Layouts:
//! * input `N×H×W×C_in` (NHWC), contiguous f32; output `N×H×W×C_out` (NHWC), same `H×W`;
//! * optional residual with the output's shape, added before the ReLU (`relu(conv + b + r)`);
//! * weights: given as PyTorch OIHW `O×I×3×3`, transformed once at load into `α²` matrices
//!   `U_ξ = (G g G^T)_ξ` of shape `C_in × C_out` (`α = m + 2`, `ξ` = position in the `α×α`
//!   transformed tile, row-major) and packed for [`crate::matmul`];
//! * scratch `V` (transformed input) is `α² × tiles × ldv` and `M` (products) `α² × tiles × ldm`:
//!   matrix `ξ` of each is a row-major `tiles × C` block, so the `α²` element-wise products are
//!   `α²` ordinary GEMMs `M_ξ = V_ξ · U_ξ` on the packed micro-kernels. Row strides are the
//!   channel count rounded up to 16 plus 16 floats (whole 16-lane chunks, no 4 KiB aliasing).
//!
//! The output is cut into `m×m` tiles (edge tiles clipped; their input patch is zero-padded),
//! each reading an `α×α` input patch. Tiles are processed in blocks small enough that a block's
//! `V` and `M` stay in L2: input transform, `α²` GEMMs and output transform of one block run
//! back to back on one thread. When there are too few blocks to keep every thread busy (the
//! 14×14 and 7×7 layers at batch 1), the whole `V` is built first and the `α²` GEMMs are spread
//! over the threads instead.
//!
//! Transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015):
//! `Y = A^T [(G g G^T) ⊙ (B^T d B)] A`. `F(2,3)` uses coefficients 0, ±1, ±½ and is accurate to
//! a few ulps more than direct convolution; `F(4,3)` (6×6 tiles, 4× fewer multiplies) uses
//! coefficients up to 8 and 1/24 and loses about one more decimal digit.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::matmul::{Isa, Operands, PackedB};
use crate::nhwc_op::{self, NhwcConv};
use crate::threads::{budget, task_count};
use crate::{SharedMut, assume_filled, uninit_output};

/// Which Winograd tiling a [`WinogradConv`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `F(2×2, 3×3)`: 4×4 input tiles, 16 GEMMs, 2.25× fewer multiplies than direct.
    F2x3,
    /// `F(4×4, 3×3)`: 6×6 input tiles, 36 GEMMs, 4× fewer multiplies, less accurate.
    F4x3,
}

impl Variant {
    /// Output tile side `m`.
    pub fn tile(self) -> usize {
        match self {
            Variant::F2x3 => F23::M,
            Variant::F4x3 => F43::M,
        }
    }

    /// Input tile side `α = m + 2`.
    fn alpha(self) -> usize {
        self.tile() + 2
    }

    /// Kernel transform `G` (`α × 3`).
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Variant::F2x3 => F23::G,
            Variant::F4x3 => F43::G,
        }
    }
}

/// Channels processed together by the transforms (one AVX-512 register, two AVX2 ones).
const LANES: usize = 16;
/// Largest `α` supported (F(4,3)).
const MAX_ALPHA: usize = 6;
/// L2 budget for one block's `V` and `M` scratch.
const BLOCK_BYTES: usize = 512 * 1024;
/// Bounds on tiles per block (multiples of both micro-tile heights, 12 and 6).
const MIN_BLOCK: usize = 24;
const MAX_BLOCK: usize = 96;

type Lane = [f32; LANES];

#[inline(always)]
fn lane(f: impl Fn(usize) -> f32) -> Lane {
    std::array::from_fn(f)
}

/// One Winograd tiling: sizes and its two data transforms, applied to `α` lanes (a column or a
/// row of a tile, 16 channels at a time).
trait Transform {
    /// Output tile side.
    const M: usize;
    /// Input tile side.
    const A: usize;
    /// Kernel transform `G`, `A × 3`.
    const G: &'static [[f64; 3]];
    /// `y[0..A] = B^T · x[0..A]`.
    fn input(x: &[Lane], y: &mut [Lane]);
    /// `y[0..M] = A^T · x[0..A]`.
    fn output(x: &[Lane], y: &mut [Lane]);
}

/// `F(2,3)`; matrices from Lavin & Gray (2015), section 4.1.
struct F23;

impl Transform for F23 {
    const M: usize = 2;
    const A: usize = 4;
    const G: &'static [[f64; 3]] = &[
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn input(x: &[Lane], y: &mut [Lane]) {
        let (x0, x1, x2, x3) = (&x[0], &x[1], &x[2], &x[3]);
        y[0] = lane(|l| x0[l] - x2[l]);
        y[1] = lane(|l| x1[l] + x2[l]);
        y[2] = lane(|l| x2[l] - x1[l]);
        y[3] = lane(|l| x1[l] - x3[l]);
    }

    #[inline(always)]
    fn output(x: &[Lane], y: &mut [Lane]) {
        let (x0, x1, x2, x3) = (&x[0], &x[1], &x[2], &x[3]);
        y[0] = lane(|l| x0[l] + x1[l] + x2[l]);
        y[1] = lane(|l| x1[l] - x2[l] - x3[l]);
    }
}

/// `F(4,3)`; matrices from Lavin & Gray (2015), section 4.2 (`B^T`, `G`, `A^T` for 6×6 tiles).
struct F43;

impl Transform for F43 {
    const M: usize = 4;
    const A: usize = 6;
    const G: &'static [[f64; 3]] = &[
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn input(x: &[Lane], y: &mut [Lane]) {
        let (x0, x1, x2, x3, x4, x5) = (&x[0], &x[1], &x[2], &x[3], &x[4], &x[5]);
        y[0] = lane(|l| 4.0 * x0[l] - 5.0 * x2[l] + x4[l]);
        y[1] = lane(|l| -4.0 * (x1[l] + x2[l]) + x3[l] + x4[l]);
        y[2] = lane(|l| 4.0 * (x1[l] - x2[l]) - x3[l] + x4[l]);
        y[3] = lane(|l| 2.0 * (x3[l] - x1[l]) - x2[l] + x4[l]);
        y[4] = lane(|l| 2.0 * (x1[l] - x3[l]) - x2[l] + x4[l]);
        y[5] = lane(|l| 4.0 * x1[l] - 5.0 * x3[l] + x5[l]);
    }

    #[inline(always)]
    fn output(x: &[Lane], y: &mut [Lane]) {
        let (x0, x1, x2, x3, x4, x5) = (&x[0], &x[1], &x[2], &x[3], &x[4], &x[5]);
        y[0] = lane(|l| x0[l] + x1[l] + x2[l] + x3[l] + x4[l]);
        y[1] = lane(|l| x1[l] - x2[l] + 2.0 * (x3[l] - x4[l]));
        y[2] = lane(|l| x1[l] + x2[l] + 4.0 * (x3[l] + x4[l]));
        y[3] = lane(|l| x1[l] - x2[l] + 8.0 * (x3[l] - x4[l]) + x5[l]);
    }
}

thread_local! {
    /// Per-thread `V` + `M` scratch of one block, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A 3×3 stride-1 pad-1 convolution run with Winograd `F(m,3)`, plus bias and optional ReLU.
/// Cheap to clone: the transformed weights are shared.
#[derive(Clone)]
pub struct WinogradConv {
    variant: Variant,
    in_channels: usize,
    out_channels: usize,
    relu: bool,
    /// `α²` matrices `C_in × C_out`, packed for the matmul micro-kernel.
    weights: Arc<[PackedB]>,
    /// One value per output channel, zero-padded to whole lanes.
    bias: Arc<[f32]>,
}

impl std::fmt::Debug for WinogradConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinogradConv")
            .field("variant", &self.variant)
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels)
            .field("relu", &self.relu)
            .finish_non_exhaustive()
    }
}

/// Spatial sizes and tiling of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    batch: usize,
    height: usize,
    width: usize,
    tiles_y: usize,
    tiles_x: usize,
    /// Tiles over the whole batch.
    tiles: usize,
}

/// Where one block's scratch lives: `V` then `M`, each `α²` matrices of `rows` rows.
#[derive(Clone, Copy)]
struct Block {
    v: *mut f32,
    m: *mut f32,
    /// Row capacity of each `ξ` matrix (distance between matrices is `rows · ld`).
    rows: usize,
    /// Tiles in the block (`≤ rows`), the GEMM row count.
    count: usize,
}

impl WinogradConv {
    /// Transforms and packs an `O×I×3×3` (PyTorch OIHW) weight and an `O` bias.
    ///
    /// `U_ξ[c][o] = (G g_{o,c} G^T)_ξ` is computed in f64 straight into the packed storage (no
    /// intermediate copy); done once at model load.
    pub fn new(
        weight_oihw: &[f32],
        bias: &[f32],
        shape: [usize; 4],
        relu: bool,
        variant: Variant,
    ) -> Result<Self> {
        let [out_channels, in_channels, kh, kw] = shape;
        if kh != 3 || kw != 3 {
            bail!("winograd: only 3x3 kernels, got {kh}x{kw}");
        }
        if weight_oihw.len() != shape.iter().product::<usize>() || bias.len() != out_channels {
            bail!("winograd: weight/bias sizes do not match shape {shape:?}");
        }
        let (alpha, g) = (variant.alpha(), variant.g());
        let isa = Isa::detect();
        let weights: Vec<PackedB> = (0..alpha * alpha)
            .map(|xi| {
                let (i, j) = (xi / alpha, xi % alpha);
                PackedB::pack_with(in_channels, out_channels, isa, |c, o| {
                    let k = &weight_oihw[(o * in_channels + c) * 9..][..9];
                    let mut sum = 0f64;
                    for (a, gi) in g[i].iter().enumerate() {
                        for (b, gj) in g[j].iter().enumerate() {
                            sum += gi * f64::from(k[a * 3 + b]) * gj;
                        }
                    }
                    sum as f32
                })
            })
            .collect();
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(out_channels.next_multiple_of(LANES), 0.0);
        Ok(Self {
            variant,
            in_channels,
            out_channels,
            relu,
            weights: weights.into(),
            bias: padded_bias.into(),
        })
    }

    /// Transforms candle tensors: weight `O×I×3×3`, bias `O` (any float dtype).
    pub fn from_tensors(
        weight: &Tensor,
        bias: &Tensor,
        relu: bool,
        variant: Variant,
    ) -> Result<Self> {
        let (o, i, kh, kw) = weight.dims4()?;
        let w = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        Self::new(&w, &b, [o, i, kh, kw], relu, variant)
    }

    /// `conv(x) + bias`, then ReLU if configured. `x` is NHWC; so is the result.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        nhwc_op::forward(self, x)
    }

    /// `conv(x) + bias + residual`, then ReLU if configured (a ResNet block's second conv).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        nhwc_op::forward_add(self, x, residual)
    }

    /// The tiling in use.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    fn grid(&self, shape: &Shape) -> Result<Grid> {
        let (batch, height, width, channels) = shape.dims4()?;
        if channels != self.in_channels {
            bail!(
                "winograd: input has {channels} channels (NHWC), expected {}",
                self.in_channels
            );
        }
        if height == 0 || width == 0 {
            bail!("winograd: empty input {height}x{width}");
        }
        let m = self.variant.tile();
        let (tiles_y, tiles_x) = (height.div_ceil(m), width.div_ceil(m));
        let grid = Grid {
            batch,
            height,
            width,
            tiles_y,
            tiles_x,
            tiles: batch * tiles_y * tiles_x,
        };
        Ok(grid)
    }

    /// Row stride of `V`.
    fn ldv(&self) -> usize {
        self.in_channels.next_multiple_of(LANES) + LANES
    }

    /// Row stride of `M`.
    fn ldm(&self) -> usize {
        self.out_channels.next_multiple_of(LANES) + LANES
    }

    /// Tiles per block so that the block's `V` and `M` fit [`BLOCK_BYTES`].
    fn block_tiles(&self) -> usize {
        let alpha = self.variant.alpha();
        let per_tile = alpha * alpha * (self.ldv() + self.ldm()) * 4;
        (BLOCK_BYTES / per_tile).clamp(MIN_BLOCK, MAX_BLOCK) / 12 * 12
    }

    /// Runs the whole convolution on NHWC `input`; `residual`, when given, has the output's shape.
    fn run(&self, input: &[f32], grid: &Grid, residual: Option<&[f32]>) -> Vec<f32> {
        self.run_with_tasks(input, grid, residual, task_count(budget()))
    }

    /// [`Self::run`] with an explicit task count (tests force both strategies with it).
    fn run_with_tasks(
        &self,
        input: &[f32],
        grid: &Grid,
        residual: Option<&[f32]>,
        tasks: usize,
    ) -> Vec<f32> {
        match self.variant {
            Variant::F2x3 => self.run_t::<F23>(input, grid, residual, tasks),
            Variant::F4x3 => self.run_t::<F43>(input, grid, residual, tasks),
        }
    }

    fn run_t<T: Transform>(
        &self,
        input: &[f32],
        grid: &Grid,
        residual: Option<&[f32]>,
        tasks: usize,
    ) -> Vec<f32> {
        let pixels = grid.batch * grid.height * grid.width;
        if grid.tiles == 0 {
            return Vec::new(); // empty batch
        }
        let mut out = uninit_output(pixels * self.out_channels);
        let block = self.block_tiles();
        let blocks = grid.tiles.div_ceil(block);
        let ctx = Ctx {
            input,
            grid,
            residual,
            out: SharedMut(out.as_mut_ptr().cast()),
        };
        if tasks == 1 || blocks >= tasks {
            self.run_blocks::<T>(&ctx, block);
        } else {
            self.run_split::<T>(&ctx, tasks);
        }
        // SAFETY: the output transform wrote every pixel of every tile (the tiles cover the
        // output; pixels past its edge are skipped, not left out).
        unsafe { assume_filled(out) }
    }

    /// One task per block of tiles: transform in, `α²` GEMMs, transform out, all in the
    /// thread's scratch.
    fn run_blocks<T: Transform>(&self, ctx: &Ctx<'_>, block: usize) {
        let alpha2 = T::A * T::A;
        let (ldv, ldm) = (self.ldv(), self.ldm());
        let blocks = ctx.grid.tiles.div_ceil(block);
        (0..blocks).into_par_iter().for_each(|b| {
            SCRATCH.with_borrow_mut(|scratch| {
                let need = alpha2 * block * (ldv + ldm);
                if scratch.len() < need {
                    scratch.resize(need, 0.0);
                }
                let (v, m) = scratch.split_at_mut(alpha2 * block * ldv);
                let first = b * block;
                let blk = Block {
                    v: v.as_mut_ptr(),
                    m: m.as_mut_ptr(),
                    rows: block,
                    count: block.min(ctx.grid.tiles - first),
                };
                for r in 0..blk.count {
                    // SAFETY: `v` holds α² matrices of `block` rows of `ldv` floats; r < block.
                    unsafe { self.input_tile::<T>(ctx, first + r, blk.v.add(r * ldv), blk.rows) };
                }
                for xi in 0..alpha2 {
                    // SAFETY: matrix ξ of V/M has `block ≥ count` rows; columns 0..C_out.
                    unsafe { self.gemm(xi, &blk, 0, self.out_channels) };
                }
                for r in 0..blk.count {
                    // SAFETY: as above for `m`; the tile's output pixels belong to this task.
                    unsafe { self.output_tile::<T>(ctx, first + r, blk.m.add(r * ldm), blk.rows) };
                }
            });
        });
    }

    /// Few tiles: the whole `V` first (tasks over tiles), then the `α²` GEMMs (tasks over `ξ`
    /// and output-channel ranges), then the output transform (tasks over tiles).
    fn run_split<T: Transform>(&self, ctx: &Ctx<'_>, tasks: usize) {
        let alpha2 = T::A * T::A;
        let (ldv, ldm) = (self.ldv(), self.ldm());
        let tiles = ctx.grid.tiles;
        // Used through raw pointers only. The input transform writes whole lanes of every V
        // row and the GEMM reads columns 0..C_in of them; the GEMM writes columns 0..C_out of
        // M, and the output transform reads whole lanes, which go past C_out (into zeros) only
        // when C_out is not a multiple of the lane width.
        let mut v = uninit_output(alpha2 * tiles * ldv);
        let mut m = if self.out_channels.is_multiple_of(LANES) {
            uninit_output(alpha2 * tiles * ldm)
        } else {
            vec![MaybeUninit::new(0.0); alpha2 * tiles * ldm]
        };
        let (vs, ms) = (
            SharedMut(v.as_mut_ptr().cast()),
            SharedMut(m.as_mut_ptr().cast()),
        );
        let per_task = tiles.div_ceil(tasks);
        (0..tiles.div_ceil(per_task)).into_par_iter().for_each(|t| {
            for r in t * per_task..((t + 1) * per_task).min(tiles) {
                // SAFETY: row r of every ξ matrix of V; rows are disjoint between tasks.
                unsafe { self.input_tile::<T>(ctx, r, vs.ptr().add(r * ldv), tiles) };
            }
        });
        let step = self.weights[0].column_step();
        let col_splits = tasks.div_ceil(alpha2);
        let col_tile = self
            .out_channels
            .div_ceil(col_splits)
            .next_multiple_of(step);
        let col_tiles = self.out_channels.div_ceil(col_tile);
        (0..alpha2 * col_tiles).into_par_iter().for_each(|t| {
            let (xi, c0) = (t / col_tiles, (t % col_tiles) * col_tile);
            let c1 = (c0 + col_tile).min(self.out_channels);
            let blk = Block {
                v: vs.ptr(),
                m: ms.ptr(),
                rows: tiles,
                count: tiles,
            };
            // SAFETY: matrix ξ, columns c0..c1 (c0 a multiple of the column step) belong to
            // this task alone.
            unsafe { self.gemm(xi, &blk, c0, c1) };
        });
        (0..tiles.div_ceil(per_task)).into_par_iter().for_each(|t| {
            for r in t * per_task..((t + 1) * per_task).min(tiles) {
                // SAFETY: M is complete; each tile's output pixels belong to one task.
                unsafe { self.output_tile::<T>(ctx, r, ms.ptr().add(r * ldm), tiles) };
            }
        });
        drop((v, m));
    }

    /// `M_ξ[0..count, c0..c1] = V_ξ[0..count, :] · U_ξ[:, c0..c1]` for one block.
    ///
    /// # Safety
    /// `blk` addresses α² `V` matrices of `blk.rows × ldv` and `M` matrices of `blk.rows × ldm`
    /// floats; columns `c0..c1` of `M_ξ` are not accessed concurrently; `c0` is a multiple of
    /// the column step.
    unsafe fn gemm(&self, xi: usize, blk: &Block, c0: usize, c1: usize) {
        let (ldv, ldm) = (self.ldv(), self.ldm());
        // SAFETY: caller contract; matrix ξ starts ξ·rows rows into each buffer.
        unsafe {
            let a = blk.v.add(xi * blk.rows * ldv);
            let c = blk.m.add(xi * blk.rows * ldm);
            self.weights[xi].gemm_set(&Operands {
                a,
                lda: ldv,
                rows: blk.count,
                c,
                ldc: ldm,
                c0,
                c1,
            });
        }
    }

    /// Gathers the `α×α` input patch of `tile` (zero outside the image) and writes
    /// `B^T d B` to row `v` of each `V_ξ` (`v` points at row `r` of `V_0`; matrix `ξ` is
    /// `rows · ldv` floats further).
    ///
    /// # Safety
    /// `v + ξ·rows·ldv + [0, ldv)` is writable for every `ξ < α²` and not accessed concurrently.
    unsafe fn input_tile<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        v: *mut f32,
        rows: usize,
    ) {
        // SAFETY (all arms): caller contract; the ISA was detected on this CPU.
        match Isa::detect() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.input_tile_avx512::<T>(ctx, tile, v, rows) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.input_tile_avx2::<T>(ctx, tile, v, rows) },
            _ => unsafe { self.input_tile_body::<T>(ctx, tile, v, rows) },
        }
    }

    /// [`Self::input_tile`] compiled for AVX-512 (the 16-lane arithmetic becomes vector code).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn input_tile_avx512<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        v: *mut f32,
        rows: usize,
    ) {
        // SAFETY: forwarded caller contract.
        unsafe { self.input_tile_body::<T>(ctx, tile, v, rows) }
    }

    /// [`Self::input_tile`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn input_tile_avx2<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        v: *mut f32,
        rows: usize,
    ) {
        // SAFETY: forwarded caller contract.
        unsafe { self.input_tile_body::<T>(ctx, tile, v, rows) }
    }

    /// Body of [`Self::input_tile`], inlined into each ISA's copy.
    #[inline(always)]
    unsafe fn input_tile_body<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        v: *mut f32,
        rows: usize,
    ) {
        let (a, cin, g) = (T::A, self.in_channels, ctx.grid);
        let (n, ty, tx) = tile_coords(g, tile);
        let y0 = (ty * T::M) as isize - 1;
        let x0 = (tx * T::M) as isize - 1;
        let stride = rows * self.ldv();
        let mut d = [[0f32; LANES]; MAX_ALPHA * MAX_ALPHA];
        let mut t = [[0f32; LANES]; MAX_ALPHA * MAX_ALPHA];
        let (mut col, mut res) = ([[0f32; LANES]; MAX_ALPHA], [[0f32; LANES]; MAX_ALPHA]);
        for c0 in (0..cin).step_by(LANES) {
            let width = LANES.min(cin - c0);
            for i in 0..a {
                let iy = y0 + i as isize;
                for j in 0..a {
                    let ix = x0 + j as isize;
                    let dst = &mut d[i * a + j];
                    let inside =
                        (0..g.height as isize).contains(&iy) && (0..g.width as isize).contains(&ix);
                    if inside {
                        let pixel = (n * g.height + iy as usize) * g.width + ix as usize;
                        let src = &ctx.input[pixel * cin + c0..][..width];
                        // Whole lanes get a fixed-size copy (inlined), the tail a partial one.
                        match <&Lane>::try_from(src) {
                            Ok(full) => *dst = *full,
                            Err(_) => *dst = lane(|l| src.get(l).copied().unwrap_or(0.0)),
                        }
                    } else {
                        *dst = [0.0; LANES];
                    }
                }
            }
            for j in 0..a {
                for k in 0..a {
                    col[k] = d[k * a + j];
                }
                T::input(&col[..a], &mut res[..a]);
                for i in 0..a {
                    t[i * a + j] = res[i];
                }
            }
            for i in 0..a {
                T::input(&t[i * a..i * a + a], &mut res[..a]);
                for (j, value) in res[..a].iter().enumerate() {
                    // SAFETY: caller contract; c0 + LANES ≤ ldv.
                    unsafe {
                        let dst = v.add((i * a + j) * stride + c0);
                        dst.cast::<Lane>().write_unaligned(*value);
                    }
                }
            }
        }
    }

    /// Reads row `m` of each `M_ξ` (`m` points at row `r` of `M_0`), computes `A^T M A`, adds
    /// bias (and residual), applies ReLU and writes the tile's in-image output pixels.
    ///
    /// # Safety
    /// `m + ξ·rows·ldm + [0, ldm)` is readable for every `ξ < α²`; the tile's output pixels are
    /// not accessed concurrently.
    unsafe fn output_tile<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        m: *const f32,
        rows: usize,
    ) {
        // SAFETY (all arms): caller contract; the ISA was detected on this CPU.
        match Isa::detect() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.output_tile_avx512::<T>(ctx, tile, m, rows) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.output_tile_avx2::<T>(ctx, tile, m, rows) },
            _ => unsafe { self.output_tile_body::<T>(ctx, tile, m, rows) },
        }
    }

    /// [`Self::output_tile`] compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_tile_avx512<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        m: *const f32,
        rows: usize,
    ) {
        // SAFETY: forwarded caller contract.
        unsafe { self.output_tile_body::<T>(ctx, tile, m, rows) }
    }

    /// [`Self::output_tile`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn output_tile_avx2<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        m: *const f32,
        rows: usize,
    ) {
        // SAFETY: forwarded caller contract.
        unsafe { self.output_tile_body::<T>(ctx, tile, m, rows) }
    }

    /// Body of [`Self::output_tile`], inlined into each ISA's copy.
    #[inline(always)]
    unsafe fn output_tile_body<T: Transform>(
        &self,
        ctx: &Ctx<'_>,
        tile: usize,
        m: *const f32,
        rows: usize,
    ) {
        let (a, mt, cout, g) = (T::A, T::M, self.out_channels, ctx.grid);
        let (n, ty, tx) = tile_coords(g, tile);
        let stride = rows * self.ldm();
        let mut d = [[0f32; LANES]; MAX_ALPHA * MAX_ALPHA];
        let mut t = [[0f32; LANES]; MAX_ALPHA * MAX_ALPHA];
        let (mut col, mut res) = ([[0f32; LANES]; MAX_ALPHA], [[0f32; LANES]; MAX_ALPHA]);
        for c0 in (0..cout).step_by(LANES) {
            let width = LANES.min(cout - c0);
            for (xi, dst) in d[..a * a].iter_mut().enumerate() {
                // SAFETY: caller contract; c0 + LANES ≤ ldm.
                *dst = unsafe { m.add(xi * stride + c0).cast::<Lane>().read_unaligned() };
            }
            for j in 0..a {
                for k in 0..a {
                    col[k] = d[k * a + j];
                }
                T::output(&col[..a], &mut res[..mt]);
                for i in 0..mt {
                    t[i * a + j] = res[i];
                }
            }
            // The bias is zero-padded to whole lanes.
            let bias: Lane = lane(|l| self.bias[c0 + l]);
            for i in 0..mt {
                let oy = ty * mt + i;
                if oy >= g.height {
                    break;
                }
                T::output(&t[i * a..i * a + a], &mut res[..mt]);
                for (j, value) in res[..mt].iter().enumerate() {
                    let ox = tx * mt + j;
                    if ox >= g.width {
                        break;
                    }
                    let pixel = (n * g.height + oy) * g.width + ox;
                    let at = pixel * cout + c0;
                    let mut y = lane(|l| value[l] + bias[l]);
                    if let Some(r) = ctx.residual {
                        let r = &r[at..at + width];
                        match <&Lane>::try_from(r) {
                            Ok(full) => y = lane(|l| y[l] + full[l]),
                            Err(_) => y = lane(|l| y[l] + r.get(l).copied().unwrap_or(0.0)),
                        }
                    }
                    if self.relu {
                        y = lane(|l| y[l].max(0.0));
                    }
                    // SAFETY: pixel < N·H·W and c0 + width ≤ C_out; caller contract.
                    unsafe {
                        let dst = ctx.out.ptr().add(at);
                        if width == LANES {
                            dst.cast::<Lane>().write_unaligned(y);
                        } else {
                            std::ptr::copy_nonoverlapping(y.as_ptr(), dst, width);
                        }
                    }
                }
            }
        }
    }
}

/// Inputs and output of one call, shared by its tasks.
struct Ctx<'a> {
    input: &'a [f32],
    grid: &'a Grid,
    residual: Option<&'a [f32]>,
    out: SharedMut,
}

/// `(image, tile row, tile column)` of a tile index (tiles are row-major per image).
fn tile_coords(g: &Grid, tile: usize) -> (usize, usize, usize) {
    let plane = g.tiles_y * g.tiles_x;
    (tile / plane, (tile % plane) / g.tiles_x, tile % g.tiles_x)
}

impl NhwcConv for WinogradConv {
    const NAME: &'static str = "nhwc-winograd";
    const RESIDUAL_NAME: &'static str = "nhwc-winograd-residual";
    type Plan = Grid;

    fn plan(&self, input: &Shape) -> Result<(Grid, Shape)> {
        let grid = self.grid(input)?;
        Ok((grid, self.output_shape(input)?))
    }

    fn run(&self, input: &[f32], plan: &Grid, residual: Option<&[f32]>) -> Vec<f32> {
        WinogradConv::run(self, input, plan, residual)
    }
}

impl WinogradConv {
    fn output_shape(&self, input: &Shape) -> Result<Shape> {
        let (batch, height, width, _) = input.dims4()?;
        Ok(Shape::from((batch, height, width, self.out_channels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{max_abs_diff, random_tensor};
    use candle_core::Device;

    /// Reference: candle's NCHW `conv2d` (stride 1, padding 1) + bias (+ residual), then ReLU
    /// when `relu`; returned NCHW.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, res: Option<&Tensor>, relu: bool) -> Tensor {
        let out_ch = w.dims()[0];
        let y = x.conv2d(w, 1, 1, 1, 1).unwrap();
        let y = y
            .broadcast_add(&b.reshape((1, out_ch, 1, 1)).unwrap())
            .unwrap();
        let y = match res {
            Some(r) => (y + r).unwrap(),
            None => y,
        };
        if relu { y.relu().unwrap() } else { y }
    }

    fn nhwc(t: &Tensor) -> Tensor {
        t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    /// Largest error of `variant` against candle on one random `batch×c_in×h×w → c_out` case,
    /// over both strategies (one task / many tasks), with and without residual and ReLU.
    fn worst_error(variant: Variant, shape: [usize; 5], seed: u64) -> f32 {
        let [batch, c_in, h, w, c_out] = shape;
        let x = random_tensor(&[batch, c_in, h, w], seed);
        let wt = random_tensor(&[c_out, c_in, 3, 3], seed + 1);
        let b = random_tensor(&[c_out], seed + 2);
        let res = random_tensor(&[batch, c_out, h, w], seed + 3);
        let input = nhwc(&x).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let res_vec = nhwc(&res).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut worst = 0f32;
        for relu in [false, true] {
            let conv = WinogradConv::from_tensors(&wt, &b, relu, variant).unwrap();
            let grid = conv.grid(nhwc(&x).shape()).unwrap();
            for residual in [false, true] {
                let expected = reference(&x, &wt, &b, residual.then_some(&res), relu);
                for tasks in [1, 8, 64] {
                    let r = residual.then_some(&res_vec[..]);
                    let out = conv.run_with_tasks(&input, &grid, r, tasks);
                    let got = Tensor::from_vec(out, (batch, h, w, c_out), &Device::Cpu)
                        .unwrap()
                        .permute((0, 3, 1, 2))
                        .unwrap();
                    worst = worst.max(max_abs_diff(&got, &expected));
                }
            }
        }
        worst
    }

    /// Odd sizes (edge tiles clipped), batch 1 and 3, channel counts that are not multiples of
    /// 16 (partial lanes, partial GEMM panels), and one case with more than one block of tiles.
    const SHAPES: [[usize; 5]; 5] = [
        [1, 5, 7, 7, 9],
        [3, 19, 13, 15, 21],
        [1, 40, 15, 13, 33],
        [3, 17, 1, 2, 3],
        [2, 24, 22, 25, 40],
    ];

    #[test]
    fn f23_matches_candle_conv2d_on_odd_shapes() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let err = worst_error(Variant::F2x3, *shape, 100 + 10 * i as u64);
            assert!(err <= 1e-4, "F(2,3) {shape:?}: max diff {err}");
        }
    }

    #[test]
    fn f43_matches_candle_conv2d_on_odd_shapes() {
        // F(4,3)'s larger transform coefficients cost about one decimal digit (module docs).
        for (i, shape) in SHAPES.iter().enumerate() {
            let err = worst_error(Variant::F4x3, *shape, 200 + 10 * i as u64);
            assert!(err <= 1e-3, "F(4,3) {shape:?}: max diff {err}");
        }
    }

    #[test]
    fn f23_matches_candle_on_a_resnet_layer_with_long_k() {
        // layer3-like: K = 256 crosses no KC block but exercises the 16-lane transforms fully;
        // 14×14 at batch 1 is the size where the split strategy runs.
        let err = worst_error(Variant::F2x3, [1, 256, 14, 14, 64], 300);
        assert!(err <= 1e-4, "max diff {err}");
    }

    #[test]
    fn custom_ops_match_direct_run_and_reject_bad_shapes() {
        let x = random_tensor(&[2, 5, 6, 4], 400);
        let w = random_tensor(&[8, 4, 3, 3], 401);
        let b = random_tensor(&[8], 402);
        let conv = WinogradConv::from_tensors(&w, &b, false, Variant::F2x3).unwrap();
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 5, 6, 8]);
        let r = random_tensor(&[2, 5, 6, 8], 403);
        let z = conv.forward_add(&x, &r).unwrap();
        assert!(max_abs_diff(&z, &(y + &r).unwrap()) <= 1e-6);
        assert!(conv.forward(&random_tensor(&[1, 5, 5, 3], 404)).is_err());
        let empty = Tensor::zeros((0, 5, 6, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(conv.forward(&empty).unwrap().dims(), &[0, 5, 6, 8]);
        assert!(
            conv.forward_add(&x, &random_tensor(&[2, 5, 5, 8], 405))
                .is_err()
        );
        let w5 = random_tensor(&[8, 4, 5, 5], 406);
        assert!(WinogradConv::from_tensors(&w5, &b, true, Variant::F2x3).is_err());
    }
}
