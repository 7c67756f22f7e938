//! Micro-batching: images of concurrent requests, already decoded and preprocessed, are run
//! through the model in one forward pass of up to [`BatchOptions::max`] images, and each
//! request gets its own row of the result back.
//!
//! Policy (one [`Batcher`] per server, in front of the [`InferencePool`]):
//! - A request preprocesses its image on the pool first (a bad image fails there, alone, and
//!   never joins a batch), then queues the tensor data here.
//! - A collector (a tokio task, started when the queue becomes non-empty and gone when it is
//!   empty again: no thread of its own) takes the oldest queued image and, if other admitted
//!   requests are still being preprocessed, waits for them to join: until `max` images are
//!   queued, nobody is preprocessing any more, or [`BatchOptions::wait`] has passed since the
//!   oldest queued image arrived. It never waits when no other request is in flight, so a lone
//!   request pays no latency for batching. `wait` = 0 turns waiting off.
//! - It then waits for a free inference worker (in arrival order, behind preprocessing jobs
//!   queued before it: whatever arrives meanwhile joins too), takes up to `max` queued images
//!   and starts their forward on that worker. While that forward runs, the next batch forms
//!   and may run on another worker: at most `workers` jobs run at once, as before.
//! - `max` = 1 disables batching: every forward has one image.
//!
//! Failures stay with their own request: if a batched forward fails or panics, each of its
//! images is run again alone, so only the image that causes the failure gets the error. A
//! request whose client has gone is dropped from the queue before its forward, and its place
//! in the pool is given back then (not before: abandoned requests cannot pile up work).
//!
//! Observability: [`Batcher::stats`] counts forwards by batch size; `/healthz` shows them under
//! `batching`, which is how the tests and `tools/bench/http_bench.py` see that batching happens.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use super::pool::{Admission, InferencePool};
use crate::classifier::{Class, Classifier, ClassifyError, top_k};
use crate::preprocess::TENSOR_LEN;

/// Largest batch by default. Measured with stock candle kernels on the shared 2-vCPU
/// development machine under heavy load (load average 10–14): one forward of 8 images cost
/// 0.98× the time of 8 forwards of one (`examples/batch_forward.rs`), and `tools/bench/http_bench.py`
/// saw 1.18× the throughput at 8 concurrent requests with batching on, for a peak RSS of
/// 307 MB instead of 148 MB. Memory grows by roughly 20 MB per image of the largest batch;
/// lower `--batch-max` where RSS matters more than throughput.
pub const DEFAULT_BATCH_MAX: usize = 8;
/// Longest wait for companions by default, in milliseconds (about one preprocessing of a
/// typical photo: a request never waits longer than that for others to join).
pub const DEFAULT_BATCH_WAIT_MS: u64 = 5;
/// Largest accepted `--batch-max`: at about 20 MB of activations per image (stock candle),
/// a batch of 32 needs some 650 MB.
pub const BATCH_MAX_LIMIT: usize = 32;

/// Tunables of the [`Batcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Most images in one forward pass (≥ 1; 1 = no batching).
    pub max: usize,
    /// Longest time the oldest queued image waits for others still being preprocessed.
    pub wait: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max: DEFAULT_BATCH_MAX,
            wait: Duration::from_millis(DEFAULT_BATCH_WAIT_MS),
        }
    }
}

/// What runs a batched forward: softmax probabilities of `count` preprocessed images laid end
/// to end in `chw`, one row per image. [`Classifier`] is the real one; tests use fakes.
pub trait Engine: Send + Sync + 'static {
    /// One forward pass over `count` images.
    fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError>;
}

impl Engine for Classifier {
    fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError> {
        Classifier::probabilities(self, chw, count)
    }
}

/// One image's answer from a (possibly batched) forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The `k` most probable classes, best first.
    pub classes: Vec<Class>,
    /// Duration of the forward pass this image was part of.
    pub inference: Duration,
    /// Number of images in that forward pass.
    pub batch_size: usize,
    /// Time from queueing to the start of the forward.
    pub waited: Duration,
}

/// Why a queued image got no answer.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The model failed on this image (also when run alone).
    #[error(transparent)]
    Model(ClassifyError),
    /// The forward of this image panicked (also when run alone); the panic was contained.
    #[error("the inference job failed unexpectedly")]
    Panicked,
    /// The batcher went away before answering (the runtime is shutting down).
    #[error("the server stopped before the image was classified")]
    Stopped,
    /// The result had no row for this image (an engine returned too few rows).
    #[error("the model returned {rows} rows for {images} images")]
    MissingRow {
        /// Rows returned.
        rows: usize,
        /// Images sent.
        images: usize,
    },
}

/// Counts of forward passes by batch size since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    /// Largest batch allowed.
    pub max: usize,
    /// Longest wait for companions, in milliseconds.
    pub wait_ms: u64,
    /// Forward passes run.
    pub forwards: u64,
    /// Images classified by them.
    pub images: u64,
    /// Forward passes per batch size (`{"1": 3, "8": 2}`).
    pub sizes: BTreeMap<usize, u64>,
    /// Images queued right now, waiting for a forward.
    pub queued: usize,
    /// Admitted requests preprocessing right now (or waiting to).
    pub preparing: usize,
}

/// A queued image.
struct Pending {
    chw: Vec<f32>,
    top_k: usize,
    engine: Arc<dyn Engine>,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Ranked, BatchError>>,
    /// The request's place in the pool, held until its forward has run.
    admission: Option<Admission>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    collecting: bool,
}

struct Shared {
    options: BatchOptions,
    pool: InferencePool,
    queue: Mutex<Queue>,
    /// Signalled when an image is queued or a preprocessing ends.
    changed: Notify,
    preparing: AtomicUsize,
    sizes: Mutex<BTreeMap<usize, u64>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("batcher")
    }
}

/// The micro-batching queue in front of an [`InferencePool`]. Cheap to clone; clones share
/// the queue.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

/// Marks one admitted request as preprocessing (so a forming batch waits for it); unmarks it
/// on drop. Obtain with [`Batcher::preparing`] before preprocessing, drop when done.
#[derive(Debug)]
pub struct Preparing {
    shared: Arc<Shared>,
}

impl Drop for Preparing {
    fn drop(&mut self) {
        self.shared.preparing.fetch_sub(1, Ordering::SeqCst);
        self.shared.changed.notify_one();
    }
}

impl Batcher {
    /// A batcher running forwards on `pool`; `options.max` is clamped to `1..=`[`BATCH_MAX_LIMIT`].
    pub fn new(pool: InferencePool, options: BatchOptions) -> Self {
        let options = BatchOptions {
            max: options.max.clamp(1, BATCH_MAX_LIMIT),
            ..options
        };
        let shared = Shared {
            options,
            pool,
            queue: Mutex::new(Queue::default()),
            changed: Notify::new(),
            preparing: AtomicUsize::new(0),
            sizes: Mutex::new(BTreeMap::new()),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The options in force.
    pub fn options(&self) -> BatchOptions {
        self.shared.options
    }

    /// Marks a request as about to queue an image; hold the guard while it preprocesses.
    pub fn preparing(&self) -> Preparing {
        self.shared.preparing.fetch_add(1, Ordering::SeqCst);
        Preparing {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Queues one preprocessed image (`3×224×224` values) and waits for its top `k` classes.
    /// `admission` (the request's place in the pool) is released after its forward has run;
    /// `preparing` (the request's mark, if it had one) once the image is queued.
    /// Must be called on a tokio runtime (the collector is a task on it).
    pub async fn classify(
        &self,
        engine: Arc<dyn Engine>,
        chw: Vec<f32>,
        top_k: usize,
        admission: Option<Admission>,
        preparing: impl Into<Option<Preparing>>,
    ) -> Result<Ranked, BatchError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            chw,
            top_k,
            engine,
            queued_at: Instant::now(),
            reply,
            admission,
        };
        let start_collector = self.shared.enqueue(pending);
        drop(preparing.into());
        if start_collector {
            tokio::spawn(collect(Arc::clone(&self.shared)));
        }
        answer.await.unwrap_or(Err(BatchError::Stopped))
    }

    /// Forward passes so far by batch size, and the queue right now.
    pub fn stats(&self) -> BatchStats {
        let sizes = lock(&self.shared.sizes).clone();
        BatchStats {
            max: self.shared.options.max,
            wait_ms: u64::try_from(self.shared.options.wait.as_millis()).unwrap_or(u64::MAX),
            forwards: sizes.values().sum(),
            images: sizes.iter().map(|(size, n)| *size as u64 * n).sum(),
            sizes,
            queued: lock(&self.shared.queue).items.len(),
            preparing: self.shared.preparing.load(Ordering::SeqCst),
        }
    }
}

/// Locks `mutex`, recovering the data if a panic poisoned it (every critical section here
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Queues `pending`; true when no collector runs and the caller must start one.
    fn enqueue(&self, pending: Pending) -> bool {
        let start = {
            let mut queue = lock(&self.queue);
            queue.items.push_back(pending);
            !std::mem::replace(&mut queue.collecting, true)
        };
        self.changed.notify_one();
        start
    }

    /// True when the collector should stop: nothing queued (it is marked stopped then).
    fn finished(&self) -> bool {
        let mut queue = lock(&self.queue);
        if queue.items.is_empty() {
            queue.collecting = false;
            return true;
        }
        false
    }

    /// Waits while the oldest queued image may still get companions (see the module doc).
    async fn wait_for_companions(&self) {
        if self.options.wait.is_zero() || self.options.max == 1 {
            return;
        }
        let Some(oldest) = lock(&self.queue).items.front().map(|p| p.queued_at) else {
            return;
        };
        let deadline = tokio::time::Instant::from_std(oldest + self.options.wait);
        loop {
            let queued = lock(&self.queue).items.len();
            if queued >= self.options.max || self.preparing.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                () = self.changed.notified() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Up to `max` queued images for the same engine as the oldest, oldest first. Images whose
    /// requester has gone are dropped (freeing their place in the pool).
    fn take_batch(&self) -> Vec<Pending> {
        let mut queue = lock(&self.queue);
        let mut batch: Vec<Pending> = Vec::new();
        let mut others = VecDeque::new();
        while let Some(pending) = queue.items.pop_front() {
            if pending.reply.is_closed() {
                continue;
            }
            let same = batch
                .first()
                .is_none_or(|first| same_engine(&first.engine, &pending.engine));
            if same && batch.len() < self.options.max {
                batch.push(pending);
            } else {
                others.push_back(pending);
            }
        }
        queue.items = others;
        batch
    }

    fn record(&self, size: usize) {
        *lock(&self.sizes).entry(size).or_insert(0) += 1;
    }
}

fn same_engine(a: &Arc<dyn Engine>, b: &Arc<dyn Engine>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The collector: forms batches and starts their forwards until the queue is empty.
async fn collect(shared: Arc<Shared>) {
    loop {
        shared.wait_for_companions().await;
        let worker = match shared.pool.worker().await {
            Ok(worker) => worker,
            Err(_) => {
                // The pool is closed: answer nobody (their receivers see `Stopped`).
                lock(&shared.queue).items.clear();
                let _ = shared.finished();
                return;
            }
        };
        let batch = shared.take_batch();
        if !batch.is_empty() {
            shared.record(batch.len());
            shared.pool.spawn(worker, move || run_batch(batch));
        }
        if shared.finished() {
            return;
        }
    }
}

/// Runs one forward over `batch` and answers each image; on failure, each image alone.
fn run_batch(batch: Vec<Pending>) {
    let started = Instant::now();
    let size = batch.len();
    let rows = forward(&batch).and_then(|rows| match rows.len() {
        n if n == size => Ok(rows),
        rows => Err(BatchError::MissingRow { rows, images: size }),
    });
    let inference = started.elapsed();
    match rows {
        Ok(rows) => {
            for (pending, row) in batch.into_iter().zip(rows) {
                let ranked = Ranked {
                    classes: top_k(&row, pending.top_k),
                    inference,
                    batch_size: size,
                    waited: started.saturating_duration_since(pending.queued_at),
                };
                answer(pending, Ok(ranked));
            }
        }
        Err(error) if size > 1 => {
            tracing::warn!(size, %error, "batched forward failed; running its images one by one");
            for pending in batch {
                run_batch(vec![pending]);
            }
        }
        Err(error) => {
            if let Some(pending) = batch.into_iter().next() {
                answer(pending, Err(error));
            }
        }
    }
}

/// Frees the request's place in the pool, then answers it (so a client that got its answer
/// never sees its place still taken). The receiver is gone if the client disconnected.
fn answer(pending: Pending, result: Result<Ranked, BatchError>) {
    let Pending {
        reply, admission, ..
    } = pending;
    drop(admission);
    let _ = reply.send(result);
}

/// The batch's probabilities, with a panic turned into [`BatchError::Panicked`].
fn forward(batch: &[Pending]) -> Result<Vec<Vec<f32>>, BatchError> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let joined;
    let chw = if batch.len() == 1 {
        &first.chw
    } else {
        joined = batch.iter().fold(
            Vec::with_capacity(batch.len() * TENSOR_LEN),
            |mut all, p| {
                all.extend_from_slice(&p.chw);
                all
            },
        );
        &joined
    };
    let engine = &first.engine;
    match catch_unwind(AssertUnwindSafe(|| engine.probabilities(chw, batch.len()))) {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(BatchError::Model(e)),
        Err(_) => {
            tracing::error!(size = batch.len(), "forward pass panicked");
            Err(BatchError::Panicked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resnet::ModelError;

    /// Answers each image with class `chw[0]` (probability 1); fails on a negative first value:
    /// `-1` returns an error, `-2` panics (for the whole forward it is part of).
    struct Fake;

    impl Engine for Fake {
        fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError> {
            let stride = chw.len() / count;
            chw.chunks(stride)
                .map(|image| match image[0] {
                    v if v < -1.5 => panic!("fake panic"),
                    v if v < 0.0 => Err(ClassifyError::Model(ModelError::Candle(
                        candle_core::Error::Msg("fake failure".into()),
                    ))),
                    v => {
                        let mut row = vec![0.0; 1000];
                        row[v as usize] = 1.0;
                        Ok(row)
                    }
                })
                .collect()
        }
    }

    fn image(first: f32) -> Vec<f32> {
        vec![first, 0.5, 0.25]
    }

    /// Queues `firsts` while the pool's only worker is held, then releases it: all of them
    /// are queued before the collector can take a batch.
    async fn burst(
        batcher: &Batcher,
        pool: &InferencePool,
        firsts: &[f32],
    ) -> Vec<Result<Ranked, BatchError>> {
        let held = pool.worker().await.unwrap();
        let engine: Arc<dyn Engine> = Arc::new(Fake);
        let tasks: Vec<_> = firsts
            .iter()
            .map(|&first| {
                let (batcher, engine) = (batcher.clone(), Arc::clone(&engine));
                tokio::spawn(
                    async move { batcher.classify(engine, image(first), 1, None, None).await },
                )
            })
            .collect();
        while batcher.stats().queued < firsts.len() {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    fn setup(workers: usize, queue: usize, max: usize, wait: Duration) -> (InferencePool, Batcher) {
        let pool = InferencePool::new(workers, queue);
        let batcher = Batcher::new(pool.clone(), BatchOptions { max, wait });
        (pool, batcher)
    }

    fn top(result: &Result<Ranked, BatchError>) -> Option<usize> {
        result.as_ref().ok().map(|r| r.classes[0].index)
    }

    #[tokio::test]
    async fn queued_images_share_one_forward_and_each_gets_its_own_row() {
        let (pool, batcher) = setup(1, 0, 8, Duration::ZERO);
        let results = burst(&batcher, &pool, &[3.0, 1.0, 4.0, 15.0, 9.0]).await;
        let tops: Vec<_> = results.iter().map(top).collect();
        assert_eq!(tops, [Some(3), Some(1), Some(4), Some(15), Some(9)]);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(|r| r.batch_size == 5))
        );
        let stats = batcher.stats();
        assert_eq!(stats.sizes, BTreeMap::from([(5, 1)]));
        assert_eq!((stats.forwards, stats.images, stats.queued), (1, 5, 0));
    }

    #[tokio::test]
    async fn batches_are_cut_at_max_in_arrival_order() {
        let (pool, batcher) = setup(1, 0, 2, Duration::ZERO);
        let results = burst(&batcher, &pool, &[7.0, 8.0, 9.0, 10.0, 11.0]).await;
        let tops: Vec<_> = results.iter().map(top).collect();
        assert_eq!(tops, [Some(7), Some(8), Some(9), Some(10), Some(11)]);
        assert_eq!(batcher.stats().sizes, BTreeMap::from([(1, 1), (2, 2)]));
    }

    #[tokio::test]
    async fn max_one_runs_every_image_alone() {
        let (pool, batcher) = setup(1, 0, 1, Duration::from_secs(3600));
        let results = burst(&batcher, &pool, &[2.0, 5.0, 6.0]).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(|r| r.batch_size == 1))
        );
        assert_eq!(batcher.stats().sizes, BTreeMap::from([(1, 3)]));
    }

    #[tokio::test]
    async fn a_failing_or_panicking_image_fails_alone_and_the_rest_of_its_batch_is_answered() {
        let (pool, batcher) = setup(1, 0, 8, Duration::ZERO);
        let results = burst(&batcher, &pool, &[1.0, -1.0, 2.0, -2.0, 3.0]).await;
        assert_eq!(top(&results[0]), Some(1));
        assert!(
            matches!(results[1], Err(BatchError::Model(ClassifyError::Model(_)))),
            "{:?}",
            results[1]
        );
        assert_eq!(top(&results[2]), Some(2));
        assert!(
            matches!(results[3], Err(BatchError::Panicked)),
            "{:?}",
            results[3]
        );
        assert_eq!(top(&results[4]), Some(3));
        // The retries ran alone.
        assert!(results.iter().flatten().all(|r| r.batch_size == 1));
        // The pool still works.
        let after = burst(&batcher, &pool, &[4.0]).await;
        assert_eq!(top(&after[0]), Some(4));
    }

    #[tokio::test]
    async fn a_queued_image_waits_for_one_being_preprocessed_but_a_lone_one_does_not() {
        let (_pool, batcher) = setup(2, 0, 8, Duration::from_secs(3600));
        let engine: Arc<dyn Engine> = Arc::new(Fake);
        // Alone: answered although the wait is an hour.
        let lone = batcher
            .classify(Arc::clone(&engine), image(5.0), 1, None, None)
            .await;
        assert_eq!(top(&lone), Some(5));
        // With another request preprocessing, the first waits for it.
        let other = batcher.preparing();
        let first = {
            let (batcher, engine) = (batcher.clone(), Arc::clone(&engine));
            tokio::spawn(async move { batcher.classify(engine, image(6.0), 1, None, None).await })
        };
        while batcher.stats().queued < 1 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !first.is_finished(),
            "did not wait for the request being preprocessed"
        );
        let second = batcher.classify(engine, image(7.0), 1, None, other).await;
        let first = first.await.unwrap();
        assert_eq!((top(&first), top(&second)), (Some(6), Some(7)));
        assert_eq!(first.unwrap().batch_size, 2);
        assert_eq!(batcher.stats().sizes, BTreeMap::from([(1, 1), (2, 1)]));
    }

    #[tokio::test]
    async fn a_request_that_gave_up_is_dropped_before_its_forward_and_frees_its_place() {
        let (pool, batcher) = setup(1, 1, 8, Duration::ZERO);
        let held = pool.worker().await.unwrap();
        let admission = pool.try_admit().unwrap();
        let engine: Arc<dyn Engine> = Arc::new(Fake);
        let abandoned = {
            let (batcher, engine) = (batcher.clone(), Arc::clone(&engine));
            tokio::spawn(async move {
                batcher
                    .classify(engine, image(1.0), 1, Some(admission), None)
                    .await
            })
        };
        while batcher.stats().queued < 1 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(
            pool.admitted(),
            1,
            "the place is kept until the forward would have run"
        );
        drop(held);
        let next = batcher.classify(engine, image(2.0), 1, None, None).await;
        assert_eq!(top(&next), Some(2));
        assert_eq!(pool.admitted(), 0);
        assert_eq!(
            batcher.stats().sizes,
            BTreeMap::from([(1, 1)]),
            "the abandoned image was not run"
        );
    }
}
