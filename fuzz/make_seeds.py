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
