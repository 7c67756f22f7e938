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
//! Memory (see [`ImageLimits`]): a forward's activations grow with its images (about 8 MB per
//! 224×224 image with the current kernels), and a preprocessed image is 0.6 MB. So the images in
//! running forwards together are at most `max(max, workers)`: a batch takes only the room that
//! running forwards leave, and with the room used up, the next batch waits for a forward to end
//! (one full batch already keeps every worker thread busy, its kernels being parallel). And at
//! most that many plus `max` images are held preprocessed (queued or in a forward): a request
//! reserves its place ([`Preparing::reserve`]) before it decodes, so a burst of requests
//! waits as encoded bodies instead of piling up decoded images.
//!
//! Failures stay with their own request: if a batched forward fails or panics, each of its
//! images is run again alone, so only the image that causes the failure gets the error. A
//! request whose client has gone is dropped from the queue before its forward, and its place
//! in the pool is given back then (not before: abandoned requests cannot pile up work); one
//! whose deadline ([`Batcher::classify_until`]) has passed is answered
//! [`BatchError::DeadlineExceeded`] then, without a forward.
//!
//! Observability: [`Batcher::stats`] counts forwards by batch size; `/healthz` shows them under
//! `batching`, which is how the tests and `tools/bench/http_bench.py` see that batching happens.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::pool::{Admission, InferencePool};
use crate::classifier::{Classifier, ClassifyError, Prediction, top_k};
use crate::preprocess::TENSOR_LEN;

/// Largest batch by default: 2, for peak RSS. Measured with the release server on the
/// 2-vCPU development machine (load average 8, so small differences are noise), 8 concurrent
/// requests, `--batch-max` 2 / 4 / 8 each against 1 in alternation: 3 % / 4.6 % / 1.5 % less
/// wall time per image, for a peak RSS of 79 / 98 / 126 MiB instead of 76 (2 workers; see
/// [`ImageLimits`]: a forward holds about 8 MB per image). FC sends at most
/// `instanceConcurrency` (4 in `s.yaml`) requests at once anyway.
pub const DEFAULT_BATCH_MAX: usize = 2;
/// Longest wait for companions by default, in milliseconds (about one preprocessing of a
/// typical photo: a request never waits longer than that for others to join).
pub const DEFAULT_BATCH_WAIT_MS: u64 = 5;
/// Largest accepted `--batch-max`: at about 8 MB of activations per image, a batch of 32
/// needs some 250 MB.
pub const BATCH_MAX_LIMIT: usize = 32;

/// How many images the [`Batcher`] lets into memory at once, from its options and the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImageLimits {
    /// Images in running forwards together, at most: `max(batch max, workers)`.
    pub in_forward: usize,
    /// Preprocessed images held (queued or in a forward), at most: `in_forward + batch max`,
    /// so that while the forwards run a full next batch can form.
    pub staged: usize,
}

impl ImageLimits {
    /// The limits for batches of up to `max` images on `workers` inference workers.
    pub fn new(max: usize, workers: usize) -> Self {
        let in_forward = max.max(workers).max(1);
        Self {
            in_forward,
            staged: in_forward + max.max(1),
        }
    }
}

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
pub trait Forward: Send + Sync + 'static {
    /// One forward pass over `count` images.
    fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError>;
}

impl Forward for Classifier {
    fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError> {
        Classifier::probabilities(self, chw, count)
    }
}

/// One image's answer from a (possibly batched) forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The `k` most probable classes, best first.
    pub classes: Vec<Prediction>,
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
    /// The request's deadline passed while its image waited for a forward; it was not run.
    #[error("the request's deadline passed before its image reached the model")]
    DeadlineExceeded,
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
    /// The memory bounds in force.
    pub limits: ImageLimits,
    /// Preprocessed images held right now (queued or in a forward), plus places reserved by
    /// requests preprocessing; never more than `limits.staged`.
    pub staged: usize,
    /// Images in running forwards right now; never more than `limits.in_forward`.
    pub in_forward: usize,
}

/// A queued image.
struct Pending {
    chw: Vec<f32>,
    top_k: usize,
    engine: Arc<dyn Forward>,
    queued_at: Instant,
    /// Past this, the image is answered [`BatchError::DeadlineExceeded`] instead of run.
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<Ranked, BatchError>>,
    /// The request's place in the pool, held until its forward has run.
    admission: Option<Admission>,
    /// Its place among the preprocessed images ([`ImageLimits::staged`]), held as long.
    staged: OwnedSemaphorePermit,
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
    limits: ImageLimits,
    /// [`ImageLimits::in_forward`] permits, one per image in a running forward.
    in_forward: Arc<Semaphore>,
    /// [`ImageLimits::staged`] permits, one per preprocessed (or preprocessing) image.
    staged: Arc<Semaphore>,
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
/// on drop. Obtain with [`Batcher::preparing`] before preprocessing, then
/// [`Preparing::reserve`] its image's place; drop when done.
#[derive(Debug)]
pub struct Preparing {
    shared: Arc<Shared>,
    staged: Option<OwnedSemaphorePermit>,
}

impl Preparing {
    /// Waits until one more preprocessed image may be held ([`ImageLimits::staged`]) and
    /// reserves that place for this request's image (given back if the request fails before
    /// queueing it). Call it before decoding, so decoded images never pile up.
    pub async fn reserve(&mut self) -> Result<(), BatchError> {
        if self.staged.is_none() {
            self.staged = Some(self.shared.stage().await?);
        }
        Ok(())
    }
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
        let limits = ImageLimits::new(options.max, pool.workers());
        let shared = Shared {
            options,
            pool,
            queue: Mutex::new(Queue::default()),
            changed: Notify::new(),
            preparing: AtomicUsize::new(0),
            sizes: Mutex::new(BTreeMap::new()),
            limits,
            in_forward: Arc::new(Semaphore::new(limits.in_forward)),
            staged: Arc::new(Semaphore::new(limits.staged)),
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
            staged: None,
        }
    }

    /// Queues one preprocessed image (`3×224×224` values) and waits for its top `k` classes.
    /// `admission` (the request's place in the pool) is released after its forward has run;
    /// `preparing` (the request's mark, if it had one) once the image is queued. The image
    /// takes the place `preparing` reserved, or waits for one ([`ImageLimits::staged`]).
    /// Must be called on a tokio runtime (the collector is a task on it).
    pub async fn classify(
        &self,
        engine: Arc<dyn Forward>,
        chw: Vec<f32>,
        top_k: usize,
        admission: Option<Admission>,
        preparing: impl Into<Option<Preparing>>,
    ) -> Result<Ranked, BatchError> {
        let request = Request {
            top_k,
            admission,
            deadline: None,
        };
        self.classify_until(engine, chw, request, preparing).await
    }

    /// [`Self::classify`] for a request with a deadline: if it passes while the image is
    /// queued, the image is answered [`BatchError::DeadlineExceeded`] without being run.
    pub async fn classify_until(
        &self,
        engine: Arc<dyn Forward>,
        chw: Vec<f32>,
        request: Request,
        preparing: impl Into<Option<Preparing>>,
    ) -> Result<Ranked, BatchError> {
        let Request {
            top_k,
            admission,
            deadline,
        } = request;
        let mut preparing: Option<Preparing> = preparing.into();
        let staged = match preparing.as_mut().and_then(|p| p.staged.take()) {
            Some(place) => place,
            None => self.shared.stage().await?,
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            chw,
            top_k,
            engine,
            queued_at: Instant::now(),
            deadline,
            reply,
            admission,
            staged,
        };
        let start_collector = self.shared.enqueue(pending);
        drop(preparing);
        if start_collector {
            tokio::spawn(collect(Arc::clone(&self.shared)));
        }
        answer.await.unwrap_or(Err(BatchError::Stopped))
    }

    /// Forward passes so far by batch size, and the queue right now.
    pub fn stats(&self) -> BatchStats {
        let sizes = lock(&self.shared.sizes).clone();
        let shared = &self.shared;
        let limits = shared.limits;
        BatchStats {
            max: self.shared.options.max,
            wait_ms: u64::try_from(self.shared.options.wait.as_millis()).unwrap_or(u64::MAX),
            forwards: sizes.values().sum(),
            images: sizes.iter().map(|(size, n)| *size as u64 * n).sum(),
            sizes,
            queued: lock(&self.shared.queue).items.len(),
            preparing: self.shared.preparing.load(Ordering::SeqCst),
            limits,
            staged: limits.staged - shared.staged.available_permits(),
            in_forward: limits.in_forward - shared.in_forward.available_permits(),
        }
    }
}

/// What [`Batcher::classify_until`] needs to know about the request besides its image.
#[derive(Debug)]
pub struct Request {
    /// Classes to return.
    pub top_k: usize,
    /// The request's place in the pool, released after its forward.
    pub admission: Option<Admission>,
    /// When the request's answer stops being of use (its function timeout).
    pub deadline: Option<Instant>,
}

/// Locks `mutex`, recovering the data if a panic poisoned it (every critical section here
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Waits for a place among the preprocessed images ([`ImageLimits::staged`]).
    async fn stage(&self) -> Result<OwnedSemaphorePermit, BatchError> {
        Arc::clone(&self.staged)
            .acquire_owned()
            .await
            .map_err(|_| BatchError::Stopped)
    }

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

    /// Drops every queued image unanswered (their receivers see `Stopped`) and marks the
    /// collector stopped: the pool or a limit is closed, so nothing can run any more.
    fn stop(&self) {
        lock(&self.queue).items.clear();
        let _ = self.finished();
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

    /// Up to `limit` (and `max`) queued images for the same engine as the oldest, oldest
    /// first. Images whose requester has gone are dropped (freeing their place in the pool);
    /// those past their deadline are returned apart, to be answered without a forward.
    fn take_batch(&self, limit: usize) -> (Vec<Pending>, Vec<Pending>) {
        let limit = limit.min(self.options.max);
        let now = Instant::now();
        let mut queue = lock(&self.queue);
        let mut batch: Vec<Pending> = Vec::new();
        let mut expired = Vec::new();
        let mut others = VecDeque::new();
        while let Some(pending) = queue.items.pop_front() {
            if pending.reply.is_closed() {
                continue;
            }
            if pending.deadline.is_some_and(|deadline| now >= deadline) {
                expired.push(pending);
                continue;
            }
            let same = batch
                .first()
                .is_none_or(|first| same_engine(&first.engine, &pending.engine));
            if same && batch.len() < limit {
                batch.push(pending);
            } else {
                others.push_back(pending);
            }
        }
        queue.items = others;
        (batch, expired)
    }

    fn record(&self, size: usize) {
        *lock(&self.sizes).entry(size).or_insert(0) += 1;
    }
}

fn same_engine(a: &Arc<dyn Forward>, b: &Arc<dyn Forward>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The collector: forms batches and starts their forwards until the queue is empty. Room in
/// [`ImageLimits::in_forward`] comes first (a worker is not held while waiting for it, so
/// preprocessing goes on meanwhile), then a worker; the batch takes what room there is.
async fn collect(shared: Arc<Shared>) {
    loop {
        shared.wait_for_companions().await;
        let room = Arc::clone(&shared.in_forward).acquire_owned().await;
        let (Ok(mut room), Ok(worker)) = (room, shared.pool.worker().await) else {
            // The pool is closed: answer nobody (their receivers see `Stopped`).
            shared.stop();
            return;
        };
        let (batch, expired) = shared.take_batch(1 + shared.in_forward.available_permits());
        for pending in expired {
            answer(pending, Err(BatchError::DeadlineExceeded));
        }
        if batch.len() > 1 {
            // Only this task takes `in_forward` permits, so the room seen above is still there.
            let more = Arc::clone(&shared.in_forward).acquire_many_owned(batch_permits(&batch));
            let Ok(more) = more.await else {
                shared.stop();
                return;
            };
            room.merge(more);
        }
        if !batch.is_empty() {
            shared.record(batch.len());
            shared.pool.spawn(worker, move || {
                let answers = run_batch(batch);
                // The forward's memory is freed: make room before anyone hears back.
                drop(room);
                for (pending, result) in answers {
                    answer(pending, result);
                }
            });
        }
        if shared.finished() {
            return;
        }
    }
}

/// Permits beyond the first that `batch` needs (one per image).
fn batch_permits(batch: &[Pending]) -> u32 {
    u32::try_from(batch.len().saturating_sub(1)).unwrap_or(u32::MAX)
}

/// One image's answer, ready to send.
type Answer = (Pending, Result<Ranked, BatchError>);

/// Runs one forward over `batch` and returns each image's answer; on failure, each image is
/// run again alone.
fn run_batch(mut batch: Vec<Pending>) -> Vec<Answer> {
    let started = Instant::now();
    let size = batch.len();
    let rows = forward(&mut batch).and_then(|rows| match rows.len() {
        n if n == size => Ok(rows),
        rows => Err(BatchError::MissingRow { rows, images: size }),
    });
    let inference = started.elapsed();
    match rows {
        Ok(rows) => batch
            .into_iter()
            .zip(rows)
            .map(|(pending, row)| {
                let ranked = Ranked {
                    classes: top_k(&row, pending.top_k),
                    inference,
                    batch_size: size,
                    waited: started.saturating_duration_since(pending.queued_at),
                };
                (pending, Ok(ranked))
            })
            .collect(),
        Err(error) if size > 1 => {
            tracing::warn!(size, %error, "batched forward failed; running its images one by one");
            batch
                .into_iter()
                .flat_map(|pending| run_batch(vec![pending]))
                .collect()
        }
        // One image (a failed forward has at least one): its error is its answer.
        Err(error) => batch
            .into_iter()
            .next()
            .map(|pending| vec![(pending, Err(error))])
            .unwrap_or_default(),
    }
}

/// Frees the request's places (in the pool and among the staged images), then answers it (so
/// a client that got its answer never sees them still taken). The receiver is gone if the
/// client disconnected.
fn answer(pending: Pending, result: Result<Ranked, BatchError>) {
    let Pending {
        reply,
        admission,
        staged,
        ..
    } = pending;
    drop((admission, staged));
    let _ = reply.send(result);
}

/// The batch's probabilities, with a panic turned into [`BatchError::Panicked`]. The images of
/// a batch of several are moved into one buffer for the forward (each freed as it is copied,
/// so no image is held twice), and moved back if the forward fails (for the retries).
fn forward(batch: &mut [Pending]) -> Result<Vec<Vec<f32>>, BatchError> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let engine = Arc::clone(&first.engine);
    if batch.len() == 1 {
        return probabilities(engine.as_ref(), &first.chw, 1);
    }
    let lengths: Vec<usize> = batch.iter().map(|p| p.chw.len()).collect();
    let mut joined = Vec::with_capacity(batch.len() * TENSOR_LEN);
    for pending in batch.iter_mut() {
        joined.extend_from_slice(&std::mem::take(&mut pending.chw));
    }
    let rows = probabilities(engine.as_ref(), &joined, batch.len());
    if rows.is_err() {
        let mut rest = joined.as_slice();
        for (pending, length) in batch.iter_mut().zip(lengths) {
            let (image, tail) = rest.split_at(length);
            pending.chw = image.to_vec();
            rest = tail;
        }
    }
    rows
}

/// One forward of `count` images through `engine`, a panic contained.
fn probabilities(
    engine: &dyn Forward,
    chw: &[f32],
    count: usize,
) -> Result<Vec<Vec<f32>>, BatchError> {
    match catch_unwind(AssertUnwindSafe(|| engine.probabilities(chw, count))) {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(BatchError::Model(e)),
        Err(_) => {
            tracing::error!(size = count, "forward pass panicked");
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

    impl Forward for Fake {
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

    /// Queues `firsts` while the pool's only worker is held, then releases it: all of them (up
    /// to the staged limit) are queued before the collector can take a batch.
    async fn burst(
        batcher: &Batcher,
        pool: &InferencePool,
        firsts: &[f32],
    ) -> Vec<Result<Ranked, BatchError>> {
        let held = pool.worker().await.unwrap();
        let engine: Arc<dyn Forward> = Arc::new(Fake);
        let tasks: Vec<_> = firsts
            .iter()
            .map(|&first| {
                let (batcher, engine) = (batcher.clone(), Arc::clone(&engine));
                tokio::spawn(
                    async move { batcher.classify(engine, image(first), 1, None, None).await },
                )
            })
            .collect();
        // Those beyond the staged limit wait for room, and queue as forwards end.
        let queueable = firsts.len().min(batcher.stats().limits.staged);
        while batcher.stats().queued < queueable {
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
        let engine: Arc<dyn Forward> = Arc::new(Fake);
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
        let engine: Arc<dyn Forward> = Arc::new(Fake);
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

    #[tokio::test]
    async fn an_image_past_its_deadline_is_answered_without_a_forward() {
        let (pool, batcher) = setup(1, 1, 8, Duration::ZERO);
        let held = pool.worker().await.unwrap();
        let engine: Arc<dyn Forward> = Arc::new(Fake);
        let late = {
            let (batcher, engine) = (batcher.clone(), Arc::clone(&engine));
            tokio::spawn(async move {
                let request = Request {
                    top_k: 1,
                    admission: None,
                    deadline: Some(Instant::now() + Duration::from_millis(50)),
                };
                batcher
                    .classify_until(engine, image(1.0), request, None)
                    .await
            })
        };
        while batcher.stats().queued < 1 {
            tokio::task::yield_now().await;
        }
        // The deadline passes while the only worker is busy.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let result = late.await.unwrap();
        assert!(
            matches!(result, Err(BatchError::DeadlineExceeded)),
            "{result:?}"
        );
        assert_eq!(batcher.stats().forwards, 0, "the late image was run");
        let next = batcher.classify(engine, image(2.0), 1, None, None).await;
        assert_eq!(top(&next), Some(2));
    }

    #[test]
    fn limits_allow_one_full_batch_in_forwards_and_one_more_forming() {
        assert_eq!(
            ImageLimits::new(8, 2),
            ImageLimits {
                in_forward: 8,
                staged: 16
            }
        );
        // Without batching, every worker still runs its own image.
        assert_eq!(
            ImageLimits::new(1, 2),
            ImageLimits {
                in_forward: 2,
                staged: 3
            }
        );
    }

    /// Blocks every forward until opened; records the images in running forwards.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        running: AtomicUsize,
        most_running: AtomicUsize,
    }

    impl Gate {
        fn open(&self) {
            *lock(&self.open) = true;
            self.opened.notify_all();
        }
    }

    impl Forward for Gate {
        fn probabilities(&self, chw: &[f32], count: usize) -> Result<Vec<Vec<f32>>, ClassifyError> {
            let now = self.running.fetch_add(count, Ordering::SeqCst) + count;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            let mut open = lock(&self.open);
            while !*open {
                open = self
                    .opened
                    .wait(open)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            drop(open);
            self.running.fetch_sub(count, Ordering::SeqCst);
            Fake.probabilities(chw, count)
        }
    }

    /// Spawns one `classify` per first value, each reserving its place first.
    fn spawn_reserving(
        batcher: &Batcher,
        engine: &Arc<dyn Forward>,
        firsts: &[f32],
    ) -> Vec<tokio::task::JoinHandle<Result<Ranked, BatchError>>> {
        firsts
            .iter()
            .map(|&first| {
                let (batcher, engine) = (batcher.clone(), Arc::clone(engine));
                let mut preparing = batcher.preparing();
                tokio::spawn(async move {
                    preparing.reserve().await?;
                    batcher
                        .classify(engine, image(first), 1, None, preparing)
                        .await
                })
            })
            .collect()
    }

    async fn tops(tasks: Vec<tokio::task::JoinHandle<Result<Ranked, BatchError>>>) -> Vec<usize> {
        let mut tops = Vec::new();
        for task in tasks {
            tops.extend(top(&task.await.unwrap()));
        }
        tops
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_batch_waits_while_the_forwards_hold_the_image_limit() {
        let (pool, batcher) = setup(2, 0, 4, Duration::ZERO);
        let gate = Arc::new(Gate::default());
        let engine: Arc<dyn Forward> = gate.clone();
        let held = (pool.worker().await.unwrap(), pool.worker().await.unwrap());
        let tasks = spawn_reserving(&batcher, &engine, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        while batcher.stats().queued < 6 {
            tokio::task::yield_now().await;
        }
        drop(held);
        while gate.running.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        // A worker is free and two images are queued, but the forward holds all the room.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = batcher.stats();
        assert_eq!((stats.in_forward, stats.queued), (4, 2));
        assert_eq!(gate.running.load(Ordering::SeqCst), 4);
        gate.open();
        assert_eq!(tops(tasks).await, [1, 2, 3, 4, 5, 6]);
        assert_eq!(gate.most_running.load(Ordering::SeqCst), 4);
        let stats = batcher.stats();
        assert_eq!(stats.sizes, BTreeMap::from([(2, 1), (4, 1)]));
        assert_eq!((stats.in_forward, stats.staged), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_beyond_the_staged_limit_waits_before_preprocessing() {
        let (pool, batcher) = setup(1, 0, 1, Duration::ZERO);
        assert_eq!(batcher.stats().limits.staged, 2);
        let engine: Arc<dyn Forward> = Arc::new(Fake);
        let held = pool.worker().await.unwrap();
        let tasks = spawn_reserving(&batcher, &engine, &[5.0, 6.0, 7.0, 8.0, 9.0]);
        while batcher.stats().queued < 2 {
            tokio::task::yield_now().await;
        }
        // The other three keep waiting for room (still counted as preparing).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = batcher.stats();
        assert_eq!((stats.queued, stats.staged, stats.preparing), (2, 2, 3));
        drop(held);
        assert_eq!(tops(tasks).await, [5, 6, 7, 8, 9]);
        let stats = batcher.stats();
        assert_eq!((stats.staged, stats.preparing, stats.images), (0, 0, 5));
    }
}
