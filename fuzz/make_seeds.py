#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets into fuzz/seeds/<target>/.

Small, valid examples of every input shape each target parses, so libFuzzer starts from the
interesting structure instead of discovering PNG chunks or multipart framing by chance.
Images are made with Pillow (pip install pillow); run from anywhere:

    python3 fuzz/make_seeds.py
"""
import base64
import io
import json
import pathlib
import struct
import zlib

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent
SEEDS = ROOT / "seeds"


def image_bytes(fmt, mode="RGB", size=(12, 9), **kw):
    img = Image.new(mode, size)
    px = img.load()
    for y in range(size[1]):
        for x in range(size[0]):
            v = (x * 37 + y * 11) % 256
            px[x, y] = (v * 257 if mode == "I;16" else v) if mode in ("L", "P", "1", "I;16") else tuple([v, 255 - v, (x * y) % 256, 200][: len(mode)])
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def exif_jpeg(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image_bytes("JPEG", size=(16, 8), exif=exif.tobytes())


def gradient_jpeg(mode, size, **kw):
    """A smooth gradient JPEG of `size`: for `jpeg_scaled`, which decodes at 1/2..1/8 scale
    from a 32-px shorter side on (its fuzz-only threshold)."""
    ramp_x = Image.linear_gradient("L").rotate(90).resize(size)
    ramp_y = Image.linear_gradient("L").resize(size)
    if mode == "L":
        img = ramp_x
    else:
        bands = [ramp_x, ramp_y, Image.blend(ramp_x, ramp_y, 0.5), ramp_y][: len(mode)]
        img = Image.merge(mode, bands)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=60, **kw)
    return out.getvalue()


def jpeg_scan_bomb(side, ac_scans):
    """A progressive gray `side`x`side` JPEG: one DC scan and `ac_scans` identical AC scans
    made of EOB runs (ITU-T T.81 §G.1.2.2), the shape of the many-scans CPU bomb
    (tests/hostile/images.rs has the same generator, documented)."""
    def segment(code, payload):
        return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload

    def entropy(codes):
        bits = "".join(format(value, "0%db" % n) if n else "" for value, n in codes)
        bits += "1" * (-len(bits) % 8)
        out = bytearray()
        for i in range(0, len(bits), 8):
            out.append(int(bits[i:i + 8], 2))
            if out[-1] == 0xFF:
                out.append(0)
        return bytes(out)

    blocks = ((side + 7) // 8) ** 2
    out = b"\xff\xd8" + segment(0xDB, b"\x00" + b"\x01" * 64)
    out += segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    dht = b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    dht += b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15))
    out += segment(0xC4, dht)
    out += segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + entropy([(0, 1)] * blocks)
    runs, left = [], blocks
    while left:
        run = min(left, 32767)
        r = run.bit_length() - 1
        runs += [(r, 4), (run - (1 << r), r)]
        left -= run
    ac = segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + entropy(runs)
    return out + ac * ac_scans + b"\xff\xd9"


def zlib_zeros(n):
    return zlib.compress(bytes(n), 9)


def png_iccp_bomb(profile_bytes):
    """An 8x8 RGB PNG whose iCCP profile inflates to `profile_bytes` zeros."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"iCCP", b"bomb\x00\x00" + zlib_zeros(profile_bytes))
            + chunk(b"IDAT", zlib_zeros(8 * (1 + 3 * 8))) + chunk(b"IEND", b""))


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    images = {
        "rgb.png": image_bytes("PNG"),
        "rgba.png": image_bytes("PNG", "RGBA"),
        "gray16.png": image_bytes("PNG", "I;16"),
        "palette.png": image_bytes("PNG", "P"),
        "interlaced.png": image_bytes("PNG", interlace=1),
        "baseline.jpg": image_bytes("JPEG"),
        "progressive.jpg": image_bytes("JPEG", progressive=True),
        "gray.jpg": image_bytes("JPEG", "L"),
        "cmyk.jpg": image_bytes("JPEG", "CMYK"),
        "exif6.jpg": exif_jpeg(6),
        "a.gif": image_bytes("GIF", "P"),
        "lossless.webp": image_bytes("WEBP", lossless=True),
        "lossy.webp": image_bytes("WEBP", quality=50),
        "a.bmp": image_bytes("BMP"),
        "a.tiff": image_bytes("TIFF"),
        "lzw.tiff": image_bytes("TIFF", compression="tiff_lzw"),
        # Decoder work and metadata budgets: over the 100-scan limit, at it, and a colour
        # profile inflating to 1 MiB (never read).
        "scans-150.jpg": jpeg_scan_bomb(64, 149),
        "scans-100.jpg": jpeg_scan_bomb(64, 99),
        "iccp-1mib.png": png_iccp_bomb(1 << 20),
    }
    for name, data in images.items():
        write("decode_preprocess", name, data)

    exif = Image.Exif()
    exif[0x0112] = 6
    scaled = {
        "baseline-420.jpg": gradient_jpeg("RGB", (80, 64)),
        "baseline-444.jpg": gradient_jpeg("RGB", (64, 64), subsampling=0),
        "baseline-422.jpg": gradient_jpeg("RGB", (48, 40), subsampling=1),
        "progressive.jpg": gradient_jpeg("RGB", (64, 131), progressive=True),
        "gray.jpg": gradient_jpeg("L", (128, 130)),
        "cmyk.jpg": gradient_jpeg("CMYK", (64, 64)),
        "restart.jpg": gradient_jpeg("RGB", (64, 75), restart_marker_rows=1),
        "exif6.jpg": gradient_jpeg("RGB", (96, 33), exif=exif.tobytes()),
        "scans-150.jpg": jpeg_scan_bomb(64, 149),
        "scans-100.jpg": jpeg_scan_bomb(64, 99),
    }
    for name, data in scaled.items():
        write("jpeg_scaled", name, data)

    png_b64 = base64.b64encode(images["rgb.png"]).decode()
    bodies = {
        "json": json.dumps({"image": png_b64, "top_k": 5}),
        "dataurl": json.dumps({"image": "data:image/png;base64," + png_b64}),
        "url": json.dumps({"url": "oss://bucket/key.jpg", "top_k": 1}),
        "event": json.dumps({"events": [{"eventName": "ObjectCreated:PutObject"}]}),
    }
    # request_parse: selector byte (0 json, 1 invoke, 2 inline image, 3 top_k, 4 content type).
    write("request_parse", "json", b"\x00" + bodies["json"].encode())
    write("request_parse", "dataurl", b"\x00" + bodies["dataurl"].encode())
    write("request_parse", "invoke-url", b"\x01" + bodies["url"].encode())
    write("request_parse", "invoke-event", b"\x01" + bodies["event"].encode())
    write("request_parse", "inline", b"\x02data:image/png;base64," + png_b64.encode())
    write("request_parse", "query", b"\x03a=1&top_k=7")
    write("request_parse", "ctype", b"\x04multipart/form-data; boundary=x\n--x")

    # http_request: content-type index, target index, body (see the target's tables).
    multipart = (
        b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
        b"Content-Type: image/png\r\n\r\n" + images["rgb.png"] +
        b"\r\n--B\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n4\r\n--B--\r\n"
    )
    write("http_request", "json", b"\x01\x00" + bodies["json"].encode())
    write("http_request", "raw", b"\x03\x01" + images["rgb.png"])
    write("http_request", "multipart", b"\x04\x00" + multipart)
    write("http_request", "invoke", b"\x02\x02" + bodies["url"].encode())
    write("http_request", "sniffed", b"\x00\x04" + bodies["dataurl"].encode())

    data = ROOT.parent / "tests" / "data"
    for event in sorted(data.glob("oss_event_*.json")):
        write("oss_event", event.name, event.read_bytes())
    write("oss_event", "two-records.json", json.dumps({"events": [
        {"eventName": "ObjectCreated:PutObject", "region": "cn-hangzhou",
         "oss": {"bucket": {"name": "bucket-a"}, "object": {"key": "results/x.jpg.json", "size": 1}}},
        {"eventName": "ObjectRemoved:DeleteObject",
         "oss": {"bucket": {"name": "bucket-a"}, "object": {"key": "a%20b.jpg", "size": "12"}}},
    ]}))

    urls = {
        "oss": "oss://bucket/dir/cat 1+1.jpg",
        "domain": "cn-hangzhou\nhttps://bucket.oss-cn-hangzhou.aliyuncs.com/a%20b/%E6%B5%8B.jpg",
        "internal": "cn-beijing\nhttps://bucket.oss-cn-beijing-internal.aliyuncs.com/k",
        "allowed": "\nhttp://127.0.0.1:9999/bucket/key.png",
        "metadata": "http://169.254.169.254/latest/meta-data",
        "file": "file:///etc/passwd",
        "userinfo": "https://user:pw@bucket.oss-cn-hangzhou.aliyuncs.com/k",
    }
    for name, text in urls.items():
        write("oss_url", name, text)


if __name__ == "__main__":
    main()
