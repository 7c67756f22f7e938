//! Image bytes → `preprocess` (format sniffing, header size check, decode, EXIF orientation,
//! resize, crop, normalise). Must never panic, never allocate past the pixel limit, and a
//! success must be a full 3×224×224 tensor of finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN, preprocess};

/// Small enough that a decoded image stays far below libFuzzer's RSS limit.
const LIMITS: Limits = Limits {
    max_pixels: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(done) = preprocess(data, &LIMITS) {
        assert_eq!(done.chw.len(), TENSOR_LEN);
        assert!(done.chw.iter().all(|v| v.is_finite()));
    }
});
