"""Usage: python3 tools/bench/big_jpeg_http.py <repo> <weights.safetensors> [label=binary ...]
(after cargo build --release).
End-to-end /classify time of a 4000x3000 vs a 500x375 JPEG against the release server,
scaled (default) and --exact-jpeg servers, plus one default server per extra label=binary
(e.g. before=/tmp/resnet18-fc-old, a build of another commit), all interleaved; medians.
Prints the load average before and after: compare rows of one invocation only."""
import io, json, os, socket, statistics, subprocess, sys, time, urllib.request
import numpy as np
from PIL import Image, ImageFilter
repo, weights = sys.argv[1], sys.argv[2]
extra = [a.split("=", 1) for a in sys.argv[3:]]
print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
src = Image.open(os.path.join(repo, "tests/fixtures/golden/chelsea.jpg")).convert("RGB")
rng = np.random.default_rng(7)
def make(w, h):
    img = np.asarray(src.resize((w, h), Image.BICUBIC)).astype(np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO(); Image.fromarray(img).save(buf, "JPEG", quality=85); return buf.getvalue()
images = {"4000x3000": make(4000, 3000), "500x375": make(500, 375)}
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def start(flags, binary=os.path.join(repo, "target/release/resnet18-fc")):
    port = free_port()
    p = subprocess.Popen([binary, "serve", "--port", str(port),
                          "--model", weights, "--offline", "--batch-max", "1", *flags],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")).get("status") == "ready": break
        except Exception: pass
        time.sleep(0.05)
    return p, port
def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/classify", data=body, headers={"content-type": "image/jpeg"})
    t = time.perf_counter(); r = json.load(urllib.request.urlopen(req)); return time.perf_counter() - t, r
servers = {"scaled": start([]), "exact": start(["--exact-jpeg"])}
for label, binary in extra:
    servers[label] = start([], binary)
times = {(s, i): [] for s in servers for i in images}
top1 = {}
for rnd in range(15):
    for s, (p, port) in servers.items():
        for i, body in images.items():
            dt, r = post(port, body)
            if rnd > 0: times[(s, i)].append(dt)
            top1[(s, i)] = r["predictions"][0]["index"]
for p, _ in servers.values(): p.terminate()
med = {k: statistics.median(v) * 1000 for k, v in times.items()}
print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
print(f"sizes: 4000x3000 {len(images['4000x3000'])} B, 500x375 {len(images['500x375'])} B; 14 interleaved requests each, medians")
print("| server | 500x375 ms | 4000x3000 ms | ratio | top-1 small / big |")
print("|---|---|---|---|---|")
for s in servers:
    print(f"| {s} | {med[(s,'500x375')]:.1f} | {med[(s,'4000x3000')]:.1f} | {med[(s,'4000x3000')]/med[(s,'500x375')]:.2f}x | {top1[(s,'500x375')]} / {top1[(s,'4000x3000')]} |")
