#!/usr/bin/env python3
"""Peak RSS of the release server while serving: VmHWM after N `/classify` requests.

Usage (from the repository root):
    cargo build --release --bin resnet18-fc && cargo bench --bench engine --no-run
    python3 tools/bench/rss.py [--requests 50] [--concurrency 1] [--workers 2]

Writes the synthetic weights with the bench binary (`--write-weights`), makes a 500x375 JPEG,
starts `resnet18-fc serve --offline` on a free port, waits for `GET /healthz` to answer 200,
sends the requests (raw `image/jpeg` bodies), checks that every answer is 200 with the same
top-1 class, then reads VmHWM / VmRSS from /proc/<pid>/status and stops the server (SIGTERM).
Prints one JSON line with the figures.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def newest(pattern):
    """Newest file matching `pattern` that is an executable, or None."""
    files = [f for f in glob.glob(pattern) if os.access(f, os.X_OK) and not f.endswith(".d")]
    return max(files, key=os.path.getmtime) if files else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_jpeg(path):
    from PIL import Image  # installed with the bench requirements (tools/bench/README.md)

    image = Image.new("RGB", (500, 375))
    pixels = image.load()
    for y in range(375):
        for x in range(500):
            pixels[x, y] = ((x * 7 + y) % 256, (y * 3) % 256, (x ^ y) % 256)
    image.save(path, quality=90)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def wait_ready(port, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("server not ready in time")


def classify(port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/classify",
        data=body,
        headers={"Content-Type": "image/jpeg"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        if r.status != 200:
            raise SystemExit(f"/classify answered {r.status}")
        answer = json.load(r)
    return answer["predictions"][0]["index"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", default=os.path.join(ROOT, "target/release/resnet18-fc"))
    parser.add_argument("--bench", default=newest(os.path.join(ROOT, "target/release/deps/engine-*")))
    parser.add_argument("--weights", help="an existing ResNet-18 safetensors file to serve "
                        "[default: the synthetic weights, written by the bench binary]")
    args = parser.parse_args()
    if not args.weights and not args.bench:
        raise SystemExit("no bench binary; run `cargo bench --bench engine --no-run` first")

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or os.path.join(tmp, "resnet18.safetensors")
        if not args.weights:
            subprocess.run([args.bench, "--write-weights", weights], check=True,
                           stdout=subprocess.DEVNULL)
        image = os.path.join(tmp, "image.jpg")
        make_jpeg(image)
        with open(image, "rb") as f:
            body = f.read()
        port = free_port()
        proc = subprocess.Popen(
            [args.server, "serve", "--port", str(port), "--model", weights, "--offline",
             "--workers", str(args.workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, proc)
            ready_hwm = status_kb(proc.pid, "VmHWM")
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                top1 = list(pool.map(lambda _: classify(port, body), range(args.requests)))
            elapsed = time.monotonic() - started
            if len(set(top1)) != 1:
                raise SystemExit(f"top-1 differs between identical requests: {sorted(set(top1))}")
            result = {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "top1": top1[0],
                "seconds": round(elapsed, 2),
                "vm_hwm_after_load_mb": round(ready_hwm / 1024, 1),
                "vm_hwm_mb": round(status_kb(proc.pid, "VmHWM") / 1024, 1),
                "vm_rss_mb": round(status_kb(proc.pid, "VmRSS") / 1024, 1),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
