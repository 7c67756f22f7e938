//! Quantized matrix multiply `C = epilogue(A · B)` with `A` unsigned 8-bit (activations),
//! `B` signed 8-bit (weights, packed once) and exact 32-bit integer accumulators.
//!
//! Layouts:
//! * `A`: row-major `rows × K` bytes with row stride `lda ≥ Kp` (`Kp` = `K` rounded up to a
//!   multiple of 4); bytes `K..Kp` of a row may hold anything (the matching rows of `B` are 0);
//! * `B`: given element by element to [`PackedQ::pack_with`], stored as column panels of `NR`
//!   columns: panel `j` holds, for each group of 4 consecutive `K` rows, `NR` columns × 4 bytes
//!   (the 4 weights one output column needs for one `vpdpbusd` lane); the last panel is
//!   zero-padded, panels are 64-byte aligned;
//! * `C`: f32, row-major with row stride `ldc`; only the requested columns are written.
//!
//! Epilogue, per output element (column `o`):
//! `y = f32(acc − zero[o]) · scale[o] + bias[o]` (one fused multiply-add), then `+ residual`,
//! then ReLU, as configured by [`Epilogue`]. With activations `x ≈ (q − zp)·s_x` and weights
//! `w ≈ q_w·s_w[o]`, callers pass `zero[o] = zp · Σ_k q_w[k][o]` and `scale[o] = s_x · s_w[o]`.
//!
//! Paths ([`QIsa`]), chosen once at run time, or forced with `RESNET18_FC_INT8_ISA`:
//! * AVX-512 VNNI: `vpdpbusd` on zmm, 12 × 32 micro-tile (24 accumulators);
//! * AVX-VNNI: `vpdpbusd` on ymm, 6 × 16. Compiled twice from one body: with the VEX encoding
//!   (`avxvnni`, Alder Lake and later) and with the EVEX encoding (`avx512vnni` + `avx512vl`),
//!   so the same kernel logic runs, and is tested, on AVX-512 VNNI machines too;
//! * AVX2: 3 × 16 micro-tile on the **widening** path — bytes are sign/zero-extended to 16 bits
//!   and multiplied with `vpmaddwd` (i16 × i16 → pairs summed into i32), which is exact for the
//!   full u8 × s8 range. The faster `vpmaddubsw` adds two u8 × s8 products into a *saturating*
//!   i16 (255·127·2 = 64 770 > 32 767), so it would need 7-bit weights or 7-bit activations,
//!   and then the quantized model would compute different numbers on AVX2 machines than on
//!   VNNI ones. The widening path keeps every path bit-identical in its integer part, at about
//!   two thirds of `vpmaddubsw`'s multiply rate, on CPUs that are not this project's target;
//! * portable: scalar loops over the same packed layout (any CPU; the reference path).

use std::sync::OnceLock;

/// Environment variable that forces an int8 kernel path: `avx512vnni`, `avxvnni`, `avx2` or
/// `portable`. Ignored (best path used) when unset, unknown or not supported by this CPU.
pub const INT8_ISA_ENV: &str = "RESNET18_FC_INT8_ISA";

/// Columns of a packed panel for the 256-bit and portable paths.
const NR_256: usize = 16;
/// Columns of a packed panel for the AVX-512 path.
const NR_512: usize = 32;

/// Instruction set of the int8 micro-kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QIsa {
    /// AVX-512 VNNI (`vpdpbusd` zmm), 12×32 micro-tile.
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd` ymm, VEX or EVEX encoded), 6×16 micro-tile.
    AvxVnni,
    /// AVX2 widening path (`vpmovzxbw`/`vpmovsxbw` + `vpmaddwd`), 3×16 micro-tile.
    Avx2,
    /// Scalar loops.
    Portable,
}

impl QIsa {
    /// Every path, fastest first.
    pub const ALL: [QIsa; 4] = [QIsa::Avx512Vnni, QIsa::AvxVnni, QIsa::Avx2, QIsa::Portable];

    /// The name `RESNET18_FC_INT8_ISA` uses for this path.
    pub fn name(self) -> &'static str {
        match self {
            QIsa::Avx512Vnni => "avx512vnni",
            QIsa::AvxVnni => "avxvnni",
            QIsa::Avx2 => "avx2",
            QIsa::Portable => "portable",
        }
    }

    /// The path called `name` ([`Self::name`]), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                QIsa::Portable => true,
                QIsa::Avx2 => has!("avx2") && has!("fma"),
                QIsa::AvxVnni => has!("avx2") && has!("fma") && (vex_vnni() || evex_vnni_256()),
                QIsa::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == QIsa::Portable
        }
    }

    /// The fastest path this CPU supports.
    pub fn best() -> Self {
        Self::ALL
            .into_iter()
            .find(|isa| isa.supported())
            .unwrap_or(QIsa::Portable)
    }

    /// The path named by `forced` when it is known and supported, otherwise [`Self::best`].
    pub fn choose(forced: Option<&str>) -> Self {
        forced
            .and_then(|name| Self::parse(name.trim()))
            .filter(|isa| isa.supported())
            .unwrap_or_else(Self::best)
    }

    /// The path of this process: [`Self::choose`] on `RESNET18_FC_INT8_ISA`, decided once.
    pub fn detect() -> Self {
        static ISA: OnceLock<QIsa> = OnceLock::new();
        *ISA.get_or_init(|| Self::choose(std::env::var(INT8_ISA_ENV).ok().as_deref()))
    }

    /// Rows of the micro-tile.
    pub fn mr(self) -> usize {
        match self {
            QIsa::Avx512Vnni => 12,
            QIsa::AvxVnni => 6,
            QIsa::Avx2 => 3,
            QIsa::Portable => 4,
        }
    }

    /// Columns of a packed panel.
    pub fn nr(self) -> usize {
        match self {
            QIsa::Avx512Vnni => NR_512,
            _ => NR_256,
        }
    }
}

/// Whether the VEX-encoded AVX-VNNI instructions are available.
#[cfg(target_arch = "x86_64")]
fn vex_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avxvnni")
}

/// Whether the EVEX-encoded 256-bit `vpdpbusd` (AVX-512 VNNI + VL) is available.
#[cfg(target_arch = "x86_64")]
fn evex_vnni_256() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// 64 bytes of packed weights: panels are cache-line aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct QLine([i8; 64]);

/// The weight matrix `B` (`K × N`, signed bytes) packed for one path.
#[derive(Clone)]
pub struct PackedQ {
    isa: QIsa,
    k: usize,
    n: usize,
    lines: Vec<QLine>,
}

impl std::fmt::Debug for PackedQ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedQ")
            .field("isa", &self.isa)
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

/// Operands of one single-threaded call: `C[0..rows, c0..c1] = epilogue(A · B[:, c0..c1])`.
///
/// Contract (the callers' safety obligation): `a` addresses `rows` rows of at least
/// [`PackedQ::padded_k`] initialised bytes with row stride `lda`; `c` addresses `rows` rows with
/// row stride `ldc`, columns `c0..c1` writable and not accessed concurrently; `c0` is a multiple
/// of [`PackedQ::column_step`] and `c1 ≤ N`; when the epilogue has a residual it addresses the
/// same rows and columns as `c`, with the same row stride.
#[derive(Debug, Clone, Copy)]
pub struct QOperands {
    /// First row of `A`.
    pub a: *const u8,
    /// Row stride of `A`, in bytes.
    pub lda: usize,
    /// Rows of `A` and `C`.
    pub rows: usize,
    /// Row 0, column 0 of `C`.
    pub c: *mut f32,
    /// Row stride of `C` (and of the residual), in floats.
    pub ldc: usize,
    /// First column computed.
    pub c0: usize,
    /// One past the last column computed.
    pub c1: usize,
}

/// What happens to each accumulator before it is stored (see the module documentation).
/// The per-column slices cover [`PackedQ::padded_n`] columns (the padding is never stored).
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Multiplier per column.
    pub scale: &'a [f32],
    /// Subtracted from the accumulator, per column (zero-point correction).
    pub zero: &'a [i32],
    /// Added after scaling, per column.
    pub bias: &'a [f32],
    /// Row 0, column 0 of a residual added before the ReLU (row stride `ldc`), or null.
    pub residual: *const f32,
    /// Apply `max(0, ·)` last.
    pub relu: bool,
}

// SAFETY: the residual pointer is only read, by contract of the GEMM calls that use it, and
// the data it addresses outlives them; the rest are shared slices.
unsafe impl Send for Epilogue<'_> {}
unsafe impl Sync for Epilogue<'_> {}

impl Epilogue<'_> {
    /// The same epilogue with the residual advanced by `elements` floats (to the first row of a
    /// tile); a null residual stays null.
    pub fn offset_residual(&self, elements: usize) -> Self {
        let residual = if self.residual.is_null() {
            self.residual
        } else {
            self.residual.wrapping_add(elements)
        };
        Self { residual, ..*self }
    }
}

impl PackedQ {
    /// Packs the `k × n` matrix whose element `(row, col)` is `value(row, col)` for `isa`.
    /// One pass over the data, done at load.
    pub fn pack_with(k: usize, n: usize, isa: QIsa, value: impl Fn(usize, usize) -> i8) -> Self {
        let nr = isa.nr();
        let kp = k.next_multiple_of(4);
        let panel_bytes = kp * nr;
        let bytes = n.div_ceil(nr) * panel_bytes;
        let mut lines = vec![QLine([0; 64]); bytes.div_ceil(64)];
        // SAFETY: `QLine` is `repr(C)` around `[i8; 64]` (64 bytes, no padding).
        let data: &mut [i8] =
            unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 64) };
        for (panel, dst) in data[..bytes].chunks_exact_mut(panel_bytes).enumerate() {
            let c0 = panel * nr;
            let width = nr.min(n - c0);
            for (group, dst_group) in dst.chunks_exact_mut(4 * nr).enumerate() {
                for (j, quad) in dst_group.chunks_exact_mut(4).take(width).enumerate() {
                    for (q, d) in quad.iter_mut().enumerate() {
                        let row = group * 4 + q;
                        if row < k {
                            *d = value(row, c0 + j);
                        }
                    }
                }
            }
        }
        Self { isa, k, n, lines }
    }

    fn bytes(&self) -> &[i8] {
        // SAFETY: as in `pack_with`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.lines.len() * 64) }
    }

    /// The path this matrix was packed for.
    pub fn isa(&self) -> QIsa {
        self.isa
    }

    /// Rows of `B` (`K`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `K` rounded up to a multiple of 4: the bytes each row of `A` must provide.
    pub fn padded_k(&self) -> usize {
        self.k.next_multiple_of(4)
    }

    /// Columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `N` rounded up to whole panels: the length of the epilogue's per-column slices.
    pub fn padded_n(&self) -> usize {
        self.n.next_multiple_of(self.isa.nr())
    }

    /// Granularity in which callers split columns between tasks.
    pub fn column_step(&self) -> usize {
        self.isa.nr()
    }

    /// Packed size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// `C[0..rows, c0..c1] = epilogue(A · B[:, c0..c1])`, single-threaded.
    ///
    /// # Panics
    /// When the epilogue's slices are shorter than [`Self::padded_n`] or the column range is
    /// out of bounds.
    ///
    /// # Safety
    /// `op` must satisfy the contract documented on [`QOperands`].
    pub unsafe fn gemm(&self, op: &QOperands, epi: &Epilogue) {
        let np = self.padded_n();
        assert!(
            epi.scale.len() >= np && epi.zero.len() >= np && epi.bias.len() >= np,
            "qgemm: epilogue slices shorter than the padded column count"
        );
        assert!(op.c0 <= op.c1 && op.c1 <= self.n && op.c0.is_multiple_of(self.isa.nr()));
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        let kp = self.padded_k();
        let mut edge = [0f32; 12 * NR_512];
        for col in (op.c0..op.c1).step_by(nr) {
            let width = nr.min(op.c1 - col);
            let b = self.bytes()[(col / nr) * kp * nr..].as_ptr();
            for r in (0..op.rows).step_by(mr) {
                let m = mr.min(op.rows - r);
                // SAFETY: rows r..r+m exist in A, C and the residual (caller contract); the
                // per-column slices hold padded_n ≥ col + nr values (asserted above).
                let (a, c, residual) = unsafe {
                    (
                        op.a.add(r * op.lda),
                        op.c.add(r * op.ldc + col),
                        if epi.residual.is_null() {
                            epi.residual
                        } else {
                            epi.residual.add(r * op.ldc + col)
                        },
                    )
                };
                let mut tile = QTile {
                    kp,
                    a,
                    lda: op.lda,
                    b,
                    c,
                    ldc: op.ldc,
                    residual,
                    relu: epi.relu,
                    scale: epi.scale[col..].as_ptr(),
                    zero: epi.zero[col..].as_ptr(),
                    bias: epi.bias[col..].as_ptr(),
                };
                if width == nr {
                    // SAFETY: full panel; caller contract.
                    unsafe { self.micro(m, &tile) };
                    continue;
                }
                // Partial panel: compute a full-width tile into `edge` (no residual, no ReLU),
                // then finish and store the valid columns only.
                tile.c = edge.as_mut_ptr();
                tile.ldc = nr;
                tile.residual = std::ptr::null();
                tile.relu = false;
                // SAFETY: `edge` holds m ≤ mr rows of nr floats.
                unsafe { self.micro(m, &tile) };
                for i in 0..m {
                    for j in 0..width {
                        let mut y = edge[i * nr + j];
                        if !residual.is_null() {
                            // SAFETY: column col + j < c1 of row r + i (caller contract).
                            y += unsafe { *residual.add(i * op.ldc + j) };
                        }
                        if epi.relu {
                            y = y.max(0.0);
                        }
                        // SAFETY: as above, for C.
                        unsafe { *c.add(i * op.ldc + j) = y };
                    }
                }
            }
        }
    }

    /// Dispatches to the micro-kernel of this path for `m ≤ MR` rows.
    unsafe fn micro(&self, m: usize, tile: &QTile) {
        #[cfg(target_arch = "x86_64")]
        use x86::{avx2, avx512vnni, avxvnni_evex, avxvnni_vex};
        macro_rules! dispatch {
            ($f:ident, $($m:literal)*) => {
                match m {
                    // SAFETY: caller contract of `gemm`; the path was chosen by the caller,
                    // which only packs for paths this CPU supports (checked in `micro`).
                    $($m => unsafe { $f::<$m>(tile) },)*
                    _ => unreachable!("micro-tile rows out of range"),
                }
            };
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni if QIsa::Avx512Vnni.supported() => {
                dispatch!(avx512vnni, 1 2 3 4 5 6 7 8 9 10 11 12)
            }
            #[cfg(target_arch = "x86_64")]
            QIsa::AvxVnni if QIsa::AvxVnni.supported() && vex_vnni() => {
                dispatch!(avxvnni_vex, 1 2 3 4 5 6)
            }
            #[cfg(target_arch = "x86_64")]
            QIsa::AvxVnni if QIsa::AvxVnni.supported() => {
                dispatch!(avxvnni_evex, 1 2 3 4 5 6)
            }
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 if QIsa::Avx2.supported() => dispatch!(avx2, 1 2 3),
            QIsa::Portable => {
                // SAFETY: caller contract.
                unsafe { portable(m, tile) }
            }
            #[allow(unreachable_patterns)]
            other => panic!("qgemm: {other:?} path used on a CPU that does not support it"),
        }
    }
}

/// One micro-kernel call: `C[0..M, 0..NR] = epilogue(A[0..M, 0..kp] · panel)`.
#[derive(Clone, Copy)]
struct QTile {
    kp: usize,
    a: *const u8,
    lda: usize,
    /// Start of the panel: `kp/4` groups of `NR × 4` bytes.
    b: *const i8,
    c: *mut f32,
    ldc: usize,
    /// Null when there is no residual; otherwise row stride `ldc`.
    residual: *const f32,
    relu: bool,
    /// `NR` values each, for the panel's columns.
    scale: *const f32,
    zero: *const i32,
    bias: *const f32,
}

/// The portable micro-kernel (16-column panels).
///
/// # Safety
/// The [`QTile`] addresses `m` rows of `A`, `C` (and residual) and a 16-column panel.
unsafe fn portable(m: usize, t: &QTile) {
    for i in 0..m {
        let mut acc = [0i32; NR_256];
        for g in 0..t.kp / 4 {
            // SAFETY: row i has kp bytes; the panel has kp/4 groups of 64 bytes.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(t.a.add(i * t.lda + 4 * g), 4),
                    std::slice::from_raw_parts(t.b.add(g * 4 * NR_256), 4 * NR_256),
                )
            };
            for (sum, quad) in acc.iter_mut().zip(b.chunks_exact(4)) {
                for (&x, &w) in a.iter().zip(quad) {
                    *sum += i32::from(x) * i32::from(w);
                }
            }
        }
        for (j, &sum) in acc.iter().enumerate() {
            // SAFETY: column j < NR of the per-column slices, of row i of C and the residual.
            unsafe {
                let y = ((sum - *t.zero.add(j)) as f32).mul_add(*t.scale.add(j), *t.bias.add(j));
                let y = if t.residual.is_null() {
                    y
                } else {
                    y + *t.residual.add(i * t.ldc + j)
                };
                *t.c.add(i * t.ldc + j) = if t.relu { y.max(0.0) } else { y };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::QTile;

    /// AVX-512 VNNI: `C[0..M, 0..32]`, one `vpdpbusd` per 4 `K` × 16 columns × row.
    ///
    /// # Safety
    /// AVX-512F/BW and AVX-512 VNNI available; `t` addresses `M` rows and a 32-column panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn avx512vnni<const M: usize>(t: &QTile) {
        unsafe {
            let mut lo = [_mm512_setzero_si512(); M];
            let mut hi = [_mm512_setzero_si512(); M];
            for g in 0..t.kp / 4 {
                let b0 = _mm512_loadu_si512(t.b.add(g * 128).cast());
                let b1 = _mm512_loadu_si512(t.b.add(g * 128 + 64).cast());
                for i in 0..M {
                    let quad = t.a.add(i * t.lda + 4 * g).cast::<i32>().read_unaligned();
                    let a = _mm512_set1_epi32(quad);
                    lo[i] = _mm512_dpbusd_epi32(lo[i], a, b0);
                    hi[i] = _mm512_dpbusd_epi32(hi[i], a, b1);
                }
            }
            for half in 0..2 {
                let off = half * 16;
                let scale = _mm512_loadu_ps(t.scale.add(off));
                let zero = _mm512_loadu_si512(t.zero.add(off).cast());
                let bias = _mm512_loadu_ps(t.bias.add(off));
                for i in 0..M {
                    let acc = if half == 0 { lo[i] } else { hi[i] };
                    let x = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zero));
                    let mut y = _mm512_fmadd_ps(x, scale, bias);
                    if !t.residual.is_null() {
                        y = _mm512_add_ps(y, _mm512_loadu_ps(t.residual.add(i * t.ldc + off)));
                    }
                    if t.relu {
                        y = _mm512_max_ps(y, _mm512_setzero_ps());
                    }
                    _mm512_storeu_ps(t.c.add(i * t.ldc + off), y);
                }
            }
        }
    }

    /// Stores 8 accumulators of row `i`, columns `off..off+8`, through the epilogue.
    ///
    /// # Safety
    /// AVX2 and FMA available; `t` addresses row `i` and columns `off..off+8`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store8(t: &QTile, i: usize, off: usize, acc: __m256i) {
        unsafe {
            let zero = _mm256_loadu_si256(t.zero.add(off).cast());
            let x = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, zero));
            let mut y = _mm256_fmadd_ps(x, _mm256_loadu_ps(t.scale.add(off)), {
                _mm256_loadu_ps(t.bias.add(off))
            });
            if !t.residual.is_null() {
                y = _mm256_add_ps(y, _mm256_loadu_ps(t.residual.add(i * t.ldc + off)));
            }
            if t.relu {
                y = _mm256_max_ps(y, _mm256_setzero_ps());
            }
            _mm256_storeu_ps(t.c.add(i * t.ldc + off), y);
        }
    }

    /// The 256-bit `vpdpbusd` kernel body, `C[0..M, 0..16]`, with `$dp` the intrinsic.
    macro_rules! vnni256_body {
        ($t:ident, $dp:ident) => {
            unsafe {
                let mut lo = [_mm256_setzero_si256(); M];
                let mut hi = [_mm256_setzero_si256(); M];
                for g in 0..$t.kp / 4 {
                    let b0 = _mm256_loadu_si256($t.b.add(g * 64).cast());
                    let b1 = _mm256_loadu_si256($t.b.add(g * 64 + 32).cast());
                    for i in 0..M {
                        let quad = $t.a.add(i * $t.lda + 4 * g).cast::<i32>().read_unaligned();
                        let a = _mm256_set1_epi32(quad);
                        lo[i] = $dp(lo[i], a, b0);
                        hi[i] = $dp(hi[i], a, b1);
                    }
                }
                for i in 0..M {
                    store8($t, i, 0, lo[i]);
                    store8($t, i, 8, hi[i]);
                }
            }
        };
    }

    /// AVX-VNNI (VEX encoding): `C[0..M, 0..16]`.
    ///
    /// # Safety
    /// AVX2, FMA and AVX-VNNI available; `t` addresses `M` rows and a 16-column panel.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub(super) unsafe fn avxvnni_vex<const M: usize>(t: &QTile) {
        vnni256_body!(t, _mm256_dpbusd_avx_epi32)
    }

    /// The AVX-VNNI kernel with the EVEX encoding of the same instruction (AVX-512 VNNI + VL).
    ///
    /// # Safety
    /// AVX2, FMA, AVX-512 VNNI and AVX-512 VL available; as [`avxvnni_vex`] otherwise.
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    pub(super) unsafe fn avxvnni_evex<const M: usize>(t: &QTile) {
        vnni256_body!(t, _mm256_dpbusd_epi32)
    }

    /// AVX2 widening path: `C[0..M, 0..16]`. Per group of 4 `K`, the 64 weight bytes are
    /// sign-extended 16 at a time (4 columns × 4 `K`) and the row's 4 activation bytes,
    /// zero-extended and repeated, are multiplied with `vpmaddwd`; each i32 lane then holds the
    /// sum over `K` pair 0–1 or 2–3 of one column, and the pairs are added once at the end.
    ///
    /// # Safety
    /// AVX2 and FMA available; `t` addresses `M` rows and a 16-column panel.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const M: usize>(t: &QTile) {
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 4]; M];
            for g in 0..t.kp / 4 {
                let mut b = [_mm256_setzero_si256(); 4];
                for (q, bq) in b.iter_mut().enumerate() {
                    *bq = _mm256_cvtepi8_epi16(_mm_loadu_si128(t.b.add(g * 64 + q * 16).cast()));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let quad = t.a.add(i * t.lda + 4 * g).cast::<i32>().read_unaligned();
                    let wide = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(quad));
                    let a = _mm256_broadcastq_epi64(wide);
                    for (sum, &bq) in row.iter_mut().zip(&b) {
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(a, bq));
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                // hadd within 128-bit lanes gives columns [0 1 4 5 | 2 3 6 7]; reorder qwords.
                let c0_7 =
                    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(row[0], row[1]));
                let c8_15 =
                    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(row[2], row[3]));
                store8(t, i, 0, c0_7);
                store8(t, i, 8, c8_15);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::SplitMix64;

    struct Rng(SplitMix64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(SplitMix64::new(seed))
        }
        /// Uniform integer in `lo..=hi`.
        fn int(&mut self, lo: i32, hi: i32) -> i32 {
            let u = (self.0.next_signed_unit() + 1.0) / 2.0; // [0, 1)
            lo + (u * f64::from(hi - lo + 1)) as i32
        }
        fn unit(&mut self) -> f32 {
            self.0.next_signed_unit() as f32
        }
    }

    /// The exact product `A · B` in i64, straight from the unpacked matrices.
    fn exact(a: &[u8], b: &[i8], rows: usize, k: usize, n: usize) -> Vec<i64> {
        let mut out = vec![0i64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| i64::from(a[i * k + p]) * i64::from(b[p * n + j]))
                    .sum();
            }
        }
        out
    }

    /// `A` with row stride `lda = Kp + 8`, whose padding bytes hold junk (must not matter).
    fn strided_a(a: &[u8], rows: usize, k: usize) -> (Vec<u8>, usize) {
        let lda = k.next_multiple_of(4) + 8;
        let mut out = vec![0xA5u8; rows * lda];
        for i in 0..rows {
            out[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
        }
        (out, lda)
    }

    struct Run<'a> {
        a: &'a [u8],
        b: &'a [i8],
        rows: usize,
        k: usize,
        n: usize,
    }

    /// The bare integer products (scale 1, no zero point, bias, residual or ReLU) of every
    /// column, in a C first filled with `fill`.
    fn integer_products(isa: QIsa, r: &Run, fill: f32) -> Vec<f32> {
        let n = r.n;
        let (ones, zeros) = (vec![1.0; n], vec![0.0; n]);
        run(
            isa,
            r,
            &ones,
            &vec![0; n],
            &zeros,
            None,
            false,
            (0, n),
            fill,
        )
    }

    /// Runs one GEMM on `isa` with the given epilogue parameters over columns `c0..c1`;
    /// columns outside keep `fill`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        isa: QIsa,
        r: &Run,
        scale: &[f32],
        zero: &[i32],
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        (c0, c1): (usize, usize),
        fill: f32,
    ) -> Vec<f32> {
        let packed = PackedQ::pack_with(r.k, r.n, isa, |row, col| r.b[row * r.n + col]);
        let np = packed.padded_n();
        let pad = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(np, 0.0);
            p
        };
        let (scale, bias) = (pad(scale), pad(bias));
        let mut zero = zero.to_vec();
        zero.resize(np, 0);
        let (a, lda) = strided_a(r.a, r.rows, r.k);
        let mut c = vec![fill; r.rows * r.n];
        let epi = Epilogue {
            scale: &scale,
            zero: &zero,
            bias: &bias,
            residual: residual.map_or(std::ptr::null(), <[f32]>::as_ptr),
            relu,
        };
        let op = QOperands {
            a: a.as_ptr(),
            lda,
            rows: r.rows,
            c: c.as_mut_ptr(),
            ldc: r.n,
            c0,
            c1,
        };
        // SAFETY: A has rows × lda bytes (lda ≥ Kp), C and the residual rows × n floats.
        unsafe { packed.gemm(&op, &epi) };
        c
    }

    fn supported() -> Vec<QIsa> {
        QIsa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    #[test]
    fn every_supported_path_gives_the_exact_integer_products() {
        // Odd rows (micro-tile remainders), K not a multiple of 4, partial panels, full u8 and
        // s8 ranges (including -128); |A·B| < 2^24 here, so the f32 output (scale 1, bias 0)
        // holds the accumulator exactly and must equal the i64 product.
        for (rows, k, n, seed) in [
            (1, 3, 5, 1u64),
            (13, 301, 47, 2),
            (25, 17, 64, 3),
            (7, 255, 33, 4),
            (12, 64, 96, 5),
        ] {
            let mut rng = Rng::new(seed);
            let a: Vec<u8> = (0..rows * k).map(|_| rng.int(0, 255) as u8).collect();
            let b: Vec<i8> = (0..k * n).map(|_| rng.int(-128, 127) as i8).collect();
            let want = exact(&a, &b, rows, k, n);
            assert!(want.iter().all(|v| v.abs() < 1 << 24));
            let r = Run {
                a: &a,
                b: &b,
                rows,
                k,
                n,
            };
            for isa in supported() {
                let got = integer_products(isa, &r, f32::NAN);
                for (idx, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g, w as f32, "{isa:?} {rows}x{k}x{n} element {idx}");
                }
            }
        }
    }

    #[test]
    fn extreme_products_over_the_longest_k_do_not_saturate() {
        // 255 × 127 and 255 × -128 summed over K = 4608 (layer4's 3×3×512): a `vpmaddubsw`
        // kernel would saturate its i16 pairs here; every path must give the exact sum.
        let (rows, k, n) = (3, 4608, 32);
        let a = vec![255u8; rows * k];
        let b: Vec<i8> = (0..k * n)
            .map(|i| if (i % n) % 2 == 0 { 127 } else { -128 })
            .collect();
        let r = Run {
            a: &a,
            b: &b,
            rows,
            k,
            n,
        };
        for isa in supported() {
            let got = integer_products(isa, &r, 0.0);
            for (j, &g) in got[..n].iter().enumerate() {
                let want = if j % 2 == 0 {
                    255 * 127 * 4608
                } else {
                    -255 * 128 * 4608
                };
                assert_eq!(g, want as f32, "{isa:?} column {j}");
            }
        }
    }

    #[test]
    fn epilogue_applies_zero_scale_bias_residual_relu_on_a_column_range() {
        let (rows, k, n) = (14, 579, 80);
        let mut rng = Rng::new(9);
        let a: Vec<u8> = (0..rows * k).map(|_| rng.int(0, 255) as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|_| rng.int(-127, 127) as i8).collect();
        let scale: Vec<f32> = (0..n).map(|_| 1e-5 * (1.5 + rng.unit())).collect();
        let zero: Vec<i32> = (0..n).map(|_| rng.int(-100_000, 100_000)).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        let residual: Vec<f32> = (0..rows * n).map(|_| rng.unit()).collect();
        let products = exact(&a, &b, rows, k, n);
        let r = Run {
            a: &a,
            b: &b,
            rows,
            k,
            n,
        };
        for isa in supported() {
            let step = isa.nr();
            // A range that starts on a panel boundary and ends inside a panel.
            let (c0, c1) = (step, n - 5);
            for (res, relu) in [(None, false), (Some(&residual[..]), true)] {
                let got = run(isa, &r, &scale, &zero, &bias, res, relu, (c0, c1), -7.0);
                for i in 0..rows {
                    for j in 0..n {
                        let g = got[i * n + j];
                        if !(c0..c1).contains(&j) {
                            assert_eq!(g, -7.0, "{isa:?} untouched column {j}");
                            continue;
                        }
                        let acc = products[i * n + j] - i64::from(zero[j]);
                        let mut want = acc as f64 * f64::from(scale[j]) + f64::from(bias[j]);
                        if let Some(res) = res {
                            want += f64::from(res[i * n + j]);
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let tol = 1e-5 * (1.0 + want.abs());
                        assert!(
                            (f64::from(g) - want).abs() <= tol,
                            "{isa:?} ({i},{j}): {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn forced_path_names_parse_and_unsupported_or_unknown_fall_back_to_best() {
        for isa in QIsa::ALL {
            assert_eq!(QIsa::parse(isa.name()), Some(isa));
            let chosen = QIsa::choose(Some(isa.name()));
            if isa.supported() {
                assert_eq!(chosen, isa);
            } else {
                assert_eq!(chosen, QIsa::best());
            }
        }
        assert_eq!(QIsa::choose(Some("sse9")), QIsa::best());
        assert_eq!(QIsa::choose(None), QIsa::best());
        assert_eq!(QIsa::choose(Some(" portable ")), QIsa::Portable);
        assert!(QIsa::best().supported());
    }

    #[test]
    fn packing_pads_k_to_groups_of_four_and_n_to_whole_panels() {
        let packed = PackedQ::pack_with(5, 20, QIsa::Portable, |r, c| (r * 20 + c) as i8);
        assert_eq!(packed.padded_k(), 8);
        assert_eq!(packed.padded_n(), 32);
        let bytes = packed.bytes();
        // Panel 1 (columns 16..32), group 1 (rows 4..8), column 17 → offset.
        let base = 8 * 16 + 16 * 4 + 4;
        assert_eq!(bytes[base], (4 * 20 + 17) as i8); // row 4
        assert_eq!(&bytes[base + 1..base + 4], &[0, 0, 0]); // rows 5..8 are padding
        assert_eq!(bytes[8 * 16 + 4 * 4], 0); // column 20 is padding
    }
}
