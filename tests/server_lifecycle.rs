//! Process-level behaviour of the real binary: SIGTERM and `/pre-stop` drain in-flight requests
//! and exit 0, the thread count stays within the vCPU budget under 32 concurrent requests, and
//! an idle keep-alive connection is still served after more than 30 s (hyper's default
//! header-read timeout).

mod server_support;

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use server_support::*;

/// Threads allowed on top of one inference thread per vCPU: main and at most 2 async workers.
const THREAD_ALLOWANCE: usize = 3;

fn count(output: &str, needle: &str) -> usize {
    output.matches(needle).count()
}

/// Sends `n` classify requests of a larger image concurrently; returns their statuses.
fn spawn_requests(
    server: &Spawned,
    n: usize,
    image: Vec<u8>,
) -> Vec<tokio::task::JoinHandle<Option<u16>>> {
    let http = client();
    (0..n)
        .map(|_| {
            let request = http
                .post(server.url("/classify"))
                .header("content-type", "image/png")
                .body(image.clone());
            tokio::spawn(async move { request.send().await.ok().map(|r| r.status().as_u16()) })
        })
        .collect()
}

async fn statuses(handles: Vec<tokio::task::JoinHandle<Option<u16>>>) -> Vec<Option<u16>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let mut server = Spawned::start(&[], &[]);
    server.wait_ready();
    let n = 12;
    let handles = spawn_requests(&server, n, png(1600, 1200));
    let all_started = server.wait_for_output(|o| count(o, "FC Invoke Start") == n, 60);
    assert!(all_started, "requests did not arrive:\n{}", server.output());
    server.terminate();
    let finished_before_signal = count(&server.output(), "FC Invoke End");
    assert!(
        finished_before_signal < n,
        "no request was in flight when SIGTERM was sent; the test proves nothing"
    );
    let results = statuses(handles).await;
    assert_eq!(results, vec![Some(200); n], "{}", server.output());
    let exit = tokio::task::block_in_place(|| server.wait_exit(60));
    let exit = exit.expect("server did not exit after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", server.output());
    assert!(server.output().contains("reason=\"SIGTERM\""));
    assert!(TcpStream::connect(server.addr).is_err(), "still accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_waits_for_in_flight_requests_then_the_process_exits_zero() {
    let mut server = Spawned::start(&[], &[]);
    server.wait_ready();
    let n = 6;
    let handles = spawn_requests(&server, n, png(1600, 1200));
    assert!(server.wait_for_output(|o| count(o, "FC Invoke Start") == n, 60));
    let pre_stop = client()
        .get(server.url("/pre-stop"))
        .send()
        .await
        .expect("pre-stop");
    assert_eq!(pre_stop.status().as_u16(), 200);
    let body = pre_stop.text().await.expect("body");
    assert!(body.contains("\"drained\":true"), "{body}");
    // The hook answered only after every other request had ended: on stdout (written in
    // order), all n invoke End markers precede the PreStop End marker.
    assert!(server.wait_for_output(|o| o.contains("FC PreStop End"), 10));
    let output = server.output();
    let pre_stop_end = output.find("FC PreStop End").expect("marker");
    assert_eq!(
        count(&output[..pre_stop_end], "FC Invoke End"),
        n,
        "{output}"
    );
    assert_eq!(statuses(handles).await, vec![Some(200); n]);
    let exit = tokio::task::block_in_place(|| server.wait_exit(60));
    assert_eq!(exit.expect("exit").code(), Some(0), "{}", server.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_count_stays_within_the_vcpu_budget_under_32_concurrent_requests() {
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = Spawned::start(&[], &[]);
    server.wait_ready();
    let peak = Arc::new(AtomicUsize::new(server.thread_count()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (Arc::clone(&peak), Arc::clone(&done), server.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let n = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
                peak.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let handles = spawn_requests(&server, 32, png(320, 240));
    let results = statuses(handles).await;
    done.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    assert_eq!(results, vec![Some(200); 32], "{}", server.output());
    // The output is read by another thread: give it a moment to catch up.
    assert!(server.wait_for_output(|o| count(o, "FC Invoke End") == 32, 10));
    let peak = peak.load(Ordering::SeqCst);
    eprintln!("peak thread count {peak} for {vcpus} vCPUs");
    assert!(peak > 0, "could not read /proc/<pid>/task");
    assert!(
        peak <= vcpus + THREAD_ALLOWANCE,
        "{peak} threads for {vcpus} vCPUs (allowed {})",
        vcpus + THREAD_ALLOWANCE
    );
}

#[test]
fn an_idle_keep_alive_connection_is_still_served_after_31_seconds() {
    let server = Spawned::start(&[], &[]);
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let request = b"GET /healthz HTTP/1.1\r\nHost: fc\r\nConnection: keep-alive\r\n\r\n";
    let first = raw_exchange(&mut stream, request).expect("first request");
    assert!(first.status == 200 || first.status == 503, "{first:?}");
    assert_ne!(first.header("connection"), Some("close"));
    std::thread::sleep(Duration::from_secs(31));
    let second = raw_exchange(&mut stream, request).expect("connection was closed while idle");
    assert!(second.status == 200 || second.status == 503, "{second:?}");
    assert!(String::from_utf8_lossy(&second.body).contains("\"version\""));
}
