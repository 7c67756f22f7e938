//! Reproducible random inputs and a tensor comparison for the kernel tests.

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, well-mixed 64-bit generator.
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Starts a stream at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Next uniform value in `[-1, 1)` (24 bits of resolution).
    pub fn next_signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 40) as f64 / f64::from(1u32 << 24) * 2.0 - 1.0
    }
}

/// Largest absolute element difference of two f32 tensors of the same shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A reproducible f32 tensor with values in [-1, 1).
pub fn random_tensor(shape: &[usize], seed: u64) -> candle_core::Tensor {
    let mut rng = SplitMix64::new(seed);
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|_| rng.next_signed_unit() as f32).collect();
    candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu).unwrap()
}
