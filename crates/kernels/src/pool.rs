//! Pooling on channels-last activations.
//!
//! Layouts: input `N×H×W×C` (NHWC), contiguous f32.
//! * [`MaxPool`] → `N×OH×OW×C` (NHWC); padding behaves like PyTorch's (−∞: padded cells never
//!   win), each output pixel is the element-wise maximum of whole `C`-vectors, so the inner loop
//!   runs over contiguous channels and vectorises.
//! * [`GlobalAvgPool`] → `N×C`: the mean over all pixels, summed as contiguous `C`-vectors
//!   (ResNet's `avgpool` + `flatten`, ready for the `fc` matmul without a transpose).

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::contiguous_f32;

/// Square max-pooling window with stride and (−∞) padding, as `torch.nn.MaxPool2d`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit −∞ border on each side (must be at most half the window, as in PyTorch).
    pub padding: usize,
}

impl MaxPool {
    /// Applies the pooling to an NHWC tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    fn output_size(&self, n: usize) -> usize {
        (n + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Valid input range `lo..hi` of the window starting at output index `o`.
    fn window(&self, o: usize, size: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + self.kernel as isize).max(0) as usize).min(size);
        (lo, hi)
    }
}

impl candle_core::CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "nhwc-max-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "nhwc-max-pool")?;
        let (batch, h, w, c) = layout.shape().dims4()?;
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            bail!("nhwc-max-pool: invalid window {self:?}");
        }
        if h + 2 * self.padding < self.kernel || w + 2 * self.padding < self.kernel {
            bail!("nhwc-max-pool: input {h}x{w} smaller than the window");
        }
        let (oh, ow) = (self.output_size(h), self.output_size(w));
        let mut out = vec![0f32; batch * oh * ow * c];
        // One task per output row (all its pixels and channels).
        out.par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(out_row, dst)| {
                let n = out_row / oh;
                let (y0, y1) = self.window(out_row % oh, h);
                for (ox, pixel) in dst.chunks_exact_mut(c).enumerate() {
                    let (x0, x1) = self.window(ox, w);
                    pixel.fill(f32::NEG_INFINITY);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            let at = ((n * h + y) * w + x) * c;
                            for (d, &v) in pixel.iter_mut().zip(&input[at..at + c]) {
                                *d = d.max(v);
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((batch, oh, ow, c))))
    }
}

/// Mean over all pixels of an NHWC tensor, giving `N×C`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    /// Applies the pooling to an NHWC tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }
}

impl candle_core::CustomOp1 for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "nhwc-global-avg-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "nhwc-global-avg-pool")?;
        let (batch, h, w, c) = layout.shape().dims4()?;
        let pixels = h * w;
        if pixels == 0 {
            bail!("nhwc-global-avg-pool: empty input");
        }
        let mut out = vec![0f32; batch * c];
        for (dst, image) in out.chunks_exact_mut(c).zip(input.chunks_exact(pixels * c)) {
            for pixel in image.chunks_exact(c) {
                for (d, &v) in dst.iter_mut().zip(pixel) {
                    *d += v;
                }
            }
            dst.iter_mut().for_each(|d| *d /= pixels as f32);
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::SplitMix64;
    use candle_core::Device;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = SplitMix64::new(seed);
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len).map(|_| rng.next_signed_unit() as f32).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn to_nhwc(x: &Tensor) -> Tensor {
        x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Pads an NCHW tensor with −∞ on both sides of H and W (PyTorch's max-pool padding).
    fn pad_neg_inf(x: &Tensor, p: usize) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let rows = Tensor::full(f32::NEG_INFINITY, (n, c, p, w), &Device::Cpu).unwrap();
        let x = Tensor::cat(&[&rows, x, &rows], 2).unwrap();
        let cols = Tensor::full(f32::NEG_INFINITY, (n, c, h + 2 * p, p), &Device::Cpu).unwrap();
        Tensor::cat(&[&cols, &x, &cols], 3).unwrap()
    }

    #[test]
    fn max_pool_matches_candle_with_negative_inputs_padding_and_batch() {
        // Values in [-1, 1): zero padding would be wrong here, −∞ padding is required.
        for (shape, kernel, stride, padding, seed) in [
            ([2, 5, 13, 11], 3, 2, 1, 1),
            ([1, 3, 8, 9], 3, 1, 1, 2),
            ([3, 4, 7, 7], 2, 2, 0, 3),
            ([1, 17, 112, 112], 3, 2, 1, 4),
        ] {
            let x = random(&shape, seed);
            let expected = pad_neg_inf(&x, padding)
                .max_pool2d_with_stride(kernel, stride)
                .unwrap();
            let pool = MaxPool {
                kernel,
                stride,
                padding,
            };
            let got = pool
                .forward(&to_nhwc(&x))
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap();
            assert_eq!(
                max_abs_diff(&got, &expected),
                0.0,
                "{shape:?} k{kernel} s{stride} p{padding}"
            );
        }
    }

    #[test]
    fn max_pool_rejects_padding_larger_than_half_window() {
        let pool = MaxPool {
            kernel: 2,
            stride: 1,
            padding: 2,
        };
        assert!(pool.forward(&random(&[1, 4, 4, 2], 5)).is_err());
    }

    #[test]
    fn global_avg_pool_matches_candle_mean() {
        for (shape, seed) in [([2, 9, 7, 7], 6), ([3, 512, 7, 7], 7), ([1, 3, 5, 2], 8)] {
            let x = random(&shape, seed);
            let expected = x.mean((2, 3)).unwrap();
            let got = GlobalAvgPool.forward(&to_nhwc(&x)).unwrap();
            assert!(max_abs_diff(&got, &expected) <= 1e-6, "{shape:?}");
        }
    }
}
