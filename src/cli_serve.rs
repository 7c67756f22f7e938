//! `resnet18-fc serve` (also what runs with no subcommand): the FC custom-runtime server.
//!
//! Thread budget (FC allows 1024 processes + threads per instance): rayon's global pool gets
//! `workers` threads (inference jobs and candle's parallel conv/matmul kernels), tokio gets at
//! most 2 workers (its blocking pool is capped at 2 and unused), plus the main thread: at most
//! `workers + 3`. candle 0.11 would otherwise size two private pools from the host's physical
//! core count, which ignores the instance's cgroup CPU quota; see [`pin_candle_threads`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use resnet18_fc::app::{self, OssPlugin};
use resnet18_fc::config::{self, MAX_BODY_BYTES};
use resnet18_fc::engine::batch::{BATCH_MAX_LIMIT, DEFAULT_BATCH_MAX, DEFAULT_BATCH_WAIT_MS};
use resnet18_fc::engine::{
    BatchOptions, DEFAULT_QUEUE, Engine, EngineOptions, FetchingLoader, ModelLoader,
};
use resnet18_fc::fc::{DEFAULT_DRAIN_BUDGET, Lifecycle};
use resnet18_fc::http::{CorsPolicy, Server};
use resnet18_fc::malloc::{self, MallocTuning};
use resnet18_fc::preprocess::Limits;
use resnet18_fc::resnet::Precision;
use resnet18_fc::weights::FetchOptions;

/// Tokio worker threads at most: handlers only parse and wait, CPU work runs on rayon.
const MAX_ASYNC_WORKERS: usize = 2;

/// Arguments of `resnet18-fc serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to bind. FC connects to 0.0.0.0:<port>; the bootstrap passes --host 0.0.0.0.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port [default: $FC_CUSTOM_LISTEN_PORT, then $FC_SERVER_PORT, then 9000].
    #[arg(long)]
    port: Option<u16>,
    /// Weights file [default: model/resnet18.safetensors under $FC_FUNC_CODE_PATH, else the
    /// working directory].
    #[arg(long, env = "RESNET18_FC_MODEL")]
    model: Option<PathBuf>,
    /// Largest request body in bytes (FC's synchronous limit, 32 MiB, is the maximum).
    #[arg(long, env = "RESNET18_FC_MAX_BODY_BYTES", default_value_t = MAX_BODY_BYTES,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_BODY_BYTES as u64))]
    max_body_bytes: usize,
    /// Largest image (width × height), checked from the header before decoding.
    #[arg(long, env = "RESNET18_FC_MAX_PIXELS", default_value_t = Limits::default().max_pixels)]
    max_pixels: u64,
    /// Most memory one image's decode may hold, in bytes: its pixels in their stored sample
    /// type, plus a progressive JPEG's coefficients (413 above).
    #[arg(long, env = "RESNET18_FC_MAX_DECODED_BYTES", default_value_t = Limits::DEFAULT.max_decoded_bytes)]
    max_decoded_bytes: u64,
    /// Most scans a JPEG may have (413 above): each progressive scan is a pass over the image.
    #[arg(long, env = "RESNET18_FC_MAX_JPEG_SCANS", default_value_t = Limits::DEFAULT.max_jpeg_scans)]
    max_jpeg_scans: u64,
    /// Decode JPEGs at full size even when large (bit-exact with TorchVision, slower); by
    /// default a JPEG whose shorter side is ≥ 1024 is decoded at 1/2, 1/4 or 1/8 scale.
    #[arg(long, env = "RESNET18_FC_EXACT_JPEG")]
    exact_jpeg: bool,
    /// Inference threads [default: the vCPUs this instance may use, cgroup quota included].
    #[arg(long, env = "RESNET18_FC_WORKERS", value_parser = RangedU64ValueParser::<usize>::new().range(1..=256))]
    workers: Option<usize>,
    /// Requests that may wait for an inference thread; more get 503 + Retry-After.
    #[arg(long, env = "RESNET18_FC_QUEUE", default_value_t = DEFAULT_QUEUE)]
    queue: usize,
    /// Most images merged into one forward pass when requests arrive together; 1 disables
    /// micro-batching.
    #[arg(long, env = "RESNET18_FC_BATCH_MAX", default_value_t = DEFAULT_BATCH_MAX,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=BATCH_MAX_LIMIT as u64))]
    batch_max: usize,
    /// Longest time (ms) a preprocessed image waits for other requests, already being
    /// preprocessed, to join its forward pass; 0 = never wait (still batches what is queued).
    #[arg(long, env = "RESNET18_FC_BATCH_WAIT_MS", default_value_t = DEFAULT_BATCH_WAIT_MS,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    batch_wait_ms: u64,
    /// Never download the weights: a missing model file gives 503 `model_not_ready` naming the
    /// ways to get it (without this flag the server downloads TorchVision's checkpoint once, in
    /// the background, when it is missing: progress bar on a terminal, log lines otherwise).
    #[arg(long, env = "RESNET18_FC_OFFLINE")]
    offline: bool,
    /// Keep glibc's default malloc arenas. By default the server uses one arena, so the
    /// inference threads share the memory freed by forward passes instead of each keeping its
    /// own (lower peak RSS); malloc options in GLIBC_TUNABLES also turn this off.
    #[arg(long, env = "RESNET18_FC_NO_MALLOC_TUNING")]
    no_malloc_tuning: bool,
    /// Seconds a stop (SIGTERM, `GET /pre-stop`) waits for in-flight requests; then the
    /// connections still open are closed and `/pre-stop` answers `"drained": false`. Keep it
    /// below the PreStop hook's timeout (30 s in s.yaml): `/pre-stop` answers 1 s before it.
    #[arg(long, env = "RESNET18_FC_DRAIN_SECONDS",
          default_value_t = DEFAULT_DRAIN_BUDGET.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=90))]
    drain_seconds: u64,
    /// Arithmetic of the convolutions: `f32`, or `int8` (weights quantized per output channel
    /// at load, activations per tensor at run time; faster, slightly different scores).
    #[arg(long, env = "RESNET18_FC_PRECISION", default_value = "f32")]
    precision: Precision,
}

/// Runs the server until SIGTERM / SIGINT / `GET /pre-stop`; exit status 0 after a clean drain.
pub fn run(args: &ServeArgs) -> ExitCode {
    init_tracing();
    match serve(args) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    // First, before any thread allocates: process-wide malloc settings.
    let malloc = if args.no_malloc_tuning {
        MallocTuning::Skipped("--no-malloc-tuning")
    } else {
        malloc::tune_for_serving(std::env::var("GLIBC_TUNABLES").ok().as_deref())
    };
    let workers = args.workers.unwrap_or_else(config::cpu_budget);
    pin_candle_threads(workers);
    configure_rayon(workers);
    let port = config::resolve_port(args.port, &config::process_env)?;
    let address = socket_address(&args.host, port)?;
    let model = config::resolve_model_path(args.model.as_deref(), &config::process_env);
    let loader = FetchingLoader {
        path: model,
        limits: Limits {
            max_pixels: args.max_pixels,
            max_decoded_bytes: args.max_decoded_bytes,
            max_jpeg_scans: args.max_jpeg_scans,
            exact_jpeg: args.exact_jpeg,
        },
        precision: args.precision,
        // A missing model is downloaded once: a progress bar when stderr is a terminal, log
        // lines otherwise; failures answer 503 with the next steps (`weights::EnsureError`).
        fetch: FetchOptions::from_env(),
        offline: args.offline,
    };
    // OSS: `{"url"}` images and upload events (OSS_ENDPOINT, RESULT_PREFIX, … from the env).
    let oss = Arc::new(OssPlugin::from_env().map_err(|e| anyhow::anyhow!("{e}"))?);
    let cors = CorsPolicy::from_origins(config::cors_origins(&config::process_env));
    let options = EngineOptions {
        workers,
        queue: args.queue,
        batch: BatchOptions {
            max: args.batch_max,
            wait: Duration::from_millis(args.batch_wait_ms),
        },
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers,
        queue = args.queue,
        batch_max = args.batch_max,
        batch_wait_ms = args.batch_wait_ms,
        max_body_bytes = args.max_body_bytes,
        max_pixels = args.max_pixels,
        max_decoded_bytes = args.max_decoded_bytes,
        max_jpeg_scans = args.max_jpeg_scans,
        exact_jpeg = args.exact_jpeg,
        drain_seconds = args.drain_seconds,
        precision = %args.precision,
        malloc = ?malloc,
        cors = ?cors,
        model = %loader.describe(),
        "starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.min(MAX_ASYNC_WORKERS))
        .max_blocking_threads(2)
        .thread_name("async")
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        let bound = listener.local_addr()?;
        tracing::info!("listening on http://{bound}");
        let engine = Engine::new(Arc::new(loader), options);
        let server = Server::new(engine)
            .with_max_body_bytes(args.max_body_bytes)
            .with_fetcher(oss.clone())
            .with_event_handler(oss)
            .with_cors(cors);
        let lifecycle = Lifecycle::with_drain_budget(Duration::from_secs(args.drain_seconds));
        app::run(listener, server, lifecycle).await?;
        Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// candle 0.11 reads its thread counts from the environment, lazily, on first use:
/// `RAYON_NUM_THREADS` sizes gemm's work split (and candle's private rayon pool, unused here),
/// `CANDLE_NUM_THREADS` its "barrier pool" for element-wise ops (that many threads − 1, spinning
/// between ops). Without them both follow the host's physical cores. We set the first to the
/// worker count and the second to 1, which turns the barrier pool off: element-wise ops run on
/// the inference thread itself, and concurrent requests keep every worker busy instead.
/// Must run before any thread exists (see the SAFETY note); `serve` calls it first thing.
fn pin_candle_threads(workers: usize) {
    let settings = [
        ("RAYON_NUM_THREADS", workers.to_string()),
        ("CANDLE_NUM_THREADS", "1".to_string()),
    ];
    for (name, value) in settings {
        // SAFETY: `run` is called from `main` before this process spawns any thread (clap and
        // tracing-subscriber's stdout writer start none), so nothing reads the environment
        // concurrently with this write.
        unsafe { std::env::set_var(name, value) };
    }
}

/// rayon's global pool runs inference jobs and candle's parallel kernels: size it once.
fn configure_rayon(workers: usize) {
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("infer-{i}"))
        .build_global();
    if let Err(e) = built {
        tracing::warn!(error = %e, "rayon's global pool was already configured");
    }
}

fn socket_address(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve --host {host:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--host {host:?} resolves to no address"))
}

/// Logs to stdout (FC ships stdout and stderr to the logstore; the console shows the lines
/// between the invoke markers, which are on stdout), without colours; `RUST_LOG` overrides the
/// default level `info`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .try_init();
}
