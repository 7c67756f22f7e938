//! What the NHWC convolutions ([`crate::conv::PackedConv`], [`crate::winograd::WinogradConv`],
//! [`crate::qconv::QConv`]) share: the candle custom-op glue (one input, or one input plus a
//! residual of the output's shape, added before the activation) and the input geometry of the
//! square-kernel ones.

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};

use crate::contiguous_f32;

/// An NHWC convolution that candle runs as a custom op.
pub(crate) trait NhwcConv: Send + Sync {
    /// Op name in candle's errors, e.g. `nhwc-conv`.
    const NAME: &'static str;
    /// Op name of the variant with a residual input.
    const RESIDUAL_NAME: &'static str;
    /// What one call knows about its input once its shape has been checked.
    type Plan;

    /// Checks the NHWC input shape against the layer; the call's plan and output shape.
    fn plan(&self, input: &Shape) -> Result<(Self::Plan, Shape)>;

    /// Runs the convolution; `residual`, when given, has the output's shape.
    fn run(&self, input: &[f32], plan: &Self::Plan, residual: Option<&[f32]>) -> Vec<f32>;
}

/// `conv(x)` (plus bias, then the layer's activation).
pub(crate) fn forward<T: NhwcConv>(conv: &T, x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Plain(conv))
}

/// `conv(x) + residual` (plus bias, then the layer's activation).
pub(crate) fn forward_add<T: NhwcConv>(conv: &T, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(residual, &WithResidual(conv))
}

struct Plain<'a, T>(&'a T);

impl<T: NhwcConv> candle_core::CustomOp1 for Plain<'_, T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, T::NAME)?;
        let (plan, shape) = self.0.plan(layout.shape())?;
        let out = self.0.run(input, &plan, None);
        Ok((CpuStorage::F32(out), shape))
    }
}

struct WithResidual<'a, T>(&'a T);

impl<T: NhwcConv> candle_core::CustomOp2 for WithResidual<'_, T> {
    fn name(&self) -> &'static str {
        T::RESIDUAL_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(s1, l1, T::RESIDUAL_NAME)?;
        let residual = contiguous_f32(s2, l2, T::RESIDUAL_NAME)?;
        let (plan, shape) = self.0.plan(l1.shape())?;
        if l2.shape() != &shape {
            bail!(
                "{}: residual shape {:?}, expected {:?}",
                T::RESIDUAL_NAME,
                l2.shape(),
                shape
            );
        }
        let out = self.0.run(input, &plan, Some(residual));
        Ok((CpuStorage::F32(out), shape))
    }
}

/// Spatial sizes of one call of a square-kernel, strided, zero-padded NHWC convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) batch: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) out_height: usize,
    pub(crate) out_width: usize,
}

impl Geometry {
    /// Checks an NHWC input `shape` against a layer of `in_channels` inputs and a `kernel`×
    /// `kernel` window moved by `stride` over the input padded by `padding`; `op` names the
    /// layer kind in errors.
    pub(crate) fn of(
        op: &str,
        shape: &Shape,
        in_channels: usize,
        [kernel, stride, padding]: [usize; 3],
    ) -> Result<Self> {
        let (batch, height, width, channels) = shape.dims4()?;
        if channels != in_channels {
            bail!("{op}: input has {channels} channels (NHWC), expected {in_channels}");
        }
        if height + 2 * padding < kernel || width + 2 * padding < kernel {
            bail!("{op}: input {height}x{width} smaller than kernel {kernel}");
        }
        let (out_height, out_width) = output_size(height, width, [kernel, stride, padding]);
        Ok(Self {
            batch,
            height,
            width,
            out_height,
            out_width,
        })
    }

    /// Number of output pixels over the whole batch (GEMM rows).
    pub(crate) fn rows(&self) -> usize {
        self.batch * self.out_height * self.out_width
    }
}

/// Output spatial size of an `h×w` input under `[kernel, stride, padding]`.
pub(crate) fn output_size(
    h: usize,
    w: usize,
    [kernel, stride, padding]: [usize; 3],
) -> (usize, usize) {
    let span = |n: usize| (n + 2 * padding).saturating_sub(kernel) / stride + 1;
    (span(h), span(w))
}
