#!/usr/bin/env python3
"""Make the image-format fixtures for `tests/engine/preprocess_formats.rs`.

What it produces (in ``tests/fixtures/formats/``):

* one small synthetic image per decoder path we must get right: JPEG (baseline,
  progressive, grayscale, CMYK, EXIF orientation 6), PNG (RGB, RGBA, LA, L, palette with
  and without transparency, 16-bit gray ``I;16``, 48-bit RGB), WebP (lossless, lossy),
  animated GIF (first frame counts), BMP, TIFF, one image smaller than 224, one very
  elongated (4000x30), and one whose shorter side is already 256 (no resize at all);
* for each ``NAME.EXT`` the reference ``NAME.expected.png``: the 224x224 RGB crop that
  TorchVision's ``Resize(256)`` + ``CenterCrop(224)`` produce on the PIL image
  ``Image.open(path).convert("RGB")`` (lossless PNG, so the test compares 8-bit values);
* ``MANIFEST.json``: for each fixture, its size, PIL mode, whether the codec is lossy,
  and the Pillow / libjpeg-turbo / libwebp versions that made the references.

The reference pipeline is TorchVision's, written out with PIL calls (torch is not needed):
``torchvision.transforms.functional.resize`` on a PIL image calls
``img.resize((w, h), Image.BILINEAR)`` with the size from ``_compute_resized_output_size``
(shorter side -> 256, longer side -> ``int(256 * long / short)``) and returns the image
unchanged when that size equals its own; ``center_crop`` crops at
``int(round((H - 224) / 2))``, ``int(round((W - 224) / 2))`` (torchvision 0.29.2 source).

The one deliberate difference of our service, EXIF orientation, is encoded in the
reference for ``jpeg_exif_orientation6.jpg``: it is made from
``ImageOps.exif_transpose(img)`` rather than ``img``.

How to run (from the repository root; needs ``pip install pillow numpy``)::

    python3 tools/preprocess/make_format_fixtures.py

The images are generated deterministically (numpy PCG64 with fixed seeds), so rerunning
with the same Pillow gives byte-identical PNG/BMP/TIFF/GIF files; JPEG/WebP bytes may
change with the encoder version (the references are recomputed from the new files).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import warnings

import numpy as np
from PIL import Image, ImageOps, features

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "formats"
RESIZE = 256
CROP = 224


# --------------------------------------------------------------------------- reference


def resized_size(w: int, h: int) -> tuple[int, int]:
    """torchvision `_compute_resized_output_size` for `size=[256]`, returned as (w, h)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = RESIZE, int(RESIZE * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def torchvision_crop(img: Image.Image) -> Image.Image:
    """`Resize(256)` then `CenterCrop(224)` on an RGB PIL image, as torchvision does it."""
    size = resized_size(*img.size)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    top = int(round((h - CROP) / 2.0))
    left = int(round((w - CROP) / 2.0))
    return img.crop((left, top, left + CROP, top + CROP))


# --------------------------------------------------------------------------- content


def photo(w: int, h: int, seed: int, noise: float = 0.0) -> np.ndarray:
    """A photo-like RGB test card (uint8 HxWx3): smooth colour fields, hard-edged discs,
    a fine stripe patch (exercises the antialiasing filter) and optional Gaussian noise
    (off by default: it makes lossless files large)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / w, y / h
    img = np.empty((h, w, 3))
    img[..., 0] = 128 + 90 * np.sin(2 * np.pi * (1.3 * u + 0.4 * v) + seed)
    img[..., 1] = 128 + 80 * np.cos(2 * np.pi * (0.7 * u - 1.1 * v))
    img[..., 2] = 60 + 150 * u * v
    for _ in range(6):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.05, 0.25) * min(w, h)
        colour = rng.uniform(0, 255, 3)
        disc = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[disc] = colour
    # A patch of stripes with a period of 3 to 5 pixels.
    x0, y0 = w // 5, h // 5
    x1, y1 = x0 + max(w // 4, 2), y0 + max(h // 4, 2)
    stripes = 127.5 + 127.5 * np.sin(2 * np.pi * (x[y0:y1, x0:x1] / 3.3 + y[y0:y1, x0:x1] / 5.1))
    img[y0:y1, x0:x1, :] = stripes[..., None]
    if noise > 0:
        img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def alpha_ramp(w: int, h: int) -> np.ndarray:
    """An alpha channel with fully transparent, opaque and partial regions."""
    y, x = np.mgrid[0:h, 0:w]
    a = (255 * x / max(w - 1, 1)).astype(np.uint8)
    a[: h // 3, :] = 0
    a[2 * h // 3 :, :] = 255
    return a


def png_bytes(
    w: int, h: int, colour_type: int, bit_depth: int, rows: list[bytes], trns: bytes = b""
) -> bytes:
    """A minimal PNG with the Sub filter on every row — for what Pillow cannot write
    (48-bit RGB, 16-bit gray with tRNS). `rows` are the unfiltered scanlines; `trns` the
    optional tRNS chunk data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type] * bit_depth // 8
    raw = b""
    for r in rows:
        line = np.frombuffer(r, dtype=np.uint8).astype(np.int16)
        sub = line.copy()
        sub[bpp:] -= line[:-bpp]
        raw += b"\1" + (sub & 0xFF).astype(np.uint8).tobytes()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + (chunk(b"tRNS", trns) if trns else b"")
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- fixtures


def make_all() -> list[dict]:
    """Writes every fixture file; returns the manifest entries."""
    entries = []

    def save(name: str, data: bytes, lossy: bool, note: str, exif_transpose: bool = False):
        path = OUT / name
        path.write_bytes(data)
        img = Image.open(path)
        mode = img.mode
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        ref = torchvision_crop(img.convert("RGB"))
        # A plain RGB PNG: no transparency or other info carried over from the source.
        ref = Image.frombytes("RGB", ref.size, ref.tobytes())
        stem = name.rsplit(".", 1)[0]
        ref.save(OUT / f"{stem}.expected.png", optimize=True)
        entries.append(
            {
                "file": name,
                "expected": f"{stem}.expected.png",
                "width": Image.open(path).size[0],
                "height": Image.open(path).size[1],
                "pil_mode": mode,
                "lossy": lossy,
                "note": note,
            }
        )

    def encode(img: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    rgb = Image.fromarray(photo(500, 375, 1, noise=2.0), "RGB")
    save("jpeg_baseline.jpg", encode(rgb, "JPEG", quality=90), True, "baseline 4:2:0")
    portrait = Image.fromarray(photo(300, 400, 2), "RGB")
    save(
        "jpeg_progressive.jpg",
        encode(portrait, "JPEG", quality=90, progressive=True),
        True,
        "progressive, portrait",
    )
    gray = Image.fromarray(photo(360, 270, 3)[..., 1], "L")
    save("jpeg_gray.jpg", encode(gray, "JPEG", quality=90), True, "single channel")
    cmyk = Image.fromarray(photo(400, 300, 4), "RGB").convert("CMYK")
    save("jpeg_cmyk.jpg", encode(cmyk, "JPEG", quality=95), True, "Adobe CMYK (inverted)")
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = Image.fromarray(photo(400, 300, 5), "RGB")
    save(
        "jpeg_exif_orientation6.jpg",
        encode(sideways, "JPEG", quality=90, exif=exif.tobytes()),
        True,
        "orientation 6: reference is exif_transpose(img)",
        exif_transpose=True,
    )

    card = photo(480, 360, 6)
    save("png_rgb.png", encode(Image.fromarray(card, "RGB"), "PNG"), False, "8-bit RGB")
    rgba = np.dstack([photo(300, 400, 7), alpha_ramp(300, 400)])
    save(
        "png_rgba.png",
        encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        False,
        "alpha 0/partial/255; RGB under alpha 0 is kept",
    )
    la = np.dstack([photo(320, 300, 8)[..., 0], alpha_ramp(320, 300)])
    save("png_la.png", encode(Image.fromarray(la, "LA"), "PNG"), False, "gray + alpha")
    save(
        "png_l.png",
        encode(Image.fromarray(photo(400, 300, 9)[..., 2], "L"), "PNG"),
        False,
        "8-bit gray",
    )
    pal = Image.fromarray(photo(400, 320, 10), "RGB").quantize(colors=64, dither=Image.Dither.NONE)
    save("png_palette.png", encode(pal, "PNG"), False, "palette, no transparency")
    pal_t = Image.fromarray(photo(330, 300, 11), "RGB").quantize(
        colors=32, dither=Image.Dither.NONE
    )
    save(
        "png_palette_trns.png",
        encode(pal_t, "PNG", transparency=bytes([0, 128] + [255] * 30)),
        False,
        "palette with tRNS (alpha ignored by convert)",
    )
    # 16-bit gray: values 0..~600 so that both sides of Pillow's clip at 255 occur.
    g16 = photo(300, 260, 12)[..., 0].astype(np.uint16) * 600 // 255
    i16 = Image.frombytes("I;16", (300, 260), g16.astype("<u2").tobytes())
    save("png_gray16.png", encode(i16, "PNG"), False, "16-bit gray -> I;16 (clipped)")
    # The same with a tRNS chunk: Pillow still opens it as I;16 (clipped); the image crate
    # expands it to gray + alpha, so this checks we still clip.
    g16t = (photo(280, 250, 23)[..., 2].astype(np.uint16) * 600 // 255).astype(">u2")
    save(
        "png_gray16_trns.png",
        png_bytes(280, 250, 0, 16, [g16t[r].tobytes() for r in range(250)], struct.pack(">H", 300)),
        False,
        "16-bit gray + tRNS -> still I;16 (clipped)",
    )
    # 48-bit RGB: high bytes form the card, low bytes a full 0..255 pattern (Pillow keeps
    # the high byte, so rounding instead of truncating would show).
    hi = photo(320, 240, 13).astype(np.uint16)
    yy, xx = np.mgrid[0:240, 0:320]
    lo = ((xx + 2 * yy) & 0xFF).astype(np.uint16)[..., None].repeat(3, axis=2)
    rgb48 = ((hi << 8) | lo).astype(">u2")
    save(
        "png_rgb48.png",
        png_bytes(320, 240, 2, 16, [rgb48[r].tobytes() for r in range(240)]),
        False,
        "16 bits per channel RGB",
    )

    web = Image.fromarray(photo(400, 300, 14), "RGB")
    save("webp_lossless.webp", encode(web, "WEBP", lossless=True), False, "VP8L")
    save("webp_lossy.webp", encode(web, "WEBP", quality=90), True, "VP8")

    frames = [
        Image.fromarray(photo(300, 280, 15 + i), "RGB").quantize(colors=48, dither=Image.Dither.NONE)
        for i in range(3)
    ]
    save(
        "gif_animated.gif",
        encode(
            frames[0],
            "GIF",
            save_all=True,
            append_images=frames[1:],
            duration=100,
            loop=0,
            transparency=0,
        ),
        False,
        "3 frames, the first one counts; index 0 transparent (colour kept)",
    )
    save("bmp_rgb.bmp", encode(Image.fromarray(photo(230, 240, 18), "RGB"), "BMP"), False, "24-bit")
    save(
        "tiff_rgb.tiff",
        encode(Image.fromarray(photo(230, 280, 19), "RGB"), "TIFF", compression="tiff_adobe_deflate"),
        False,
        "Deflate",
    )
    save(
        "small_100x80.png",
        encode(Image.fromarray(photo(100, 80, 20), "RGB"), "PNG"),
        False,
        "smaller than 224: upscaled",
    )
    save(
        "elongated_4000x30.png",
        encode(Image.fromarray(photo(4000, 30, 21), "RGB"), "PNG"),
        False,
        "very elongated",
    )
    save(
        "exact_341x256.png",
        encode(Image.fromarray(photo(341, 256, 22), "RGB"), "PNG"),
        False,
        "already 256 on the short side: no resize; crop offset 58.5 rounds to 58",
    )
    return entries


def main() -> None:
    # Pillow warns when a palette image with byte transparency is converted; that is the
    # very conversion we are recording.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    OUT.mkdir(parents=True, exist_ok=True)
    entries = make_all()
    manifest = {
        "generator": "tools/preprocess/make_format_fixtures.py",
        "pillow": Image.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "libwebp": features.version("webp"),
        "fixtures": entries,
    }
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(entries)} fixtures to {OUT} ({total / 1024:.0f} KiB in all)")


if __name__ == "__main__":
    main()
