//! glibc malloc settings for the serving process, applied once at start.
//!
//! Why: a forward pass allocates its activations as a few dozen buffers of 0.1–26 MB and frees
//! them at its end. glibc serves any block above `M_MMAP_THRESHOLD` (128 KiB at start) with
//! its own `mmap` and gives it back to the kernel on `free`, but its *dynamic* threshold rises
//! to the size of every such block freed (up to 32 MiB): after the first forward, activations
//! come from the heap arenas instead, and freed arena memory mostly stays resident (only the
//! top of a heap is trimmed). Measured with `tools/bench/http_bench.py`'s server
//! (synthetic weights, 500×375 JPEG): resident memory after loading fell from 85 MB to 57 MB
//! with the threshold fixed at 256 KiB, and stayed there after load instead of creeping up.
//!
//! What: `mallopt(M_MMAP_THRESHOLD, 256 KiB)`. Setting it also freezes the dynamic
//! adjustment, of this threshold and of `M_TRIM_THRESHOLD` (left at its 128 KiB default).
//! Blocks of 256 KiB and more (one 224×224 image is 588 KiB) are then mapped on allocation and
//! unmapped on free; smaller ones still come from the arenas.
//!
//! Not applied: on other C libraries (musl has no `mallopt` thresholds), or when the operator
//! already set malloc options in `GLIBC_TUNABLES` (theirs win), or with `--no-malloc-tuning`.

/// The fixed mmap threshold in bytes: blocks this large or larger get their own mapping.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// What [`tune_for_serving`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MallocTuning {
    /// `M_MMAP_THRESHOLD` is now fixed at this many bytes.
    Applied {
        /// The threshold set.
        mmap_threshold: usize,
    },
    /// Left as it was, for this reason.
    Skipped(&'static str),
}

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] unless `glibc_tunables` (the value of
/// `GLIBC_TUNABLES`) already sets a malloc option. Call it before the process starts threads
/// that allocate (it is process-wide).
pub fn tune_for_serving(glibc_tunables: Option<&str>) -> MallocTuning {
    if glibc_tunables.is_some_and(|t| t.contains("glibc.malloc.")) {
        return MallocTuning::Skipped("GLIBC_TUNABLES sets malloc options");
    }
    set_mmap_threshold(MMAP_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: usize) -> MallocTuning {
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return MallocTuning::Skipped("threshold out of range");
    };
    // SAFETY: mallopt only updates malloc's parameters under its own lock; any value is
    // accepted or refused (return 0), never undefined behaviour.
    match unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) } {
        1 => MallocTuning::Applied {
            mmap_threshold: bytes,
        },
        _ => MallocTuning::Skipped("mallopt refused the threshold"),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> MallocTuning {
    MallocTuning::Skipped("not glibc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_options_in_glibc_tunables_are_left_alone() {
        let tuning = tune_for_serving(Some("glibc.malloc.arena_max=1"));
        assert_eq!(
            tuning,
            MallocTuning::Skipped("GLIBC_TUNABLES sets malloc options")
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_threshold_and_other_tunables_do_not_stop_it() {
        // Process-wide, but the same value the server sets; other tests are unaffected.
        let tuning = tune_for_serving(Some("glibc.cpu.hwcaps=-AVX512F"));
        assert_eq!(
            tuning,
            MallocTuning::Applied {
                mmap_threshold: MMAP_THRESHOLD
            }
        );
    }
}
