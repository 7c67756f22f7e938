//! Peak memory while serving, micro-batching on (goal: peak RSS while serving ≤ 100 MB).
//!
//! The server binary runs with its default flags (batching on, glibc malloc tuned, 2 workers
//! as on the 2-vCPU instance) on the synthetic weights, which have the real checkpoint's
//! shapes and size (46.8 MB). Waves of concurrent requests, more than the staged-image limit,
//! then: every answer is 200, forwards of several images did run, and the kernel's record of
//! the process's peak resident memory (`VmHWM` in `/proc/<pid>/status`) stays under the bound.
//!
//! The bound is that goal, in bytes (10^8, stricter than 100 MiB). Measured with the
//! release build (`tools/bench/http_bench.py`): about 55 MB resident once loaded and trimmed,
//! plus about 8 MB per image in a running forward and 0.6 MB per preprocessed image, plus what
//! the malloc arena keeps between forwards: 79 MiB peak with the defaults (batches of at most
//! 2, 2 workers). Before the image limits and the single arena, batches of 8 on both workers
//! reached 236 MiB; `--batch-max 8` now reaches about 126 MiB, over the bound.

use crate::support::*;

/// Peak resident memory allowed, in bytes (the goal above).
const PEAK_BOUND: u64 = 100 * 1000 * 1000;
/// Concurrent requests per wave: more than the staged limit (4 with the defaults).
const CONCURRENCY: usize = 24;
/// Waves sent one after another.
const WAVES: usize = 3;

/// A `/proc/<pid>/status` field in bytes (the kernel gives kB).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    kb * 1024
}

/// Sends `CONCURRENCY` requests of `image` at once; returns their statuses.
async fn wave(server: &Spawned, image: &[u8]) -> Vec<u16> {
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let request = client()
                .post(server.url("/classify"))
                .header("content-type", "image/jpeg")
                .body(image.to_vec());
            tokio::spawn(async move { request.send().await.expect("send").status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    statuses
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_stays_under_100_mb_through_bursts_with_batching_on() {
    let server = Spawned::start(&["--workers", "2"], &[]);
    server.wait_ready();
    let image = jpeg(500, 375);
    for _ in 0..WAVES {
        let statuses = wave(&server, &image).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    let health = server.healthz().await;
    let batching = &health["batching"];
    let images = batching["images"].as_u64().expect("images");
    let forwards = batching["forwards"].as_u64().expect("forwards");
    // Warm-up forward at load is not counted; every request is.
    assert_eq!(images, (CONCURRENCY * WAVES) as u64, "{batching}");
    assert!(
        forwards < images,
        "no forward had several images: {batching}"
    );
    assert_eq!(batching["max"], 2, "the default batch size: {batching}");
    let peak = status_bytes(server.pid(), "VmHWM");
    let model = std::fs::metadata(model_file()).expect("model").len();
    eprintln!(
        "peak RSS {:.1} MB (weights {:.1} MB), {images} images in {forwards} forwards: {batching}",
        peak as f64 / 1e6,
        model as f64 / 1e6
    );
    assert!(
        peak <= PEAK_BOUND,
        "peak RSS {:.1} MB > {:.1} MB ({:.1} MB of weights)",
        peak as f64 / 1e6,
        PEAK_BOUND as f64 / 1e6,
        model as f64 / 1e6
    );
}
