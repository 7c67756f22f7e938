//! Thread budget: one pool for the whole process, the rayon global pool.
//!
//! candle's own matmul (used for the final `fc` layer) already runs on the rayon global pool, so
//! the kernels here use it too and never start threads of their own: no oversubscription.
//! rayon sizes the pool from `RAYON_NUM_THREADS` when set, otherwise from
//! `std::thread::available_parallelism()`, which on Linux honours the CPU affinity mask and the
//! cgroup CPU quota (`cpu.max`) — on Function Compute that is the instance's vCPU count.

/// Number of worker threads the kernels may use (size of the rayon global pool).
pub fn budget() -> usize {
    rayon::current_num_threads()
}

/// How many independent tasks to cut a parallel loop into: a few per thread so that a thread
/// slowed by a neighbour on a shared machine does not hold the others up, and exactly one when
/// there is a single thread (no splitting overhead).
pub fn task_count(threads: usize) -> usize {
    if threads <= 1 { 1 } else { threads * 4 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_thread_is_one_task_and_more_threads_get_several_each() {
        assert_eq!(task_count(1), 1);
        assert_eq!(task_count(0), 1);
        assert_eq!(task_count(2), 8);
    }

    #[test]
    fn budget_is_at_least_one_thread() {
        assert!(budget() >= 1);
    }
}
