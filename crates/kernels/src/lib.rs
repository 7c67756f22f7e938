//! Fast CPU kernels for ResNet-18 inference, exposed as candle custom ops.
//!
//! Stock candle runs a convolution as an element-by-element im2col in NCHW, re-lays out the
//! weights on every call and leaves a single thread copying while the other waits. These kernels
//! keep candle tensors but change three things:
//!
//! * **Channels-last activations.** Every tensor between the stem and the classifier is
//!   `N×H×W×C` (NHWC), contiguous. One pixel's channels are adjacent, so an im2col row is a few
//!   `memcpy`s of `C` floats and the GEMM output is already the next layer's input.
//! * **Weights packed once at load** as a `K×O` row-major matrix, `K = kh·kw·C_in` ordered
//!   `(ky, kx, c)`, with batch-norm already folded in by the caller.
//! * **Fused epilogue** — bias, optional residual and ReLU are applied to each output tile
//!   while it is hot in cache, and tiles of output pixels (or output channels when there are few
//!   pixels) are spread over the rayon global pool, which also helps at batch 1.
//!
//! One module per kernel family: [`conv`] (convolution as tiled im2col + GEMM), [`matmul`]
//! (packed-weight register-blocked matrix multiply for AVX-512 / AVX2), [`pool`]
//! (max-pool and global average pool), [`winograd`] (3×3 stride-1 convolutions as Winograd
//! `F(2,3)` / `F(4,3)`: transformed tiles + one GEMM per tile position), [`fold`]
//! (batch-norm folding, run once at load), and the 8-bit pair [`qgemm`] (u8 × s8 → i32
//! micro-kernels for AVX-512 VNNI, AVX-VNNI, AVX2 and portable code, with a fused
//! requantize/bias/residual/ReLU epilogue) and [`qconv`] (per-channel int8 weights, activations
//! quantized per tensor at run time, u8 im2col).
//! [`threads`] describes the thread budget.
//!
//! This is a crate of its own (workspace member `crates/kernels`) so that it is compiled with
//! optimisations even in the test profile: every loop that runs per forward or per load lives
//! here, while the model graph stays in the main crate's `resnet` module.

pub mod conv;
pub mod fold;
pub mod matmul;
mod nhwc_op;
pub mod pool;
pub mod qconv;
pub mod qgemm;
pub mod threads;
pub mod winograd;

#[cfg(test)]
mod test_support;

pub use conv::PackedConv;
pub use fold::{BatchNorm, fold_batch_norm};
pub use pool::{GlobalAvgPool, MaxPool};
pub use qconv::QConv;
pub use winograd::{Variant as WinogradVariant, WinogradConv};

use std::mem::MaybeUninit;

/// A raw f32 pointer shared by parallel tasks, each of which writes its own ranges of one
/// live buffer (distinct output tiles, distinct Winograd matrices).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: every use writes index ranges no other task touches, and the buffer outlives the
// parallel loop that uses it (see the callers in `conv` and `winograd`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Storage for `len` output floats that a kernel writes completely before anything reads it,
/// without the zero-fill of `vec![0.0; len]` (an extra pass over every output, about 15 MB per
/// batch-1 forward). Turn it into the result with [`assume_filled`].
pub(crate) fn uninit_output(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut buffer = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit<f32>` needs no initialisation, and the capacity is `len`.
    unsafe { buffer.set_len(len) };
    buffer
}

/// The floats of a buffer from [`uninit_output`] once the kernel has written every element.
///
/// # Safety
/// Every element of `buffer` must have been written.
pub(crate) unsafe fn assume_filled(buffer: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut buffer = std::mem::ManuallyDrop::new(buffer);
    let (ptr, len, capacity) = (buffer.as_mut_ptr(), buffer.len(), buffer.capacity());
    // SAFETY: same allocation, element size and alignment (`MaybeUninit<f32>` is
    // layout-compatible with `f32`); every element is initialised (caller contract).
    unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, capacity) }
}

/// Views a run of written elements of a [`uninit_output`] buffer as floats.
///
/// # Safety
/// Every element of `run` must have been written.
pub(crate) unsafe fn filled_mut(run: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: layout-compatible element types; initialised (caller contract).
    unsafe { &mut *(std::ptr::from_mut(run) as *mut [f32]) }
}

/// Borrows the contiguous f32 data of a custom-op input, or explains why it cannot.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &'static str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!(
            "{op}: expected an f32 tensor, got {:?}",
            candle_core::backend::BackendStorage::dtype(storage)
        );
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&data[start..end])
}
