//! Large JPEG bytes → `preprocess` through the reduced-scale DCT decode (jpeg-decoder at 1/2,
//! 1/4 or 1/8 scale), the path taken when the short side is ≥ 1024 px. `decode_preprocess`
//! never reaches it: its pixel limit keeps images far below that size. Must never panic, never
//! allocate past the pixel limit, and a success must be a full 3×224×224 tensor of finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN, preprocess};

/// 4 MP: room for 1024×1024 up to 2048×2048 headers (the scaled path), while a decoded image
/// at reduced scale stays a few MB.
const LIMITS: Limits = Limits {
    max_pixels: 1 << 22,
    exact_jpeg: false,
};

/// JPEG start-of-image marker: other formats are `decode_preprocess`'s job.
const SOI: [u8; 2] = [0xFF, 0xD8];

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(&SOI) {
        return;
    }
    if let Ok(done) = preprocess(data, &LIMITS) {
        assert_eq!(done.chw.len(), TENSOR_LEN);
        assert!(done.chw.iter().all(|v| v.is_finite()));
    }
});
