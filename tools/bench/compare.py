#!/usr/bin/env python3
"""Forward-pass and cold-start comparison: resnet18-fc vs ONNX Runtime, torch eager, stock candle.

Produces a markdown table on stdout (progress on stderr): batch-1 forward latency at 1 and 2
threads, batch-8 throughput at 2 threads, load time, peak RSS, and cold start (fresh process to
top-3 on a JPEG), each with its ratio to ONNX Runtime. All systems run the SAME synthetic
ResNet-18 weights (src/synthetic.rs recipe, written by the Rust bench binary, loaded into
torchvision's resnet18 and exported to ONNX), and the script checks that every system produces the
same logits on the same input before printing anything.

Run from the repository root (one invocation; configurations are interleaved round by round so
machine noise hits all of them alike; every measurement is a fresh child process):

    pip install torch torchvision onnxruntime onnx safetensors pillow numpy
    python3 tools/bench/compare.py                # default 5 rounds x 20 iterations
    python3 tools/bench/compare.py --rounds 3 --iters 10 --no-cold

Child modes (`--child ort|torch`, `--cold ort`) are used by the script itself.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIDE = 224
# (system, threads, batch): the configurations measured every round.
CONFIGS = [
    (system, threads, batch)
    for (threads, batch) in [(1, 1), (2, 1), (2, 8)]
    for system in ["onnxruntime", "torch", "resnet18-fc", "resnet18-fc-im2col", "candle-stock"]
]
RUST_SYSTEMS = {"resnet18-fc", "resnet18-fc-im2col", "candle-stock"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def bench_input(batch):
    """The deterministic input every system uses (same formula as benches/engine.rs)."""
    import numpy as np

    one = ((np.arange(3 * SIDE * SIDE) % 251).astype(np.float32) / 125.0) - 1.0
    return np.tile(one.reshape(1, 3, SIDE, SIDE), (batch, 1, 1, 1))


def peak_rss_mb():
    """This process's peak RSS (VmHWM). Not getrusage: ru_maxrss survives exec, so a child of
    this (torch-importing) driver would report the driver's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def report(load_ms, times_ms, logits):
    """Prints one child's result line as JSON (the Rust children print the same fields)."""
    times_ms.sort()
    first = [float(v) for v in logits[0]]
    print(
        json.dumps(
            {
                "load_ms": load_ms,
                "forward_ms": times_ms[len(times_ms) // 2],
                "rss_mb": peak_rss_mb(),
                "logit_sum": sum(first),
                "top1": max(range(len(first)), key=first.__getitem__),
            }
        )
    )


def child_ort(model, threads, batch, iters):
    start = time.perf_counter()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    load_ms = (time.perf_counter() - start) * 1e3
    x = bench_input(batch)
    logits = session.run(None, {name: x})[0]
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    report(load_ms, times, logits)


def build_torch_model(weights):
    import torch
    import torchvision
    from safetensors.torch import load_file

    model = torchvision.models.resnet18(weights=None)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"weights do not fit resnet18: missing {missing}, unexpected {unexpected}")
    return model.eval().to(torch.float32)


def child_torch(weights, threads, batch, iters):
    start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = build_torch_model(weights)
    load_ms = (time.perf_counter() - start) * 1e3
    x = torch.from_numpy(bench_input(batch))
    with torch.inference_mode():
        logits = model(x).numpy()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    report(load_ms, times, logits)


def export_onnx(weights, path):
    import torch

    model = build_torch_model(weights)
    x = torch.from_numpy(bench_input(1))
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )
    try:
        torch.onnx.export(model, (x,), path, dynamo=False, **kwargs)
    except TypeError:  # older torch without the `dynamo` switch
        torch.onnx.export(model, (x,), path, **kwargs)


def cold_ort(model, image):
    """Fresh process: import, load, decode + torchvision-style preprocess, forward, print top-3."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    img = Image.open(image).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((max(256, int(w * scale)), max(256, int(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = int(round((w - SIDE) / 2.0)), int(round((h - SIDE) / 2.0))
    img = img.crop((left, top, left + SIDE, top + SIDE))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    print(" ".join(str(i) for i in np.argsort(-logits)[:3]))


def run_child(cmd, env=None):
    """Runs a child, returns (stdout, wall seconds, peak RSS MB of that child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {' '.join(cmd)}\n{err.decode(errors='replace')}")
    return out.decode(), wall


def cargo_executable(args, target_name):
    """Builds with cargo (release profile) and returns the path of the artifact `target_name`."""
    out = subprocess.run(
        ["cargo", *args, "--message-format=json"],
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
    ).stdout.decode()
    exe = None
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == target_name:
            if msg.get("executable"):
                exe = msg["executable"]
    if exe is None:
        raise SystemExit(f"cargo {' '.join(args)} produced no executable named {target_name}")
    return exe


def env_threads(threads):
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def measure(config, paths, iters):
    system, threads, batch = config
    n = iters if batch == 1 else max(3, iters // 4)
    if system in RUST_SYSTEMS:
        cmd = [paths["engine"], "--child", system, paths["weights"], str(n), str(batch)]
    elif system == "onnxruntime":
        cmd = [sys.executable, __file__, "--child", "ort", paths["onnx"], str(threads), str(batch), str(n)]
    else:
        cmd = [sys.executable, __file__, "--child", "torch", paths["weights"], str(threads), str(batch), str(n)]
    out, _ = run_child(cmd, env_threads(threads))
    return json.loads(out.strip().splitlines()[-1])


def measure_cold(system, paths):
    if system == "resnet18-fc":
        cmd = [paths["cli"], "classify", "--model", paths["weights"], "--top-k", "3", "--json", paths["image"]]
    else:
        cmd = [sys.executable, __file__, "--cold", "ort", paths["onnx"], paths["image"]]
    out, wall = run_child(cmd, env_threads(2))
    return wall, out.strip()


def make_image(path):
    """A 500×375 photo-like JPEG (smooth gradients + texture), deterministic."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    r = 128 + 100 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    g = 128 + 90 * np.cos((xx + yy) / 51.0)
    b = 128 + 60 * np.sin(xx * yy / 5000.0)
    rgb = np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=90)


def check_agreement(first_results):
    """Every system must see the same weights: same top-1 and near-equal logit sums."""
    ref = first_results[("onnxruntime", 1, 1)]
    for config, r in first_results.items():
        if r["top1"] != ref["top1"] or abs(r["logit_sum"] - ref["logit_sum"]) > 1e-2:
            raise SystemExit(f"{config} disagrees with onnxruntime: {r} vs {ref}")
    log(f"all systems agree: top-1 {ref['top1']}, logit sum {ref['logit_sum']:.4f}")


def print_table(results, cold, rounds, iters):
    med = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()}
    print(f"ResNet-18, 224x224, synthetic weights; {rounds} interleaved rounds x {iters} iterations "
          f"(batch 8: {max(3, iters // 4)}); medians; ratio = time / ONNX Runtime time (lower is better)")
    print()
    print("| system | 1 thread (ms) | ratio | 2 threads (ms) | ratio | batch 8, 2 threads (img/s) | ratio (ORT/x) | load (ms) | peak RSS b1 (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    systems = []
    for s, _, _ in CONFIGS:
        if s not in systems:
            systems.append(s)
    for s in systems:
        one, two, eight = med[(s, 1, 1)], med[(s, 2, 1)], med[(s, 2, 8)]
        o1, o2, o8 = med[("onnxruntime", 1, 1)], med[("onnxruntime", 2, 1)], med[("onnxruntime", 2, 8)]
        ips = 8000.0 / eight["forward_ms"]
        ort_ips = 8000.0 / o8["forward_ms"]
        print(f"| {s} | {one['forward_ms']:.1f} | {one['forward_ms'] / o1['forward_ms']:.2f}x "
              f"| {two['forward_ms']:.1f} | {two['forward_ms'] / o2['forward_ms']:.2f}x "
              f"| {ips:.1f} | {ort_ips / ips:.2f}x | {one['load_ms']:.0f} | {one['rss_mb']:.0f} |")
    if cold:
        print()
        print("| cold start (fresh process → top-3 of a 500x375 JPEG, 2 threads) | median (s) | ratio to ORT |")
        print("|---|---|---|")
        ort_cold = statistics.median(cold["onnxruntime"])
        for s, walls in cold.items():
            print(f"| {s} | {statistics.median(walls):.3f} | {statistics.median(walls) / ort_cold:.2f}x |")


def driver(args):
    work = tempfile.mkdtemp(prefix="resnet18-fc-compare-")
    log("building the bench binary (cargo bench --no-run) ...")
    engine = cargo_executable(["bench", "--bench", "engine", "--no-run"], "engine")
    paths = {"engine": engine, "weights": os.path.join(work, "resnet18.safetensors"),
             "onnx": os.path.join(work, "resnet18.onnx"), "image": os.path.join(work, "photo.jpg")}
    subprocess.run([engine, "--write-weights", paths["weights"]], check=True)
    log("exporting ONNX from the same weights ...")
    export_onnx(paths["weights"], paths["onnx"])
    cold_systems = []
    if not args.no_cold:
        log("building the CLI (cargo build --release) ...")
        paths["cli"] = cargo_executable(["build", "--release", "--bin", "resnet18-fc"], "resnet18-fc")
        make_image(paths["image"])
        cold_systems = ["onnxruntime", "resnet18-fc"]
    results = {c: [] for c in CONFIGS}
    cold = {s: [] for s in cold_systems}
    tops = {}
    for round_ in range(args.rounds):
        log(f"round {round_ + 1}/{args.rounds}")
        for config in CONFIGS:
            results[config].append(measure(config, paths, args.iters))
        if round_ == 0:
            check_agreement({c: rs[0] for c, rs in results.items()})
        for s in cold_systems:
            wall, top = measure_cold(s, paths)
            cold[s].append(wall)
            tops.setdefault(s, top)
    for s, top in tops.items():
        log(f"cold-start answer of {s}: {top[:200]}")
    shutil.rmtree(work, ignore_errors=True)  # ~90 MB of weights + ONNX
    print_table(results, cold, args.rounds, args.iters)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, threads, batch, iters = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        (child_ort if kind == "ort" else child_torch)(path, threads, batch, iters)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--cold":
        cold_ort(sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start measurement")
    driver(parser.parse_args())


if __name__ == "__main__":
    main()
