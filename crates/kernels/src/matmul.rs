//! Matrix multiply `C += A · B` with `B` (the weights) packed once, for the convolution kernel.
//!
//! Layouts:
//! * `A`: row-major `rows × K` with row stride `lda` (im2col rows, or NHWC pixels for 1×1);
//! * `B`: given row-major `K × N` to [`PackedB::pack`], stored as column panels of `NR` floats:
//!   panel `j` holds columns `j·NR .. j·NR+NR` as `K` consecutive rows of `NR` floats (the last
//!   panel zero-padded), 64-byte aligned, so the micro-kernel streams it with aligned loads;
//! * `C`: row-major with row stride `ldc`; only the requested columns are read and written.
//!
//! Micro-kernels keep an `MR × NR` block of `C` in vector registers and walk `K` in blocks of
//! `KC` so the `KC × NR` slice of a panel stays in L1 while every `MR`-row strip of the tile
//! reuses it: AVX-512 `12 × 32` (24 zmm accumulators), AVX2+FMA `6 × 16` (12 ymm accumulators).
//! The instruction set is detected once at run time; other CPUs use the `gemm` crate on the
//! unpacked matrix.

use std::sync::OnceLock;

/// `K` block: a `KC × 32` f32 panel slice is 32 KiB, the L1 data cache of current x86 cores.
const KC: usize = 256;

/// Instruction set the micro-kernel uses, detected once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12×32 micro-tile.
    Avx512,
    /// AVX2 + FMA: 6×16 micro-tile.
    Avx2,
    /// Anything else: the `gemm` crate on a row-major `K×N` matrix.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// Whether this CPU can run `self` (tests use it to exercise every path available).
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => Isa::detect() != Isa::Portable,
            Isa::Avx512 => Isa::detect() == Isa::Avx512,
        }
    }

    /// Rows of the micro-tile.
    pub fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 12,
            Isa::Avx2 => 6,
            Isa::Portable => 1,
        }
    }

    /// Columns of a packed panel.
    fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 => 16,
            Isa::Portable => 0,
        }
    }
}

/// 64 bytes of f32: the unit of the packed storage, so panels are cache-line aligned.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The weight matrix `B` (`K × N`) packed for one instruction set.
#[derive(Clone)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    /// Panels (`Avx512`/`Avx2`) or the row-major matrix (`Portable`), in 64-byte lines.
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("isa", &self.isa)
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl PackedB {
    /// Packs a row-major `k × n` matrix for `isa`. One pass over the data, done at load.
    pub fn pack(b: &[f32], k: usize, n: usize, isa: Isa) -> Self {
        assert_eq!(b.len(), k * n, "PackedB::pack: matrix is not k×n");
        Self::pack_with(k, n, isa, |row, col| b[row * n + col])
    }

    /// Packs the `k × n` matrix whose element `(row, col)` is `value(row, col)`, visiting
    /// elements in storage order (so the source can be a differently laid-out tensor).
    pub fn pack_with(k: usize, n: usize, isa: Isa, value: impl Fn(usize, usize) -> f32) -> Self {
        let nr = isa.nr();
        let floats = if nr == 0 {
            k * n
        } else {
            n.div_ceil(nr) * nr * k
        };
        let mut lines = vec![Line::default(); floats.div_ceil(16)];
        let data = Self::floats_mut(&mut lines);
        if nr == 0 {
            for (row, dst_row) in data[..k * n].chunks_exact_mut(n.max(1)).enumerate() {
                for (col, d) in dst_row.iter_mut().enumerate() {
                    *d = value(row, col);
                }
            }
        } else {
            for (panel, dst) in data.chunks_exact_mut(k * nr).enumerate() {
                let c0 = panel * nr;
                let width = nr.min(n - c0);
                for (row, dst_row) in dst.chunks_exact_mut(nr).enumerate() {
                    for (j, d) in dst_row[..width].iter_mut().enumerate() {
                        *d = value(row, c0 + j);
                    }
                }
            }
        }
        Self { isa, k, n, lines }
    }

    fn floats_mut(lines: &mut [Line]) -> &mut [f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` with no padding (64 bytes, align 64).
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
    }

    fn floats(&self) -> &[f32] {
        // SAFETY: as in `floats_mut`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.lines.len() * 16) }
    }

    /// Columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Granularity in which callers should split columns between tasks.
    pub fn column_step(&self) -> usize {
        self.isa.nr().max(16)
    }

    /// `C[0..rows, c0..c1] += A[0..rows, :] · B[:, c0..c1]`, single-threaded.
    ///
    /// # Safety
    /// `op` must satisfy the contract documented on [`Operands`].
    pub unsafe fn gemm_acc(&self, op: &Operands) {
        // SAFETY: forwarded caller contract.
        unsafe { self.gemm(op, true) }
    }

    /// `C[0..rows, c0..c1] = A[0..rows, :] · B[:, c0..c1]`, single-threaded: as
    /// [`Self::gemm_acc`] but `C` is only written, so it may start with any (initialised) values.
    ///
    /// # Safety
    /// As [`Self::gemm_acc`].
    pub unsafe fn gemm_set(&self, op: &Operands) {
        // SAFETY: forwarded caller contract.
        unsafe { self.gemm(op, false) }
    }

    /// `C (+)= A · B` on columns `c0..c1`; `accumulate` selects `+=` or `=`.
    unsafe fn gemm(&self, op: &Operands, accumulate: bool) {
        debug_assert!(op.c1 <= self.n && op.c0 <= op.c1);
        match self.isa {
            // SAFETY (all arms): forwarded caller contract; the ISA was detected on this CPU
            // when `pack` was called with it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { self.blocked(op, accumulate) },
            _ => unsafe { self.portable(op, accumulate) },
        }
    }

    /// Fallback: the `gemm` crate on the row-major matrix.
    unsafe fn portable(&self, op: &Operands, accumulate: bool) {
        let b = self.floats();
        // SAFETY: caller contract; `b` is the row-major k×n matrix (Portable packing).
        unsafe {
            gemm::gemm(
                op.rows,
                op.c1 - op.c0,
                self.k,
                op.c.add(op.c0),
                1,
                op.ldc as isize,
                accumulate,
                op.a,
                1,
                op.lda as isize,
                b.as_ptr().add(op.c0),
                1,
                self.n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// Register-blocked path: K blocks × panels × MR-row strips.
    #[cfg(target_arch = "x86_64")]
    unsafe fn blocked(&self, op: &Operands, accumulate: bool) {
        let &Operands {
            a,
            lda,
            rows,
            c,
            ldc,
            c0,
            c1,
        } = op;
        let (mr, nr, k) = (self.isa.mr(), self.isa.nr(), self.k);
        let panels = self.floats();
        let mut edge = [0f32; 12 * 32];
        for kb in (0..k).step_by(KC) {
            let kc = KC.min(k - kb);
            // Later K blocks always add to what the first one stored.
            let add = accumulate || kb > 0;
            for col in (c0..c1).step_by(nr) {
                let width = nr.min(c1 - col);
                // SAFETY: `col` is a multiple of nr, so it starts panel col/nr; the panel has
                // k rows of nr floats and rows kb..kb+kc exist.
                let b = unsafe { panels.as_ptr().add(self.slice_offset(kb, col)) };
                let next = self.next_slice(kb, col, c0, c1);
                for (strip, r) in (0..rows).step_by(mr).enumerate() {
                    let m = mr.min(rows - r);
                    let prefetch = next.strip_share(strip, kc);
                    // SAFETY: rows r..r+m exist in A and C (caller contract).
                    let a_strip = unsafe { a.add(r * lda + kb) };
                    let c_strip = unsafe { c.add(r * ldc + col) };
                    let tile = MicroTile {
                        kc,
                        a: a_strip,
                        lda,
                        b,
                        c: c_strip,
                        ldc,
                        add,
                        prefetch,
                    };
                    if width == nr {
                        unsafe { self.micro(m, &tile) };
                    } else {
                        // Partial panel: run on a full-width scratch tile, copy back the valid
                        // columns only (the padding columns of B are zero).
                        if add {
                            for i in 0..m {
                                for j in 0..width {
                                    edge[i * nr + j] = unsafe { *c_strip.add(i * ldc + j) };
                                }
                            }
                        }
                        let on_scratch = MicroTile {
                            c: edge.as_mut_ptr(),
                            ldc: nr,
                            ..tile
                        };
                        unsafe { self.micro(m, &on_scratch) };
                        for i in 0..m {
                            for j in 0..width {
                                unsafe { *c_strip.add(i * ldc + j) = edge[i * nr + j] };
                            }
                        }
                    }
                }
            }
        }
    }

    /// The packed `B` slice the loops of [`Self::blocked`] visit after the one at K block `kb`,
    /// panel starting at column `col`: the next panel of the same K block, else the first panel
    /// (`c0`) of the next K block. Empty after the last slice.
    #[cfg(target_arch = "x86_64")]
    fn next_slice(&self, kb: usize, col: usize, c0: usize, c1: usize) -> Prefetch {
        let (nr, k) = (self.isa.nr(), self.k);
        let (next_kb, next_col) = if col + nr < c1 {
            (kb, col + nr)
        } else if kb + KC < k {
            (kb + KC, c0)
        } else {
            return Prefetch::NONE;
        };
        let kc = KC.min(k - next_kb);
        Prefetch {
            // In bounds: the slice exists (next_col < c1 ≤ N, next_kb < k).
            start: self.floats()[self.slice_offset(next_kb, next_col)..]
                .as_ptr()
                .cast(),
            lines: kc * nr / 16,
        }
    }

    /// Float offset of the packed slice at K row `kb` of the panel that starts at column `col`
    /// (panel `j` is `K` rows of `NR` floats).
    #[cfg(target_arch = "x86_64")]
    fn slice_offset(&self, kb: usize, col: usize) -> usize {
        let nr = self.isa.nr();
        (col / nr) * self.k * nr + kb * nr
    }

    /// Dispatches to the micro-kernel for `m ≤ MR` rows.
    #[cfg(target_arch = "x86_64")]
    unsafe fn micro(&self, m: usize, tile: &MicroTile) {
        use x86::{avx2, avx512};
        macro_rules! dispatch {
            ($f:ident, $($m:literal)*) => {
                match m {
                    // SAFETY: caller contract of `blocked`; the ISA is available.
                    $($m => unsafe { $f::<$m>(tile) },)*
                    _ => unreachable!("micro-tile rows out of range"),
                }
            };
        }
        match self.isa {
            Isa::Avx512 => dispatch!(avx512, 1 2 3 4 5 6 7 8 9 10 11 12),
            _ => dispatch!(avx2, 1 2 3 4 5 6),
        }
    }
}

/// Operands of one single-threaded GEMM call (`C[0..rows, c0..c1] (+)= A · B[:, c0..c1]`).
///
/// Contract (the callers' safety obligation): `a` addresses `rows` rows of `K` floats with row
/// stride `lda`; `c` addresses `rows` rows with row stride `ldc ≥ N`, columns `c0..c1` writable
/// and not accessed concurrently; `c0` is a multiple of [`PackedB::column_step`] (or 0) and
/// `c1 ≤ N`.
#[derive(Debug, Clone, Copy)]
pub struct Operands {
    /// First row of `A`.
    pub a: *const f32,
    /// Row stride of `A`, in floats.
    pub lda: usize,
    /// Rows of `A` and `C`.
    pub rows: usize,
    /// Row 0, column 0 of `C`.
    pub c: *mut f32,
    /// Row stride of `C`, in floats.
    pub ldc: usize,
    /// First column of `C` (and `B`) computed.
    pub c0: usize,
    /// One past the last column computed.
    pub c1: usize,
}

/// One micro-kernel call: `C[0..M, 0..NR] (+)= A[0..M, 0..kc] · B[0..kc, 0..NR]` with `b` a
/// packed panel slice (rows of `NR` floats, 64-byte aligned), `add` selecting `+=`.
#[derive(Clone, Copy)]
struct MicroTile {
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    add: bool,
    prefetch: Prefetch,
}

/// Cache lines of packed `B` a micro-kernel call pulls into L2 while it computes, one per step
/// of its `K` loop, so the next slice of `B` is in L2 (not in L3 or memory) when its first
/// strip runs. At batch 1 the layers with large weights have few rows, and that first strip
/// would otherwise stall on every load of `B`.
#[derive(Clone, Copy)]
struct Prefetch {
    start: *const i8,
    lines: usize,
}

impl Prefetch {
    const NONE: Prefetch = Prefetch {
        start: std::ptr::null(),
        lines: 0,
    };

    /// The part strip number `strip` prefetches, `kc` lines per strip (one per `K` step).
    fn strip_share(self, strip: usize, kc: usize) -> Prefetch {
        let from = strip * kc;
        if from >= self.lines {
            return Prefetch::NONE;
        }
        Prefetch {
            start: self.start.wrapping_add(from * 64),
            lines: kc.min(self.lines - from),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::MicroTile;

    /// Rows of the packed panel ahead of the current one that the AVX-512 kernel pulls into L1.
    const PREFETCH_ROWS: usize = 16;

    /// `C[0..M, 0..32] += A[0..M, 0..kc] · B[0..kc, 0..32]` (`=` when `add` is false); `b` is a
    /// packed panel slice with rows of 32 floats, 64-byte aligned.
    ///
    /// # Safety
    /// AVX-512F available; `a` has `M` rows of `kc` floats (stride `lda`); `b` has `kc × 32`
    /// floats; `c` has `M` rows of 32 writable floats (stride `ldc`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const M: usize>(tile: &MicroTile) {
        let t = *tile;
        unsafe {
            let mut lo = [_mm512_setzero_ps(); M];
            let mut hi = [_mm512_setzero_ps(); M];
            for p in 0..t.kc {
                if p < t.prefetch.lines {
                    _mm_prefetch::<_MM_HINT_T1>(t.prefetch.start.wrapping_add(p * 64));
                }
                let ahead = t.b.wrapping_add((p + PREFETCH_ROWS) * 32).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                let b0 = _mm512_load_ps(t.b.add(p * 32));
                let b1 = _mm512_load_ps(t.b.add(p * 32 + 16));
                for i in 0..M {
                    let ai = _mm512_set1_ps(*t.a.add(i * t.lda + p));
                    lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
                    hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
                }
            }
            if t.add {
                for i in 0..M {
                    let row = t.c.add(i * t.ldc);
                    lo[i] = _mm512_add_ps(_mm512_loadu_ps(row), lo[i]);
                    hi[i] = _mm512_add_ps(_mm512_loadu_ps(row.add(16)), hi[i]);
                }
            }
            for i in 0..M {
                let row = t.c.add(i * t.ldc);
                _mm512_storeu_ps(row, lo[i]);
                _mm512_storeu_ps(row.add(16), hi[i]);
            }
        }
    }

    /// `C[0..M, 0..16] += A[0..M, 0..kc] · B[0..kc, 0..16]` (`=` when `add` is false) with
    /// AVX2 + FMA.
    ///
    /// # Safety
    /// AVX2 and FMA available; as [`avx512`] with 16-float panel rows (32-byte aligned).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const M: usize>(tile: &MicroTile) {
        let t = *tile;
        unsafe {
            let mut lo = [_mm256_setzero_ps(); M];
            let mut hi = [_mm256_setzero_ps(); M];
            for p in 0..t.kc {
                if p < t.prefetch.lines {
                    _mm_prefetch::<_MM_HINT_T1>(t.prefetch.start.wrapping_add(p * 64));
                }
                let b0 = _mm256_load_ps(t.b.add(p * 16));
                let b1 = _mm256_load_ps(t.b.add(p * 16 + 8));
                for i in 0..M {
                    let ai = _mm256_broadcast_ss(&*t.a.add(i * t.lda + p));
                    lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
                    hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
                }
            }
            if t.add {
                for i in 0..M {
                    let row = t.c.add(i * t.ldc);
                    lo[i] = _mm256_add_ps(_mm256_loadu_ps(row), lo[i]);
                    hi[i] = _mm256_add_ps(_mm256_loadu_ps(row.add(8)), hi[i]);
                }
            }
            for i in 0..M {
                let row = t.c.add(i * t.ldc);
                _mm256_storeu_ps(row, lo[i]);
                _mm256_storeu_ps(row.add(8), hi[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::SplitMix64;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.next_signed_unit() as f32).collect()
    }

    /// Operands for row-major `a` (`rows × k`) and `c` (`rows × n`), columns `c0..c1`.
    fn operands(
        a: &[f32],
        k: usize,
        rows: usize,
        c: &mut [f32],
        n: usize,
        c0: usize,
        c1: usize,
    ) -> Operands {
        Operands {
            a: a.as_ptr(),
            lda: k,
            rows,
            c: c.as_mut_ptr(),
            ldc: n,
            c0,
            c1,
        }
    }

    /// Straightforward triple loop in f64, the reference.
    fn reference(a: &[f32], b: &[f32], c: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = c.to_vec();
        for i in 0..rows {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum();
                out[i * n + j] = (f64::from(c[i * n + j]) + dot) as f32;
            }
        }
        out
    }

    #[test]
    fn every_available_isa_matches_reference_on_odd_shapes() {
        // Odd row counts (micro-tile remainders), K across a KC boundary, N with partial panels.
        for (rows, k, n, seed) in [
            (1, 3, 5, 1),
            (13, 300, 47, 2),
            (25, 17, 64, 3),
            (7, 513, 33, 4),
        ] {
            let a = random(rows * k, seed);
            let b = random(k * n, seed + 10);
            let c = random(rows * n, seed + 20);
            let expected = reference(&a, &b, &c, rows, k, n);
            for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                if !isa.supported() {
                    continue;
                }
                let packed = PackedB::pack(&b, k, n, isa);
                let mut got = c.clone();
                // SAFETY: shapes as documented; whole column range.
                unsafe { packed.gemm_acc(&operands(&a, k, rows, &mut got, n, 0, n)) };
                let diff = got
                    .iter()
                    .zip(&expected)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(diff <= 1e-4, "{isa:?} {rows}x{k}x{n}: max diff {diff}");
            }
        }
    }

    /// The prefetch target after each slice is the slice `blocked` visits next (K blocks
    /// outer, panels `c0..c1` inner, per the packed layout: panel `j` is `K` rows of `NR`
    /// floats), the last slice has none, and the strips share a target without gaps.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prefetch_targets_the_next_slice_in_visiting_order() {
        let (k, n) = (600, 100); // three K blocks (256, 256, 88), partial last panel
        for isa in [Isa::Avx512, Isa::Avx2] {
            if !isa.supported() {
                continue;
            }
            let packed = PackedB::pack(&random(k * n, 21), k, n, isa);
            let nr = isa.nr();
            let (c0, c1) = (nr, n);
            let order: Vec<(usize, usize)> = (0..k)
                .step_by(KC)
                .flat_map(|kb| (c0..c1).step_by(nr).map(move |col| (kb, col)))
                .collect();
            let base = packed.floats().as_ptr();
            for (i, &(kb, col)) in order.iter().enumerate() {
                let got = packed.next_slice(kb, col, c0, c1);
                match order.get(i + 1) {
                    Some(&(next_kb, next_col)) => {
                        let want = base.wrapping_add((next_col / nr) * k * nr + next_kb * nr);
                        assert_eq!(got.start, want.cast::<i8>(), "{isa:?} after ({kb}, {col})");
                        assert_eq!(got.lines, KC.min(k - next_kb) * nr / 16, "{isa:?}");
                    }
                    None => assert_eq!(got.lines, 0, "{isa:?}: prefetch after the last slice"),
                }
                // Strips of `kc` lines each take consecutive parts of the target.
                let kc = KC.min(k - kb);
                let mut covered = 0;
                for strip in 0.. {
                    let share = got.strip_share(strip, kc);
                    if share.lines == 0 {
                        break;
                    }
                    assert_eq!(share.start, got.start.wrapping_add(covered * 64));
                    covered += share.lines;
                }
                assert_eq!(covered, got.lines, "{isa:?}: strips cover the target");
            }
        }
    }

    #[test]
    fn column_range_leaves_other_columns_untouched() {
        let (rows, k, n) = (5, 20, 96);
        let a = random(rows * k, 7);
        let b = random(k * n, 8);
        let c = random(rows * n, 9);
        let expected = reference(&a, &b, &c, rows, k, n);
        let isa = Isa::detect();
        let packed = PackedB::pack(&b, k, n, isa);
        let step = packed.column_step();
        let mut got = c.clone();
        // SAFETY: shapes as documented; c0 = step is a multiple of the column step.
        unsafe { packed.gemm_acc(&operands(&a, k, rows, &mut got, n, step, 2 * step)) };
        for i in 0..rows {
            for j in 0..n {
                let want = if (step..2 * step).contains(&j) {
                    expected[i * n + j]
                } else {
                    c[i * n + j]
                };
                assert!((got[i * n + j] - want).abs() <= 1e-4, "row {i} col {j}");
            }
        }
    }

    #[test]
    fn gemm_set_overwrites_previous_contents_on_every_isa() {
        // K across a KC boundary (the second K block must add to what the first stored) and a
        // partial last panel (the edge path must not read the old contents).
        let (rows, k, n) = (14, 300, 40);
        let a = random(rows * k, 11);
        let b = random(k * n, 12);
        let zeros = vec![0f32; rows * n];
        let expected = reference(&a, &b, &zeros, rows, k, n);
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
            if !isa.supported() {
                continue;
            }
            let packed = PackedB::pack(&b, k, n, isa);
            let mut got = vec![1.0e6f32; rows * n];
            // SAFETY: shapes as documented; whole column range.
            unsafe { packed.gemm_set(&operands(&a, k, rows, &mut got, n, 0, n)) };
            let diff = got
                .iter()
                .zip(&expected)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-4, "{isa:?}: max diff {diff}");
        }
    }
}
