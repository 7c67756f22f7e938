//! glibc malloc settings for the serving process: one arena, and a trim after the model load.
//!
//! Why (measured with the release server on synthetic weights, 500×375 JPEG, 2 workers,
//! bursts of 4 concurrent requests, load average 6–8; `tools/bench/http_bench.py` and paired
//! runs, see the README's Performance section):
//! - glibc gives every thread that allocates its own arena (up to 8 per core) and an arena
//!   keeps what was freed in it for reuse. Both inference threads allocate a forward's
//!   activations, so each arena ends up holding a forward's worth: peak RSS 130 MiB.
//!   `M_ARENA_MAX` = 1 makes them share one: 94 MiB, forward time unchanged (291 vs 291 ms).
//! - Loading reads each tensor into a temporary before packing it; the freed temporaries stay
//!   in the heap (about 20 MB). `malloc_trim(0)` once the model is ready returns them.
//! - Not chosen: a fixed `M_MMAP_THRESHOLD` (256 KiB), which maps and unmaps every large
//!   buffer of every forward. It gave the lowest peak (86 MiB) but made forwards 26–32 %
//!   slower (page faults on every fresh mapping).
//!
//! Not applied: on other C libraries, when `GLIBC_TUNABLES` already sets a malloc option (the
//! operator's settings win), or with `--no-malloc-tuning`.

/// What [`tune_for_serving`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MallocTuning {
    /// `M_ARENA_MAX` is now 1.
    OneArena,
    /// Left as it was, for this reason.
    Skipped(&'static str),
}

/// Limits glibc to one malloc arena unless `glibc_tunables` (the value of `GLIBC_TUNABLES`)
/// already sets a malloc option. Call it first thing, before the process starts threads.
pub fn tune_for_serving(glibc_tunables: Option<&str>) -> MallocTuning {
    if glibc_tunables.is_some_and(|t| t.contains("glibc.malloc.")) {
        return MallocTuning::Skipped("GLIBC_TUNABLES sets malloc options");
    }
    imp::one_arena()
}

/// Returns the free memory of malloc's heaps to the kernel (glibc's `malloc_trim(0)`); true
/// if some was returned. Cheap enough for once after loading, too slow for every request.
pub fn release_free_memory() -> bool {
    imp::trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::MallocTuning;

    pub fn one_arena() -> MallocTuning {
        // SAFETY: mallopt only updates malloc's parameters under its own lock; a value is
        // accepted (1) or refused (0), never undefined behaviour.
        match unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } {
            1 => MallocTuning::OneArena,
            _ => MallocTuning::Skipped("mallopt refused M_ARENA_MAX"),
        }
    }

    pub fn trim() -> bool {
        // SAFETY: malloc_trim walks malloc's own arenas under their locks and takes no
        // pointers from us.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::MallocTuning;

    pub fn one_arena() -> MallocTuning {
        MallocTuning::Skipped("not glibc")
    }

    pub fn trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_options_in_glibc_tunables_are_left_alone() {
        let tuning = tune_for_serving(Some("glibc.malloc.arena_max=2"));
        assert_eq!(
            tuning,
            MallocTuning::Skipped("GLIBC_TUNABLES sets malloc options")
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_one_arena_and_other_tunables_do_not_stop_it() {
        // Process-wide; harmless for the other tests of this binary.
        let tuning = tune_for_serving(Some("glibc.cpu.hwcaps=-AVX512F"));
        assert_eq!(tuning, MallocTuning::OneArena);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_returns_freed_heap_memory() {
        // 64 blocks of 64 KiB (below the mmap threshold, so they come from a heap); all but
        // the last freed: 4 MB free below a block in use, which `free` itself never returns.
        let mut blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        let last = blocks.pop();
        drop(blocks);
        assert!(release_free_memory(), "nothing was returned");
        assert_eq!(last.map(|b| b[0]), Some(63));
    }
}
