//! The bounded inference pool: CPU work (base64 and image decoding, preprocessing, the forward
//! pass) runs on rayon's global thread pool, never on the async runtime.
//!
//! Two limits:
//! - `workers` jobs run at once (one per vCPU; candle's own parallel kernels run on the same
//!   rayon threads, so threads never multiply);
//! - at most `workers + queue` requests are admitted (running or waiting). One more is refused
//!   at once with [`PoolError::Full`], which the server answers with 503 and `Retry-After`.
//!
//! A request whose client disconnects gives its slot back when its job ends, not before, so
//! abandoned requests cannot pile work onto the CPUs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Why a job did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every worker is busy and the queue is full.
    #[error(
        "the server is busy: {workers} inference workers are busy and {queue} requests are waiting; retry shortly"
    )]
    Full {
        /// Jobs that run at once.
        workers: usize,
        /// Requests allowed to wait.
        queue: usize,
    },
    /// The job panicked; the panic was contained.
    #[error("the inference job failed unexpectedly")]
    Panicked,
}

/// A place in the pool (running or waiting), obtained with [`InferencePool::try_admit`].
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

/// Bounded pool of inference jobs. Cheap to clone; clones share the limits.
#[derive(Debug, Clone)]
pub struct InferencePool {
    workers: usize,
    queue: usize,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl InferencePool {
    /// A pool running `workers` jobs at once with `queue` more waiting (`workers` ≥ 1).
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            queue,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    /// Jobs that run at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Requests allowed to wait for a worker.
    pub fn queue_capacity(&self) -> usize {
        self.queue
    }

    /// Requests admitted right now (running or waiting).
    pub fn admitted(&self) -> usize {
        self.workers + self.queue - self.admitted.available_permits()
    }

    /// Takes a place in the pool, or fails at once when it is full.
    pub fn try_admit(&self) -> Result<Admission, PoolError> {
        Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map(|permit| Admission { _permit: permit })
            .map_err(|_| PoolError::Full {
                workers: self.workers,
                queue: self.queue,
            })
    }

    /// Runs `job` on the inference threads once a worker is free; the admission is held until
    /// the job has finished.
    pub async fn run<T, F>(&self, admission: Admission, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_inner(Some(admission), job)
            .await
            .map(|(value, _)| value)
    }

    /// Like [`Self::run`] but hands the admission back with the result, for a request that
    /// has more work to do (its next job). If the caller is gone when the job ends, the
    /// admission is released then.
    pub async fn run_keeping<T, F>(
        &self,
        admission: Admission,
        job: F,
    ) -> Result<(T, Admission), PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (value, admission) = self.run_inner(Some(admission), job).await?;
        admission.map(|a| (value, a)).ok_or(PoolError::Panicked)
    }

    /// Like [`Self::run`] but outside the admission limit, for internal work (model loading)
    /// that must not be refused; it still waits for a free worker.
    pub async fn run_internal<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_inner(None, job).await.map(|(value, _)| value)
    }

    async fn run_inner<T, F>(
        &self,
        admission: Option<Admission>,
        job: F,
    ) -> Result<(T, Option<Admission>), PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let worker = self.worker().await?;
        let (tx, rx) = oneshot::channel();
        self.spawn(worker, move || {
            let result = catch_unwind(AssertUnwindSafe(job));
            if result.is_err() {
                tracing::error!("inference job panicked");
            }
            // The receiver is gone when the client disconnected: the admission is dropped
            // with the unsent value, here, at the end of the job.
            let _ = tx.send((result, admission));
        });
        match rx.await {
            Ok((Ok(value), admission)) => Ok((value, admission)),
            Ok((Err(_), _)) | Err(_) => Err(PoolError::Panicked),
        }
    }

    /// Waits until fewer than `workers` jobs run and reserves the place of one more. Waiters
    /// are served in arrival order.
    pub async fn worker(&self) -> Result<Worker, PoolError> {
        Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map(|permit| Worker { _permit: permit })
            .map_err(|_| PoolError::Panicked)
    }

    /// Starts `job` on the inference threads in `worker`'s place and returns at once; the place
    /// is freed when the job returns or panics. A panic is contained here (and logged), so a
    /// job that must report one catches it itself.
    pub fn spawn<F>(&self, worker: Worker, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let span = tracing::Span::current();
        rayon::spawn(move || {
            let _enter = span.enter();
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("inference job panicked outside its own guard");
            }
            drop(worker);
        });
    }
}

/// The place of one running job, obtained with [`InferencePool::worker`]; freed on drop.
#[derive(Debug)]
pub struct Worker {
    _permit: OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn jobs_run_and_return_their_value() {
        let pool = InferencePool::new(1, 1);
        let admission = pool.try_admit().unwrap();
        assert_eq!(pool.run(admission, || 6 * 7).await, Ok(42));
        assert_eq!(pool.admitted(), 0);
    }

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_and_frees_the_place_when_a_job_ends() {
        let pool = InferencePool::new(1, 1);
        let (release, wait) = mpsc::channel::<()>();
        let first = pool.try_admit().unwrap();
        let blocked = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(first, move || wait.recv().is_ok()).await })
        };
        let second = pool.try_admit().unwrap();
        assert_eq!(pool.admitted(), 2);
        assert_eq!(
            pool.try_admit().unwrap_err(),
            PoolError::Full {
                workers: 1,
                queue: 1
            }
        );
        drop(second);
        let third = pool.try_admit().unwrap();
        release.send(()).unwrap();
        assert_eq!(blocked.await.unwrap(), Ok(true));
        assert_eq!(pool.run(third, || "done").await, Ok("done"));
        assert_eq!(pool.admitted(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_crash() {
        let pool = InferencePool::new(1, 0);
        let admission = pool.try_admit().unwrap();
        let result: Result<(), _> = pool.run(admission, || panic!("boom")).await;
        assert_eq!(result, Err(PoolError::Panicked));
        assert!(pool.try_admit().is_ok());
    }
}
