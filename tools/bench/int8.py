#!/usr/bin/env python3
"""Int8: resnet18-fc `--precision int8` vs ONNX Runtime static int8, fidelity and speed, one run.

ONNX Runtime's int8 model is built here from the same synthetic weights (src/synthetic.rs recipe,
written by the Rust bench binary): an f32 ONNX graph is assembled with `onnx.helper` (batch-norm
folded into the convolutions in f64, as torch's exporter and resnet18-fc both do), then
`onnxruntime.quantization.quantize_static` makes the QDQ model: U8 activations, S8 weights, per
output channel, MinMax calibration on the first `--calibration` photos, the `fc` head excluded
(kept f32).

Fidelity (printed first): every photo is preprocessed once (PIL, TorchVision's resize 256 +
centre crop 224, plus resize-320 / flipped variants), and the same tensors go through ORT f32,
ORT int8, resnet18-fc f32 and resnet18-fc int8. The reference is ORT f32, checked against the
TorchVision logits of tests/fixtures/golden first. Reported: top-1 agreement with the reference
and mean |Δlogit| for both int8 engines.

Speed (interleaved rounds, each measurement a fresh child process; medians; ratios to ORT int8
in the same invocation): batch-1 end to end (decode + preprocess + forward of a 451×300 JPEG) at
1 and 2 threads, batch-8 forward at 2 threads; resnet18-fc f32 alongside for scale.

    pip install onnxruntime onnx numpy pillow safetensors   # scikit-image adds 10 more photos
    python3 tools/bench/int8.py                    # default 5 rounds x 20 iterations
    python3 tools/bench/int8.py --rounds 3 --iters 10 --photos DIR

Child modes (`--child-ort`, `--child-ort-e2e`) are used by the script itself.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import REPO, bench_input, cargo_executable, env_threads, log, report, run_child  # noqa: E402

SIDE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5
# skimage.data photographs (real camera images) used when scikit-image is installed.
SKIMAGE_PHOTOS = ["brick.png", "cell.png", "clock_motion.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
                  "ihc.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg"]
# (resize of the shorter side, horizontal flip) of every photo.
VARIANTS = [(256, False), (256, True), (320, False), (320, True)]


# ---------------------------------------------------------------- ONNX graph from safetensors

def build_onnx_f32(weights_path, out_path):
    """TorchVision's resnet18 as ONNX (opset 17), batch-norm folded (f64), from safetensors."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    w = load_file(weights_path)
    nodes, inits = [], []

    def conv_bn(x, conv, bn, stride, pad, name):
        weight = w[f"{conv}.weight"].astype(np.float64)
        gamma, beta = w[f"{bn}.weight"].astype(np.float64), w[f"{bn}.bias"].astype(np.float64)
        mean, var = w[f"{bn}.running_mean"].astype(np.float64), w[f"{bn}.running_var"].astype(np.float64)
        s = gamma / np.sqrt(var + BN_EPS)
        inits.append(numpy_helper.from_array((weight * s[:, None, None, None]).astype(np.float32), name + ".w"))
        inits.append(numpy_helper.from_array((beta - mean * s).astype(np.float32), name + ".b"))
        k = weight.shape[-1]
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        return name

    def relu(x):
        nodes.append(helper.make_node("Relu", [x], [x + ".relu"], name=x + ".relu"))
        return x + ".relu"

    x = relu(conv_bn("input", "conv1", "bn1", 2, 3, "conv1"))
    nodes.append(helper.make_node("MaxPool", [x], ["maxpool"], name="maxpool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x = "maxpool"
    inp = 64
    for stage, out in enumerate([64, 128, 256, 512]):
        for block in range(2):
            p = f"layer{stage + 1}.{block}"
            block_in = inp if block == 0 else out
            stride = 1 if block_in == out else 2
            y = relu(conv_bn(x, f"{p}.conv1", f"{p}.bn1", stride, 1, f"{p}.conv1"))
            y = conv_bn(y, f"{p}.conv2", f"{p}.bn2", 1, 1, f"{p}.conv2")
            shortcut = x
            if block == 0 and stage > 0:
                shortcut = conv_bn(x, f"{p}.downsample.0", f"{p}.downsample.1", stride, 0, f"{p}.downsample")
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{p}.add"], name=f"{p}.add"))
            x = relu(f"{p}.add")
        inp = out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flat", axis=1))
    inits.append(numpy_helper.from_array(w["fc.weight"].astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(w["fc.bias"].astype(np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, out_path)


def build_onnx_int8(f32_path, out_path, calibration):
    """ORT static QDQ U8S8 per-channel, MinMax on `calibration` (N×3×224×224), fc kept f32."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(f32_path, out_path, Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=["fc"])


# ---------------------------------------------------------------- photos and preprocessing

def preprocess(img, resize=256, flip=False):
    """TorchVision's Resize(resize) + CenterCrop(224) + ToTensor + Normalize on a PIL image."""
    import numpy as np
    from PIL import Image, ImageOps

    img = img.convert("RGB")
    if flip:
        img = ImageOps.mirror(img)
    w, h = img.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    left, top = int(round((w - SIDE) / 2.0)), int(round((h - SIDE) / 2.0))
    img = img.crop((left, top, left + SIDE, top + SIDE))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1).astype(np.float32)


def photo_paths(extra_dirs):
    golden = os.path.join(REPO, "tests", "fixtures", "golden")
    index = json.load(open(os.path.join(golden, "index.json")))["fixtures"]
    paths = [os.path.join(golden, json.load(open(os.path.join(golden, f"{n}.json")))["image"]) for n in index]
    try:
        import skimage

        data = os.path.join(os.path.dirname(skimage.__file__), "data")
        paths += [os.path.join(data, p) for p in SKIMAGE_PHOTOS if os.path.exists(os.path.join(data, p))]
    except ImportError:
        log("scikit-image not installed: golden photos only")
    for d in extra_dirs:
        for ext in ("jpg", "jpeg", "png", "JPG", "JPEG", "PNG"):
            paths += sorted(glob.glob(os.path.join(d, f"*.{ext}")))
    return paths


def golden_tensors():
    """TorchVision's own tensors (lossless crops) and logits of the golden fixtures."""
    import numpy as np
    from PIL import Image

    golden = os.path.join(REPO, "tests", "fixtures", "golden")
    out = []
    for name in json.load(open(os.path.join(golden, "index.json")))["fixtures"]:
        fx = json.load(open(os.path.join(golden, f"{name}.json")))
        crop = np.asarray(Image.open(os.path.join(golden, fx["crop"])).convert("RGB"), dtype=np.float32) / 255.0
        x = ((crop - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(2, 0, 1)
        out.append((x.astype(np.float32), np.array(fx["logits"], np.float32)))
    return out


# ---------------------------------------------------------------- fidelity

def ort_logits(model, x):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return [session.run(None, {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)]


def ours_logits(engine, weights, x, work):
    import numpy as np

    path = os.path.join(work, "tensors.bin")
    x.astype("<f4").tofile(path)
    out, _ = run_child([engine, "--logits", weights, path, str(len(x))])
    res = json.loads(out.strip().splitlines()[-1])
    return np.array(res["f32"], np.float32), np.array(res["int8"], np.float32)


def fidelity(paths, args):
    import numpy as np
    from PIL import Image

    golden = golden_tensors()
    gx = np.stack([g[0] for g in golden])
    ort_f32 = np.concatenate(ort_logits(paths["onnx"], gx))
    diff = max(float(np.abs(ort_f32[i] - g[1]).max()) for i, g in enumerate(golden))
    log(f"ORT f32 vs TorchVision on the golden tensors: max |Δlogit| {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the ONNX graph does not reproduce TorchVision's logits")

    photos = photo_paths(args.photos)
    tensors = []
    for p in photos:
        img = Image.open(p)
        img.load()
        for resize, flip in VARIANTS:
            tensors.append(preprocess(img, resize, flip))
    x = np.stack(tensors)
    calibration = np.stack([preprocess(Image.open(p)) for p in photos[:args.calibration]])
    log(f"{len(photos)} photos x {len(VARIANTS)} variants = {len(x)} inputs; "
        f"ORT calibration on {len(calibration)} of the photos")
    build_onnx_int8(paths["onnx"], paths["onnx_int8"], calibration)
    ref = np.concatenate(ort_logits(paths["onnx"], x))
    ort_q = np.concatenate(ort_logits(paths["onnx_int8"], x))
    our_f32, our_q = ours_logits(paths["engine"], paths["weights"], x, paths["work"])
    rows = []
    for name, got in [("resnet18-fc f32", our_f32), ("ONNX Runtime int8 (static QDQ U8S8)", ort_q),
                      ("resnet18-fc int8 (dynamic)", our_q)]:
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        mean_abs = float(np.abs(got - ref).mean())
        max_abs = float(np.abs(got - ref).max())
        rows.append((name, agree, mean_abs, max_abs))
    print(f"Fidelity vs ONNX Runtime f32 (= TorchVision within {diff:.1e} on the golden tensors); "
          f"{len(x)} inputs from {len(photos)} photos; synthetic weights")
    print()
    print("| engine | top-1 agreement | mean abs logit diff | max abs logit diff |")
    print("|---|---|---|---|")
    for name, agree, mean_abs, max_abs in rows:
        print(f"| {name} | {agree * 100:.1f} % | {mean_abs:.4f} | {max_abs:.3f} |")
    print()
    return rows


# ---------------------------------------------------------------- speed

def child_ort(model, threads, batch, iters):
    import onnxruntime as ort

    start = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - start) * 1e3
    x = bench_input(batch)
    logits = session.run(None, {"input": x})[0]
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1e3)
    report(load_ms, times, logits)


def child_ort_e2e(model, threads, image, iters):
    """Batch 1 end to end: decode + preprocess (PIL, as TorchVision) + forward, per iteration."""
    import io

    import onnxruntime as ort
    from PIL import Image

    start = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - start) * 1e3
    data = open(image, "rb").read()

    def once():
        x = preprocess(Image.open(io.BytesIO(data)))[None]
        return session.run(None, {"input": x})[0]

    logits = once()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        once()
        times.append((time.perf_counter() - t) * 1e3)
    report(load_ms, times, logits)


# (system, mode, threads): mode "e2e" = batch-1 classify of a JPEG, "b1" / "b8" = forward only.
CONFIGS = [(s, mode, t) for (mode, t) in [("e2e", 1), ("e2e", 2), ("b1", 1), ("b8", 2)]
           for s in ["ort-int8", "resnet18-fc-int8", "resnet18-fc-f32"]]


def measure(config, paths, iters):
    system, mode, threads = config
    n = iters if mode != "b8" else max(3, iters // 4)
    batch = "8" if mode == "b8" else "1"
    if system == "ort-int8":
        if mode == "e2e":
            cmd = [sys.executable, __file__, "--child-ort-e2e", paths["onnx_int8"], str(threads), paths["image"], str(n)]
        else:
            cmd = [sys.executable, __file__, "--child-ort", paths["onnx_int8"], str(threads), batch, str(n)]
    else:
        precision = system.rsplit("-", 1)[1]
        if mode == "e2e":
            cmd = [paths["engine"], "--child-e2e", precision, paths["weights"], paths["image"], str(n)]
        else:
            impl = "resnet18-fc-int8" if precision == "int8" else "resnet18-fc"
            cmd = [paths["engine"], "--child", impl, paths["weights"], str(n), batch]
    out, _ = run_child(cmd, env_threads(threads))
    return json.loads(out.strip().splitlines()[-1])


def cpu_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":")[1].split())
                break
    keep = [f for f in ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni"] if f in flags]
    model = next((l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return model, keep


def speed(paths, args):
    results = {c: [] for c in CONFIGS}
    for round_ in range(args.rounds):
        log(f"round {round_ + 1}/{args.rounds}")
        for config in CONFIGS:
            results[config].append(measure(config, paths, args.iters))
    med = {c: statistics.median(r["forward_ms"] for r in rs) for c, rs in results.items()}
    rss = {c: statistics.median(r["rss_mb"] for r in rs) for c, rs in results.items()}
    model, flags = cpu_flags()
    print(f"Speed: {args.rounds} interleaved rounds x {args.iters} iterations (batch 8: {max(3, args.iters // 4)}); "
          f"medians; "
          f"CPU {model}, {os.cpu_count()} logical CPUs, flags {' '.join(flags)}; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print()
    print("| system | b1 end to end, 1 thread (ms) | ratio | b1 end to end, 2 threads (ms) | ratio "
          "| b1 forward, 1 thread (ms) | ratio | b8 forward, 2 threads (img/s) | throughput ratio | peak RSS b1 (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in ["ort-int8", "resnet18-fc-int8", "resnet18-fc-f32"]:
        one, two, fwd, eight = (med[(s, "e2e", 1)], med[(s, "e2e", 2)], med[(s, "b1", 1)], med[(s, "b8", 2)])
        o1, o2, of, o8 = (med[("ort-int8", "e2e", 1)], med[("ort-int8", "e2e", 2)], med[("ort-int8", "b1", 1)],
                          med[("ort-int8", "b8", 2)])
        print(f"| {s} | {one:.1f} | {one / o1:.2f}x | {two:.1f} | {two / o2:.2f}x | {fwd:.1f} | {fwd / of:.2f}x "
              f"| {8000 / eight:.1f} | {o8 / eight:.2f}x | {rss[(s, 'b1', 1)]:.0f} |")
    print()
    print("Ratios: time / ORT int8 time for latencies (lower is better), "
          "throughput / ORT int8 throughput for batch 8 (higher is better).")


def driver(args):
    work = tempfile.mkdtemp(prefix="resnet18-fc-int8-")
    log("building the bench binary (cargo bench --no-run) ...")
    engine = cargo_executable(["bench", "--bench", "engine", "--no-run"], "engine")
    paths = {"engine": engine, "work": work, "weights": os.path.join(work, "resnet18.safetensors"),
             "onnx": os.path.join(work, "resnet18.onnx"), "onnx_int8": os.path.join(work, "resnet18.int8.onnx"),
             "image": os.path.join(REPO, "tests", "fixtures", "golden", "chelsea.jpg")}
    subprocess.run([engine, "--write-weights", paths["weights"]], check=True)
    build_onnx_f32(paths["weights"], paths["onnx"])
    fidelity(paths, args)
    log(f"ORT int8 model: {os.path.getsize(paths['onnx_int8']) / 1e6:.1f} MB "
        f"(f32: {os.path.getsize(paths['onnx']) / 1e6:.1f} MB)")
    if not args.no_speed:
        speed(paths, args)
    shutil.rmtree(work, ignore_errors=True)  # ~110 MB of weights and models


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child-ort":
        child_ort(sys.argv[2], *map(int, sys.argv[3:6]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-ort-e2e":
        child_ort_e2e(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--calibration", type=int, default=4, help="photos ORT calibrates on")
    parser.add_argument("--photos", action="append", default=[], help="extra directory of photos")
    parser.add_argument("--no-speed", action="store_true", help="fidelity only")
    driver(parser.parse_args())


if __name__ == "__main__":
    main()
