#!/usr/bin/env python3
"""resnet18-fc against the usual Flask + PyTorch service (app.py), measured in one invocation.

For each system, in interleaved rounds (A B, B A, A B, ...), on the same weights file:

* cold start: process spawn → first answered `POST /classify` (HTTP 200), polling every 5 ms;
* latency p50 at concurrency 1: `--requests` sequential classify calls after 3 warm-up calls,
  each on a fresh connection (gunicorn's sync worker closes connections anyway);
* peak RSS: VmHWM summed over the process and its children (gunicorn master + worker),
  read after the latency series;
* size: what would ship. resnet18-fc: the files under `--dist` when it exists (what
  `scripts/package.sh` lays out), else the release binary + bootstrap + weights file. Flask:
  the installed size of every Python distribution the app needs (the dependency closure of
  flask, gunicorn, torch, torchvision, safetensors; pip's files, i.e. an image's site-packages
  layer), with and without the CUDA libraries the default PyPI torch wheel pulls in. The Python
  base image itself is not counted.

Reported: the median over rounds (and min–max). Before printing, the two systems' top-1 class on
the image must agree (same weights, same preprocessing recipe), else it stops with an error.

    python3 tools/bench/baseline/measure.py --rounds 5 --requests 30

Needs: `cargo build --release` (target/release/resnet18-fc), the synthetic weights example
(`cargo build --release --example synthetic_weights`, built on demand), flask, torch,
torchvision, safetensors and gunicorn in the running python (`pip install -r requirements.txt`).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata as md
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
PYTHON_ROOTS = ["flask", "gunicorn", "torch", "torchvision", "safetensors"]
CUDA_PREFIXES = ("nvidia-", "triton", "cuda-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_image(port: int, image: bytes, timeout: float = 120.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/classify?top_k=3",
            body=image,
            headers={"content-type": "image/jpeg"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def vm_hwm_bytes(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class System:
    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name, self.command, self.env = name, command, env

    def run_round(self, image: bytes, requests: int) -> dict:
        port = free_port()
        command = [c.replace("{port}", str(port)) for c in self.command]
        env = {**os.environ, **self.env}
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            status, body = self._first_answer(proc, port, image)
            cold = time.perf_counter() - started
            if status != 200:
                raise SystemExit(f"{self.name}: first classify answered {status}: {body!r}")
            for _ in range(3):
                post_image(port, image)
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                status, body = post_image(port, image)
                times.append(time.perf_counter() - t0)
                if status != 200:
                    raise SystemExit(f"{self.name}: classify answered {status}: {body!r}")
            top1 = json.loads(body)["predictions"][0]["index"]
            rss = vm_hwm_bytes(proc.pid)
        finally:
            stop(proc)
        return {"cold": cold, "p50": statistics.median(times), "rss": rss, "top1": top1}

    def _first_answer(self, proc: subprocess.Popen, port: int, image: bytes):
        deadline = time.perf_counter() + 300
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SystemExit(f"{self.name} exited with {proc.returncode}:\n{err}")
            try:
                return post_image(port, image)
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                time.sleep(0.005)
        raise SystemExit(f"{self.name}: no answer within 300 s")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def distribution_closure(roots: list[str]) -> dict[str, int]:
    """Installed size in bytes of every distribution needed by `roots` (markers evaluated)."""
    sizes: dict[str, int] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in sizes:
            continue
        size = 0
        for f in dist.files or []:
            try:
                size += Path(f.locate()).stat().st_size
            except OSError:
                pass
        sizes[key] = size
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sizes


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ensure_weights(path: Path) -> None:
    example = ROOT / "target/release/examples/synthetic_weights"
    if not example.exists():
        subprocess.run(
            ["cargo", "build", "--release", "--example", "synthetic_weights"],
            cwd=ROOT,
            check=True,
        )
    subprocess.run([str(example), str(path)], check=True, stdout=subprocess.DEVNULL)


def median_range(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/resnet18-fc")
    parser.add_argument("--weights", type=Path, help="safetensors file (default: synthetic)")
    parser.add_argument("--image", type=Path, default=ROOT / "tests/fixtures/golden/chelsea.jpg")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    if not args.binary.exists():
        raise SystemExit(f"{args.binary} missing: run `cargo build --release` first")
    image = args.image.read_bytes()

    with tempfile.TemporaryDirectory(prefix="resnet18-baseline-") as tmp:
        weights = args.weights or Path(tmp) / "resnet18.safetensors"
        if args.weights is None:
            ensure_weights(weights)
        ours = System(
            "resnet18-fc",
            [str(args.binary), "serve", "--host", "127.0.0.1", "--port", "{port}",
             "--model", str(weights), "--offline"],
            {"RUST_LOG": "warn"},
        )
        flask = System(
            "Flask + PyTorch",
            [sys.executable, "-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:{port}",
             "--timeout", "300", "--chdir", str(HERE), "app:app"],
            {"RESNET18_WEIGHTS": str(weights)},
        )
        results: dict[str, list[dict]] = {ours.name: [], flask.name: []}
        for r in range(args.rounds):
            order = [ours, flask] if r % 2 == 0 else [flask, ours]
            for system in order:
                res = system.run_round(image, args.requests)
                results[system.name].append(res)
                print(
                    f"round {r + 1} {system.name}: cold {res['cold']:.3f} s, "
                    f"p50 {res['p50'] * 1000:.1f} ms, RSS {res['rss'] / 1e6:.0f} MB",
                    file=sys.stderr,
                )
        weights_size = weights.stat().st_size

    top1 = {name: {r["top1"] for r in rs} for name, rs in results.items()}
    if len(set().union(*top1.values())) != 1:
        raise SystemExit(f"the systems disagree on the top-1 class: {top1}")

    if args.dist.is_dir():
        ours_size, ours_what = tree_size(args.dist), f"`{args.dist.name}/` (binary + bootstrap + weights)"
    else:
        ours_size = args.binary.stat().st_size + (ROOT / "bootstrap").stat().st_size + weights_size
        ours_what = "release binary + bootstrap + weights (no dist/)"
    deps = distribution_closure(PYTHON_ROOTS)
    deps_all = sum(deps.values())
    deps_cpu = sum(v for k, v in deps.items() if not k.startswith(CUDA_PREFIXES))

    def row(name: str) -> tuple[str, str, str]:
        rs = results[name]
        return (
            median_range([r["cold"] for r in rs], "{:.2f} s"),
            median_range([r["p50"] * 1000 for r in rs], "{:.1f} ms"),
            median_range([r["rss"] / 1e6 for r in rs], "{:.0f} MB"),
        )

    o, f = row(ours.name), row(flask.name)
    versions = {d: md.version(d) for d in PYTHON_ROOTS}
    print(f"| | resnet18-fc | Flask + PyTorch (gunicorn, 1 worker) |")
    print("|---|---|---|")
    print(f"| package / image size | {ours_size / 1e6:.0f} MB: {ours_what} | "
          f"{deps_all / 1e6:.0f} MB of Python packages ({len(deps)} distributions; "
          f"{deps_cpu / 1e6:.0f} MB without the CUDA libraries), plus Python itself |")
    print(f"| cold start to first answered classify | {o[0]} | {f[0]} |")
    print(f"| latency p50, concurrency 1, one image | {o[1]} | {f[1]} |")
    print(f"| peak RSS (process tree) | {o[2]} | {f[2]} |")
    print()
    print(
        f"Median (min–max) of {args.rounds} interleaved rounds, {args.requests} requests per "
        f"round, image {args.image.name} ({len(image)} bytes), same weights "
        f"({weights_size} bytes); top-1 agreed ({top1[ours.name].pop()}). "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, "
        f"Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
