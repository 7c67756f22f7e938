//! The candle custom-op glue shared by the NHWC convolutions ([`crate::conv::PackedConv`],
//! [`crate::winograd::WinogradConv`], [`crate::qconv::QConv`]): one input, or one input plus a
//! residual of the output's shape, added before the activation.

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
