#!/usr/bin/env python3
"""End-to-end HTTP benchmark of the release server (resnet18-fc serve) on loopback.

Produces a markdown table on stdout (progress on stderr):
  - p50 / p99 latency and throughput of `POST /classify` (a 500x375 JPEG, raw body) at
    concurrency 1, 4, 8 and 16 with micro-batching on (default flags), and at concurrency 8
    with batching off (`--batch-max 1`); with the mean batch size the server reports;
  - HTTP overhead: p50 at concurrency 1 minus the server's own `timing_ms.inference` (median
    of sequential requests), split into decode + preprocessing and the rest;
  - cold start: fresh process -> first `/classify` answered with 200 (median of several);
  - peak RSS (VmHWM) of each server process after its load runs;
  - optionally ONNX Runtime's batch-8 images/s at 2 threads on the same synthetic weights, when
    tools/bench/compare.py (branch perf2) is present to export the ONNX model;
  - optionally variants (`--variant NAME=ARGS`, repeatable; `--variant-binary NAME=PATH` runs
    another build): a fresh server each, loaded at concurrency 8 and 16 in the same rounds as
    the rest, with its throughput and peak / current RSS. E.g. the batch-size sweep
    `--variant b1='--batch-max 1' --variant b2='--batch-max 2' --variant b8='--batch-max 8'`,
    or glibc's default malloc with `--variant untuned=--no-malloc-tuning`.

Load is generated with wrk (closed loop: each connection sends its next request when the
previous answer arrived), through a small Lua script that POSTs the image and prints the
latency percentiles as one JSON line.

It builds nothing. Build first, from the repository root:

    cargo build --release --bin resnet18-fc
    cargo build --example synthetic_weights      # or --release; writes the synthetic model

(or pass an existing model with --weights). Then:

    python3 tools/bench/http_bench.py                  # 10 s per load point, 5 cold starts
    python3 tools/bench/http_bench.py --duration 5 --cold-runs 3 --no-ort
    python3 tools/bench/http_bench.py --no-ort --variant b8='--batch-max 8' \
        --variant old= --variant-binary old=/path/to/an/older/resnet18-fc

Needs: wrk (apt-get install wrk), Python 3 with Pillow (the JPEG); for the ORT column also
torch, torchvision, onnx, onnxruntime. Timings depend on the machine's load: the table header
prints `uptime`.
"""

import os
import sys

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, "target", "release", "resnet18-fc")
WEIGHT_WRITERS = [
    os.path.join(REPO, "target", "release", "examples", "synthetic_weights"),
    os.path.join(REPO, "target", "debug", "examples", "synthetic_weights"),
]
CONCURRENCY_ON = [1, 4, 8, 16]
CONCURRENCY_OFF = [8]
CONCURRENCY_VARIANT = [8, 16]

LUA = r"""
-- POSTs the benchmark image (path in $BENCH_IMAGE) to the URL wrk was given and prints one
-- line `WRK {json}` with the request count, duration and latency percentiles (microseconds).
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
local file = assert(io.open(os.getenv("BENCH_IMAGE"), "rb"))
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "socket_errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def die(message):
    log(f"http_bench.py: {message}")
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Inputs


def make_image(path):
    """A deterministic 500x375 photo-like JPEG (smooth gradients plus seeded noise)."""
    import random

    from PIL import Image

    rng = random.Random(6)
    width, height = 500, 375
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    for y in range(height):
        for x in range(width):
            n = rng.randint(-12, 12)
            pixels[x, y] = (
                max(0, min(255, (x * 255) // width + n)),
                max(0, min(255, (y * 255) // height - n)),
                max(0, min(255, ((x ^ y) & 0xFF) // 2 + 64)),
            )
    image.save(path, "JPEG", quality=90)


def write_weights(path):
    for writer in WEIGHT_WRITERS:
        if os.access(writer, os.X_OK):
            subprocess.run([writer, path], check=True, stdout=subprocess.DEVNULL)
            return
    die(
        "no synthetic_weights example found; run `cargo build --example synthetic_weights` "
        "(or pass --weights PATH)"
    )


# ---------------------------------------------------------------------------------------------
# The server


class Server:
    """The release binary serving on 127.0.0.1:<free port>, its output in a log file."""

    def __init__(self, weights, extra_args, log_path, binary=None):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESNET18_FC_", "FC_"))}
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [binary or BINARY, "serve", "--host", "127.0.0.1", "--port", "0", "--offline",
             "--model", weights, *extra_args],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                die(f"server exited with {self.process.returncode}:\n{self.output()}")
            for line in self.output().splitlines():
                if "listening on http://" in line:
                    address = line.split("listening on http://", 1)[1].split()[0]
                    return int(address.rsplit(":", 1)[1])
            time.sleep(0.001)
        die(f"server did not listen within {seconds} s:\n{self.output()}")

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def healthz(self):
        status, body = request(self.port, "GET", "/healthz")
        return status, json.loads(body)

    def wait_ready(self, seconds=120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, body = self.healthz()
            if status == 200:
                return body
            time.sleep(0.05)
        die(f"model not ready within {seconds} s:\n{self.output()}")

    def peak_rss_mb(self):
        return self.status_mb("VmHWM")

    def rss_mb(self):
        return self.status_mb("VmRSS")

    def status_mb(self, field):
        """A memory field of /proc/<pid>/status in MiB (the kernel gives KiB). The tables say
        MB for MiB, as before (100 MiB = 104.9 * 10^6 bytes)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def request(port, method, path, body=None, headers=None, timeout=120):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def classify(port, image):
    status, body = request(port, "POST", "/classify", image, {"Content-Type": "image/jpeg"})
    if status != 200:
        die(f"/classify answered {status}: {body[:300]!r}")
    return json.loads(body)


# ---------------------------------------------------------------------------------------------
# Measurements


def server_timing(server, image, n):
    """Median server-reported inference and decode (ms) over `n` sequential requests."""
    inference, decode = [], []
    for _ in range(n):
        timing = classify(server.port, image)["timing_ms"]
        inference.append(timing["inference"])
        decode.append(timing["decode"])
    return statistics.median(inference), statistics.median(decode)


def run_wrk(server, lua_path, image_path, concurrency, seconds):
    """One wrk run; returns its JSON summary plus the mean batch size the server saw."""
    _, before = server.healthz()
    threads = min(concurrency, 2)
    command = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s",
               "--timeout", "60s", "-s", lua_path, server.url("/classify")]
    out = subprocess.run(command, capture_output=True, text=True,
                         env={**os.environ, "BENCH_IMAGE": image_path})
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRK ")), None)
    if out.returncode != 0 or line is None:
        die(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result = json.loads(line[4:])
    _, after = server.healthz()
    forwards = after["batching"]["forwards"] - before["batching"]["forwards"]
    images = after["batching"]["images"] - before["batching"]["images"]
    result["mean_batch"] = images / forwards if forwards else float("nan")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["socket_errors"] or result["non2xx"]:
        log(f"  warning: {result['socket_errors']} socket errors, {result['non2xx']} non-2xx")
    return result


def cold_start(weights, image, work, runs):
    """Seconds from spawning the server to the first 200 from /classify, one per run."""
    times = []
    for i in range(runs):
        server = Server(weights, [], os.path.join(work, f"cold-{i}.log"))
        try:
            while True:
                try:
                    status, _ = request(server.port, "POST", "/classify", image,
                                        {"Content-Type": "image/jpeg"})
                except ConnectionError:
                    time.sleep(0.002)
                    continue
                if status == 200:
                    break
                time.sleep(0.002)
            times.append(time.monotonic() - server.started)
        finally:
            server.stop()
    return times


def ort_batch8(weights, work):
    """ONNX Runtime batch-8 images/s at 2 threads via tools/bench/compare.py, or a reason."""
    compare_path = os.path.join(REPO, "tools", "bench", "compare.py")
    if not os.path.exists(compare_path):
        return None, "tools/bench/compare.py not present (branch perf2)"
    try:
        sys.path.insert(0, os.path.dirname(compare_path))
        import compare  # noqa: E402 (optional helper, same directory)

        onnx_path = os.path.join(work, "resnet18.onnx")
        compare.export_onnx(weights, onnx_path)
        out = subprocess.run(
            [sys.executable, compare_path, "--child", "ort", onnx_path, "2", "8", "10"],
            capture_output=True, text=True, check=True,
        )
        line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
        return 8000.0 / json.loads(line)["forward_ms"], None
    except Exception as e:  # the column is optional: say why it is missing
        return None, f"ORT measurement failed: {e}"


# ---------------------------------------------------------------------------------------------
# Driver


def parse_variants(specs, binaries):
    """{name: (extra args, binary or None)} from `NAME=ARGS` and `NAME=PATH` strings."""
    import shlex

    variants = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or name in ("on", "off"):
            die(f"--variant {spec!r}: expected NAME=ARGS with a new name")
        variants[name] = (shlex.split(rest), None)
    for spec in binaries:
        name, sep, path = spec.partition("=")
        if name not in variants or not os.access(path, os.X_OK):
            die(f"--variant-binary {spec!r}: no variant {name!r} or no executable {path!r}")
        variants[name] = (variants[name][0], path)
    return variants


def print_variants(variants, results, rss, on, off):
    """The variants' table, with the default server's and --batch-max 1's rows to compare."""
    print()
    print("| server | c=8 req/s | c=8 p50 / p99 ms | c=16 req/s | c=16 p50 / p99 ms "
          "| mean batch c=8 / c=16 | peak RSS MB | RSS after MB |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(rs, c):
        if c not in rs:
            return "n/a", "n/a", float("nan")
        return (f"{median_of(rs[c], 'rps'):.1f}",
                f"{median_of(rs[c], 'p50_us') / 1000:.0f} / {median_of(rs[c], 'p99_us') / 1000:.0f}",
                median_of(rs[c], "mean_batch"))

    rows = [("default (batching on)", on, max(rss["on"]), None),
            ("--batch-max 1", off, max(rss["off"]), None)]
    rows += [(f"{name}: {' '.join(v_args)}" + (f" [{v_binary}]" if v_binary else ""),
              results[name], max(rss[name]), statistics.median(rss[name + " now"]))
             for name, (v_args, v_binary) in variants.items()]
    for label, rs, peak, now in rows:
        r8, l8, b8 = cell(rs, 8)
        r16, l16, b16 = cell(rs, 16)
        now = "n/a" if now is None else f"{now:.0f}"
        print(f"| {label} | {r8} | {l8} | {r16} | {l16} | {b8:.2f} / {b16:.2f} | {peak:.0f} | {now} |")


def ratio(a, b, unit="x"):
    return f"{a / b:.2f}{unit}" if b else "n/a"


def median_of(results, key):
    return statistics.median(r[key] for r in results)


def main():
    global BINARY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per load point")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every load point")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--weights", help="existing safetensors model (default: synthetic)")
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime column")
    parser.add_argument("--binary", default=BINARY, help="server binary (default: release build)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="also load a server started with these extra arguments")
    parser.add_argument("--variant-binary", action="append", default=[], metavar="NAME=PATH",
                        help="run variant NAME with another binary")
    args = parser.parse_args()
    BINARY = args.binary
    variants = parse_variants(args.variant, args.variant_binary)

    if not os.access(BINARY, os.X_OK):
        die(f"{BINARY} not found; run `cargo build --release --bin resnet18-fc` first")
    if shutil.which("wrk") is None:
        die("wrk is not installed (apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="resnet18-fc-http-")
    weights = args.weights or os.path.join(work, "resnet18.safetensors")
    if not args.weights:
        write_weights(weights)
    image_path = os.path.join(work, "photo.jpg")
    make_image(image_path)
    with open(image_path, "rb") as f:
        image = f.read()
    lua_path = os.path.join(work, "post.lua")
    with open(lua_path, "w") as f:
        f.write(LUA)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    log(f"work dir {work}; {uptime}")

    on, off, timings, rss = {}, {}, [], {"on": [], "off": []}
    variant_results = {name: {} for name in variants}
    for name in variants:
        rss[name], rss[name + " now"] = [], []
    for round_ in range(args.rounds):
        for mode, flags, points, results, binary in [
            ("on", [], CONCURRENCY_ON, on, BINARY),
            ("off", ["--batch-max", "1"], CONCURRENCY_OFF, off, BINARY),
        ] + [(name, v_args, CONCURRENCY_VARIANT, variant_results[name], v_binary)
             for name, (v_args, v_binary) in variants.items()]:
            server = Server(weights, flags, os.path.join(work, f"{mode}-{round_}.log"),
                            binary)
            try:
                health = server.wait_ready()
                log(f"round {round_ + 1}: batching {mode} (workers {health['workers']}, "
                    f"batch max {health['batching']['max']}, wait {health['batching']['wait_ms']} ms)")
                # Warm-up: first requests fault in pages and size the allocator's pools.
                server_timing(server, image, 5)
                if mode == "on":
                    timings.append(server_timing(server, image, 30))
                for c in points:
                    log(f"  wrk c={c} for {args.duration} s")
                    results.setdefault(c, []).append(
                        run_wrk(server, lua_path, image_path, c, args.duration))
                rss[mode].append(server.peak_rss_mb())
                if mode in variants:
                    rss[mode + " now"].append(server.rss_mb())
            finally:
                server.stop()

    log(f"cold start x{args.cold_runs}")
    cold = cold_start(weights, image, work, args.cold_runs)
    ort, ort_note = (None, "skipped (--no-ort)") if args.no_ort else ort_batch8(weights, work)

    inference = statistics.median(t[0] for t in timings)
    decode = statistics.median(t[1] for t in timings)
    p50_c1 = median_of(on[1], "p50_us") / 1000.0
    overhead = p50_c1 - inference

    print(f"HTTP benchmark, {uptime}")
    print(f"image 500x375 JPEG ({len(image)} bytes), {args.duration} s per point, "
          f"{args.rounds} round(s); medians across rounds\n")
    print("| batching | concurrency | p50 ms | p99 ms | req/s | mean batch |")
    print("|---|---|---|---|---|---|")
    for mode, results in [("on", on), ("off (--batch-max 1)", off)]:
        for c in sorted(results):
            rs = results[c]
            print(f"| {mode} | {c} | {median_of(rs, 'p50_us') / 1000:.1f} | "
                  f"{median_of(rs, 'p99_us') / 1000:.1f} | {median_of(rs, 'rps'):.1f} | "
                  f"{median_of(rs, 'mean_batch'):.2f} |")
    print()
    print("| metric | value |")
    print("|---|---|")
    print(f"| server inference (forward), c=1 median | {inference:.1f} ms |")
    print(f"| server decode + preprocess, c=1 median | {decode:.1f} ms |")
    print(f"| end-to-end p50, c=1 | {p50_c1:.1f} ms |")
    print(f"| HTTP overhead = p50 - inference | {overhead:.1f} ms "
          f"({ratio(100 * overhead, inference, '%')} of the forward; of which decode "
          f"{decode:.1f} ms, rest {overhead - decode:.1f} ms) |")
    print(f"| cold start -> first /classify 200 | median {statistics.median(cold) * 1000:.0f} ms "
          f"(runs: {', '.join(f'{t * 1000:.0f}' for t in cold)}) |")
    print(f"| peak RSS (VmHWM), batching on, after c=1..16 | "
          f"{max(rss['on']):.0f} MB |")
    print(f"| peak RSS (VmHWM), batching off, after c=8 | {max(rss['off']):.0f} MB |")
    c8_on, c8_off = median_of(on[8], "rps"), median_of(off[8], "rps")
    print(f"| c=8 throughput, batching on / off | {c8_on:.1f} / {c8_off:.1f} req/s "
          f"({ratio(c8_on, c8_off)}) |")
    if ort is not None:
        print(f"| ONNX Runtime batch 8, 2 threads (forward only) | {ort:.1f} img/s; "
              f"c=8 batching on is {ratio(c8_on, ort)} of it |")
    else:
        print(f"| ONNX Runtime batch 8 | n/a: {ort_note} |")
    if variants:
        print_variants(variants, variant_results, rss, on, off)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
