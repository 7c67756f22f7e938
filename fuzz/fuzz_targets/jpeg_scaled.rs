//! JPEG bytes → `preprocess` through the reduced-scale DCT decode (jpeg-decoder at 1/2, 1/4
//! or 1/8 scale, `src/preprocess/jpeg_scaled.rs`) and, when that fails, the exact fallback.
//! The product takes this path from a 1024-px shorter side on, far too slow to fuzz under
//! ASan (6–37 s per seed), so this target lowers that size to 16 px with the fuzz-only hook
//! `preprocess::fuzzing::JPEG_SCALE_FROM`: the code run is the product's, on small images.
//! Must never panic, never allocate past the pixel limit, and a success must be a full
//! 3×224×224 tensor of finite values.
#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use resnet18_fc::preprocess::{Limits, TENSOR_LEN, fuzzing, preprocess};

/// 256×256, as `decode_preprocess`: decoded images stay small and fast.
const LIMITS: Limits = Limits {
    max_pixels: 1 << 16,
    ..Limits::DEFAULT
};

/// Shorter side from which a JPEG is decoded at 1/d: 16·d px (d = 2, 4, 8), so 32-px images
/// are scaled by 2 and 128-px ones by 8.
const SCALE_FROM: u32 = 16;

/// JPEG start-of-image marker: other formats are `decode_preprocess`'s job.
const SOI: [u8; 2] = [0xFF, 0xD8];

fuzz_target!(
    init: {
        fuzzing::JPEG_SCALE_FROM.store(SCALE_FROM, Ordering::Relaxed);
    },
    |data: &[u8]| {
        if !data.starts_with(&SOI) {
            return;
        }
        if let Ok(done) = preprocess(data, &LIMITS) {
            assert_eq!(done.chw.len(), TENSOR_LEN);
            assert!(done.chw.iter().all(|v| v.is_finite()));
        }
    }
);
