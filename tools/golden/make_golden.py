#!/usr/bin/env python3
"""Golden parity fixtures for resnet18-fc, produced by TorchVision itself.

What it produces (all small, all committed):

* ``tests/fixtures/golden/weights.json`` -- the synthetic-weights recipe check: sha256 of every
  synthetic tensor concatenated (f32 little-endian, ``state_dict`` order, ``num_batches_tracked``
  skipped), plus the tensor names and shapes in that order.
* ``tests/fixtures/golden/<name>.{jpg,png}`` -- six test images built from scikit-image's bundled
  CC0 / public-domain photos (see README.md): a non-square JPEG, a portrait PNG, a grayscale
  (mode L) PNG, an RGBA PNG with varied alpha, one smaller than 224, one very elongated.
* ``tests/fixtures/golden/<name>.crop.png`` -- the 224x224 RGB PIL image after
  ``convert('RGB')``, ``Resize(256)`` and ``CenterCrop(224)``, saved losslessly.
* ``tests/fixtures/golden/<name>.json`` -- per image: file names, PIL mode and size, sha256 of the
  normalised tensor (f32 LE, CHW), a few tensor samples, the 1000 f32 logits of torchvision's
  ``resnet18`` on the synthetic weights, the top-5 indices and the f32-vs-f64 logit difference.
* ``tests/fixtures/checkpoints/*.pth`` -- tiny TorchVision-format checkpoints written by
  ``torch.save`` (zip + pickle), described by ``tests/fixtures/checkpoints/checkpoints.json``.

How to run (dev time only; the Rust tests only read the committed output)::

    pip install -r tools/golden/requirements.txt
    python3 tools/golden/make_golden.py            # from the repository root

Versions used for the committed fixtures: Python 3.11.7, torch 2.15.0, torchvision 0.29.2,
Pillow 13.0.0, numpy 2.4.6, scikit-image 0.26.0 (also written into every JSON file).

The synthetic-weights recipe is the one documented in ``src/synthetic.rs`` and is re-implemented
here independently (vectorised with numpy, cross-checked against a plain Python SplitMix64).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import PIL
import skimage
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
CHECKPOINTS = ROOT / "tests" / "fixtures" / "checkpoints"

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
# Flat CHW indices of the tensor samples written to each fixture (first, corners, centre, last).
SAMPLE_INDICES = [0, 223, 224 * 223, 224 * 224 - 1, 50176 + 112 * 224 + 112, 100352 + 7, 150527]

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
SM_GAMMA = 0x9E3779B97F4A7C15
SM_MUL1 = 0xBF58476D1CE4E5B9
SM_MUL2 = 0x94D049BB133111EB


# --------------------------------------------------------------------------- synthetic weights


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a hash."""
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def splitmix64_scalar(seed: int, count: int) -> list[int]:
    """Plain-Python SplitMix64, used only to cross-check the vectorised version."""
    out, state = [], seed
    for _ in range(count):
        state = (state + SM_GAMMA) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * SM_MUL1) & MASK64
        z = ((z ^ (z >> 27)) * SM_MUL2) & MASK64
        out.append(z ^ (z >> 31))
    return out


def splitmix64_vector(seed: int, count: int) -> np.ndarray:
    """The first `count` SplitMix64 outputs from `seed`: state k is seed + k*gamma (mod 2^64)."""
    k = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * np.uint64(SM_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(SM_MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(SM_MUL2)
        z = z ^ (z >> np.uint64(31))
    return z


def affine_for(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(a, b) of the recipe table in src/synthetic.rs."""
    if name == "fc.weight":
        return 0.0, 1.0 / math.sqrt(512.0)
    if name == "fc.bias":
        return 0.0, 0.01
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return 0.0, math.sqrt(6.0 / fan_in)
    if name.startswith("layer") and name.endswith(".bn2.weight"):
        return 0.5, 0.1
    if name.endswith(".weight"):
        return 1.0, 0.2
    if name.endswith(".running_var"):
        return 1.0, 0.5
    return 0.0, 0.1  # bias and running_mean


def synthetic_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """f32(a + b*u), u = (next >> 40) / 2^24 * 2 - 1, computed in f64 and rounded once."""
    a, b = affine_for(name, shape)
    count = math.prod(shape)
    bits = splitmix64_vector(fnv1a64(name.encode()), count)
    u = (bits >> np.uint64(40)).astype(np.float64) / 16777216.0 * 2.0 - 1.0
    return (a + b * u).astype(np.float32).reshape(shape)


def self_check_prng() -> None:
    """Known answers (same as src/synthetic.rs unit tests) and vector/scalar agreement."""
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8
    assert splitmix64_scalar(1234567, 3) == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
    ]
    seed = fnv1a64(b"layer3.1.bn2.running_var")
    assert splitmix64_vector(seed, 1000).tolist() == splitmix64_scalar(seed, 1000)


def synthetic_state_dict(template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The synthetic state dict: float tensors from the recipe, num_batches_tracked left at 0."""
    out = {}
    for name, ref in template.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros_like(ref)
        else:
            out[name] = torch.from_numpy(synthetic_tensor(name, tuple(ref.shape)))
    return out


def float_items(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """Float tensors of a state dict in order (num_batches_tracked skipped)."""
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def write_weights_fixture(state: dict[str, torch.Tensor], versions: dict) -> None:
    digest = hashlib.sha256()
    tensors = []
    for name, tensor in float_items(state):
        digest.update(tensor.numpy().astype("<f4").tobytes())
        tensors.append({"name": name, "shape": list(tensor.shape)})
    doc = {
        "description": "sha256 of all synthetic tensors concatenated, f32 little-endian, "
        "state_dict order, num_batches_tracked skipped (recipe: src/synthetic.rs)",
        "sha256": digest.hexdigest(),
        "tensors": tensors,
        "versions": versions,
    }
    write_json(GOLDEN / "weights.json", doc)


# --------------------------------------------------------------------------- test images


def fit(array: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A PIL image of `array` resized (Lanczos) to `size` = (width, height)."""
    return Image.fromarray(array).resize(size, Image.Resampling.LANCZOS)


def radial_alpha(width: int, height: int) -> np.ndarray:
    """Alpha from 255 at the centre to 0 at the corners, with a fully transparent band."""
    y, x = np.mgrid[0:height, 0:width]
    r = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2))
    alpha = np.clip(255 * (1.3 - r), 0, 255).astype(np.uint8)
    alpha[:, : width // 8] = 0
    return alpha


def elongated_strip(width: int, height: int) -> Image.Image:
    """Several photos side by side at the same height, cut to `width` x `height`."""
    parts = [skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.astronaut()]
    tiles = []
    for part in parts * 3:
        h, w = part.shape[:2]
        tiles.append(np.asarray(fit(part, (round(w * height / h), height))))
    strip = np.concatenate(tiles, axis=1)
    if strip.shape[1] < width:
        raise ValueError("strip too short")
    return Image.fromarray(strip[:, :width])


def build_images() -> list[tuple[str, str, Image.Image, dict]]:
    """(name, file name, image, save options) of every test image."""
    coffee = skdata.coffee()  # 600x400
    portrait = fit(coffee[:, 170:437], (200, 300))
    gray = fit(skdata.camera()[64:448, :], (320, 240))  # mode L, landscape
    astro = np.asarray(fit(skdata.astronaut(), (230, 260)))
    rgba = Image.fromarray(np.dstack([astro, radial_alpha(230, 260)]), "RGBA")
    small = fit(skdata.rocket(), (100, 80))
    return [
        ("chelsea", "chelsea.jpg", Image.fromarray(skdata.chelsea()), {"quality": 90}),
        ("coffee_portrait", "coffee_portrait.png", portrait, {}),
        ("camera_gray", "camera_gray.png", gray, {}),
        ("astronaut_rgba", "astronaut_rgba.png", rgba, {}),
        ("rocket_small", "rocket_small.png", small, {}),
        ("strip_elongated", "strip_elongated.png", elongated_strip(1200, 90), {}),
    ]


# --------------------------------------------------------------------------- torchvision run


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def golden_for_image(
    name: str, file_name: str, model32: torch.nn.Module, model64: torch.nn.Module, versions: dict
) -> dict:
    """Runs torchvision's evaluation pipeline on one committed image and returns its fixture."""
    path = GOLDEN / file_name
    with Image.open(path) as img:
        mode, size = img.mode, img.size
        rgb = img.convert("RGB")
    resized = T.Resize(256)(rgb)
    crop = T.CenterCrop(224)(resized)
    crop_name = f"{name}.crop.png"
    crop.save(GOLDEN / crop_name)
    with Image.open(GOLDEN / crop_name) as reread:
        assert np.array_equal(np.asarray(reread), np.asarray(crop)), "crop PNG not lossless"
    tensor = T.Normalize(MEAN, STD)(T.ToTensor()(crop))
    flat = tensor.reshape(-1)
    with torch.no_grad():
        logits32 = model32(tensor.unsqueeze(0))[0]
        logits64 = model64(tensor.double().unsqueeze(0))[0]
    order = torch.argsort(logits32, descending=True)
    top5 = order[:5].tolist()
    sorted_logits = logits32[order]
    return {
        "image": file_name,
        "crop": crop_name,
        "pil_mode": mode,
        "size": list(size),
        "resized_size": list(resized.size),
        "tensor_sha256": tensor_sha256(tensor),
        "tensor_samples": [
            {"index": i, "value": float(flat[i])} for i in SAMPLE_INDICES
        ],
        "logits": [float(v) for v in logits32.tolist()],
        "top5": top5,
        "top3_margin": float(sorted_logits[2] - sorted_logits[3]),
        "max_abs_logit": float(logits32.abs().max()),
        "f32_vs_f64_max_abs_diff": float((logits32.double() - logits64).abs().max()),
        "versions": versions,
    }


# --------------------------------------------------------------------------- checkpoints


def tiny_value(k: int) -> float:
    """Value of float tensor k (0-based, state_dict order): (k+1)/16, exact in f32/f16/bf16."""
    return (k + 1) / 16.0


def tiny_state(template: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every key of resnet18().state_dict(); each float tensor a stride-0 expand of one value."""
    out, k = {}, 0
    for name, ref in template.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros((), dtype=torch.int64)
            continue
        one = torch.full([1] * ref.dim(), tiny_value(k), dtype=dtype)
        out[name] = one.expand(*ref.shape)
        k += 1
    return out


def contiguous_subset() -> dict[str, torch.Tensor]:
    """A few full-size contiguous tensors whose element i is f32(i/1024 + offset)."""
    shapes = {"conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "fc.bias": (1000,)}
    out = {}
    for j, (name, shape) in enumerate(shapes.items()):
        n = math.prod(shape)
        values = np.arange(n, dtype=np.float64) / 1024.0 + (j + 1)
        out[name] = torch.from_numpy(values.astype(np.float32).reshape(shape)).contiguous()
    return out


def write_checkpoints(template: dict[str, torch.Tensor], versions: dict) -> None:
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    tiny = tiny_state(template, torch.float32)
    missing = {k: v for k, v in tiny.items() if k != "layer3.1.bn2.running_var"}
    misshaped = dict(tiny)
    misshaped["fc.weight"] = tiny["fc.weight"][:10]
    files = {
        "resnet18_tiny.pth": tiny,
        "resnet18_tiny_f16.pth": tiny_state(template, torch.float16),
        "resnet18_missing.pth": missing,
        "resnet18_misshaped.pth": misshaped,
        "resnet18_contiguous_subset.pth": contiguous_subset(),
    }
    for file_name, state in files.items():
        torch.save(state, CHECKPOINTS / file_name)
    tensors = []
    for k, (name, ref) in enumerate(float_items(template)):
        tensors.append({"name": name, "shape": list(ref.shape), "value": tiny_value(k)})
    doc = {
        "description": "Tiny TorchVision-format checkpoints (torch.save zip+pickle) for the "
        "converter tests. Float tensors are stride-0 expands of a 1-element storage.",
        "value_scheme": "float tensor k (0-based, state_dict order, num_batches_tracked "
        "excluded) has every element equal to (k+1)/16; num_batches_tracked are int64 0-dim "
        "tensors equal to 0",
        "files": {
            "resnet18_tiny.pth": "every key of resnet18().state_dict(), float32",
            "resnet18_tiny_f16.pth": "same keys and values, float tensors in float16",
            "resnet18_missing.pth": "resnet18_tiny without layer3.1.bn2.running_var",
            "resnet18_misshaped.pth": "resnet18_tiny with fc.weight shaped [10, 512]",
            "resnet18_contiguous_subset.pth": "only conv1.weight, bn1.running_var, fc.bias, "
            "contiguous f32: element i (row-major) of the j-th of these (1-based) equals "
            "f32(i/1024 + j)",
        },
        "reader_note": "candle_core::pickle::read_pth_tensor_info reports these stride-0 "
        "layouts (storage_size 1), but PthTensors::get refuses them ('cannot retrieve "
        "non-contiguous tensors'): a converter must read the storage record itself and expand "
        "it. resnet18_contiguous_subset.pth reads with PthTensors::get as is.",
        "missing_tensor": "layer3.1.bn2.running_var",
        "misshaped_tensor": {"name": "fc.weight", "shape": [10, 512], "expected": [1000, 512]},
        "float_tensors": tensors,
        "versions": versions,
    }
    write_json(CHECKPOINTS / "checkpoints.json", doc)


# --------------------------------------------------------------------------- main


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> int:
    torch.manual_seed(0)
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
    }
    self_check_prng()
    GOLDEN.mkdir(parents=True, exist_ok=True)
    template = torchvision.models.resnet18().state_dict()
    state = synthetic_state_dict(template)
    write_weights_fixture(state, versions)

    model32 = torchvision.models.resnet18()
    model32.load_state_dict(state)
    model32.eval()
    model64 = torchvision.models.resnet18()
    model64.load_state_dict(state)
    model64.double().eval()

    index = []
    for name, file_name, image, options in build_images():
        image.save(GOLDEN / file_name, **options)
        fixture = golden_for_image(name, file_name, model32, model64, versions)
        write_json(GOLDEN / f"{name}.json", fixture)
        index.append(name)
        print(
            f"{name:16} {fixture['pil_mode']:4} {fixture['size']} top5={fixture['top5']} "
            f"max|logit|={fixture['max_abs_logit']:.3f} "
            f"f32-f64={fixture['f32_vs_f64_max_abs_diff']:.2e} "
            f"top3 margin={fixture['top3_margin']:.4f}"
        )
    write_json(GOLDEN / "index.json", {"fixtures": index})
    write_checkpoints(template, versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
