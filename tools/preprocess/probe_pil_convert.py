#!/usr/bin/env python3
"""Print how Pillow's ``Image.convert("RGB")`` maps each image mode we decode.

What it shows (the rules `src/preprocess/pixels.rs` mirrors): ``I;16`` clips at 255,
16-bit-per-channel PNGs keep the high byte, CMYK uses ``(255-C)(255-K)/255`` rounded,
alpha is dropped without compositing, and a 16-bit gray PNG with ``tRNS`` stays ``I;16``.

How to run (needs ``pip install pillow numpy``)::

    python3 tools/preprocess/probe_pil_convert.py

Output as seen with Pillow 13.0.0::

    I;16 -> RGB (red channel) for [0, 100, 255, 256, 1000, 65535]: [0, 100, 255, 255, 255, 255]
    48-bit PNG: mode RGB, red for [0x00ff, 0x7fff, 0x80ff, 0xff7f]: [0, 127, 128, 255]
    64-bit PNG: mode RGBA, red for [0x00ff, 0x7fff, 0x80ff, 0xff7f]: [0, 127, 128, 255]
    16-bit LA PNG: mode RGBA, red for [0x00ff, 0x7fff, 0x80ff, 0xff7f]: [0, 127, 128, 255]
    16-bit gray PNG + tRNS: mode I;16, red for [0x00ff, 0x7fff, 0x80ff, 0xff7f]: [255, 255, 255, 255]
    CMYK -> RGB equals round((255-C)(255-K)/255) on 10000 random pixels: True
    RGBA (10, 20, 30, 0) -> RGB (10, 20, 30)
    LA (10, 0) -> RGB (10, 10, 10)
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image

SAMPLES = [0x00FF, 0x7FFF, 0x80FF, 0xFF7F]


def png(width: int, colour_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A one-row 16-bit PNG."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, 1, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", zlib.compress(b"\0" + rows))
        + chunk(b"IEND", b"")
    )


def red(img: Image.Image) -> list[int]:
    return [int(v) for v in np.array(img.convert("RGB"))[0, :, 0]]


def main() -> None:
    values = [0, 100, 255, 256, 1000, 65535]
    i16 = Image.frombytes("I;16", (len(values), 1), np.array(values, "<u2").tobytes())
    print(f"I;16 -> RGB (red channel) for {values}: {red(i16)}")
    hexes = "[" + ", ".join(f"{v:#06x}" for v in SAMPLES) + "]"
    cases = [
        ("48-bit PNG", 2, [(v, v, v) for v in SAMPLES], b""),
        ("64-bit PNG", 6, [(v, v, v, 0x1234) for v in SAMPLES], b""),
        ("16-bit LA PNG", 4, [(v, 0x1234) for v in SAMPLES], b""),
    ]
    for name, colour_type, pixels, extra in cases:
        rows = b"".join(struct.pack(f">{len(p)}H", *p) for p in pixels)
        img = Image.open(io.BytesIO(png(len(SAMPLES), colour_type, rows, extra)))
        print(f"{name}: mode {img.mode}, red for {hexes}: {red(img)}")
    trns = struct.pack(">I", 2) + b"tRNS" + struct.pack(">H", 300)
    trns += struct.pack(">I", zlib.crc32(b"tRNS" + struct.pack(">H", 300)) & 0xFFFFFFFF)
    rows = b"".join(struct.pack(">H", v) for v in SAMPLES)
    img = Image.open(io.BytesIO(png(len(SAMPLES), 0, rows, trns)))
    print(f"16-bit gray PNG + tRNS: mode {img.mode}, red for {hexes}: {red(img)}")

    cmyk = np.random.default_rng(0).integers(0, 256, (100, 100, 4), dtype=np.uint8)
    rgb = np.array(Image.frombytes("CMYK", (100, 100), cmyk.tobytes()).convert("RGB"))
    c = cmyk.astype(np.int64)
    formula = np.rint((255 - c[..., :3]) * (255 - c[..., 3:4]) / 255)
    print(f"CMYK -> RGB equals round((255-C)(255-K)/255) on 10000 random pixels: "
          f"{bool((rgb == formula).all())}")
    rgba = Image.frombytes("RGBA", (1, 1), bytes([10, 20, 30, 0]))
    print(f"RGBA (10, 20, 30, 0) -> RGB {rgba.convert('RGB').getpixel((0, 0))}")
    la = Image.frombytes("LA", (1, 1), bytes([10, 0]))
    print(f"LA (10, 0) -> RGB {la.convert('RGB').getpixel((0, 0))}")


if __name__ == "__main__":
    main()
