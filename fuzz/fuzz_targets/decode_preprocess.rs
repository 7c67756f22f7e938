//! Image bytes → `preprocess` (format sniffing, header size check, decode, EXIF orientation,
//! resize, crop, normalise). Must never panic, never allocate past the pixel limit, and a
//! success must be a full 3×224×224 tensor of finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN, preprocess};

/// 256×256: a decoded image stays far below libFuzzer's RSS limit, and a mutated header
/// declaring a large size costs milliseconds, not seconds, so the fuzzer explores structure
/// instead of decoding big blank images. The limit check itself is the same code for any value.
const LIMITS: Limits = Limits {
    max_pixels: 1 << 16,
    ..Limits::DEFAULT
};

fuzz_target!(|data: &[u8]| {
    if let Ok(done) = preprocess(data, &LIMITS) {
        assert_eq!(done.chw.len(), TENSOR_LEN);
        assert!(done.chw.iter().all(|v| v.is_finite()));
    }
});
