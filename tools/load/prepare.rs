//! Writes what `tools/load/run.sh` needs into a directory: the synthetic ResNet-18 weights
//! (`model.safetensors`, same names and shapes as TorchVision's, see `src/synthetic.rs`) and the
//! request bodies of the load mix, one file per body with its expected status in the name.
//!
//! ```text
//! cargo run --release --example load-prepare -- <dir> <max-body-bytes> [hostile]
//! ```
//!
//! Bodies (`<status>-<name>.<ext>`, Content-Type chosen by `mix.lua` from the extension):
//! valid images raw (JPEG, PNG), as JSON base64 and as multipart; invalid bodies (not an image,
//! malformed JSON, bad base64, a truncated PNG); and an oversized body one and a half times
//! `max-body-bytes`.
//!
//! With `hostile`, also the hostile files of `tests/hostile/images.rs` (listed in
//! `<dir>/hostile.txt`, which `mix.lua` adds to its mix): each budget of the README's
//! "Per-image budget" at its edge, answered 200 (`200-edge-*`), and just past it or plainly
//! hostile, answered 413 (`413-*`). `tools/load/worst_case.sh` sends the edge files
//! concurrently. They need a body limit of 8 MiB.

use std::io::Cursor;
use std::path::Path;
use std::process::ExitCode;

use base64::Engine;
use image::{ImageFormat, Rgb, RgbImage};
use resnet18_fc::synthetic::SyntheticWeights;

#[allow(dead_code)] // the load tool uses a few of the test generators
#[path = "../../tests/hostile/images.rs"]
mod images;

/// Multipart boundary used in `200-multipart.form` (mix.lua sends it with this boundary).
const BOUNDARY: &str = "loadtestboundary7MA4YWxk";

fn picture(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            ((x * 3 + seed) & 0xff) as u8,
            ((y * 5 + seed * 7) & 0xff) as u8,
            ((x ^ y ^ seed) & 0xff) as u8,
        ])
    })
}

fn encode(image: &RgbImage, format: ImageFormat) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format)?;
    Ok(out.into_inner())
}

fn multipart(image: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(image);
    body.extend_from_slice(
        format!(
            "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n5\r\n\
             --{BOUNDARY}--\r\n"
        )
        .as_bytes(),
    );
    body
}

fn prepare(dir: &Path, max_body: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    SyntheticWeights::generate().write_safetensors(&dir.join("model.safetensors"))?;
    let photo = encode(&picture(640, 480, 1), ImageFormat::Jpeg)?;
    let small = encode(&picture(320, 240, 2), ImageFormat::Jpeg)?;
    let png = encode(&picture(300, 300, 3), ImageFormat::Png)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&small);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("200-photo.jpg", photo),
        ("200-small.jpg", small.clone()),
        ("200-square.png", png.clone()),
        (
            "200-base64.json",
            format!(r#"{{"image": "{b64}", "top_k": 3}}"#).into_bytes(),
        ),
        ("200-multipart.form", multipart(&small)),
        (
            "415-not-an-image.bin",
            b"this is not an image at all\n".repeat(40),
        ),
        (
            "400-malformed.json",
            br#"{"image": "abc", "top_k": "#.to_vec(),
        ),
        (
            "400-bad-base64.json",
            br#"{"image": "@@@ not base64 @@@"}"#.to_vec(),
        ),
        ("400-truncated.png", png[..png.len() / 3].to_vec()),
        ("413-oversized.bin", vec![0x5a; max_body + max_body / 2]),
    ];
    for (name, body) in bodies {
        std::fs::write(dir.join(name), body)?;
    }
    Ok(())
}

/// The hostile bodies: name (expected status first) and bytes.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>)> {
    // 6324 × 6324 = 39 992 976 pixels: the largest square within 40 MP.
    const SIDE: u32 = 6324;
    vec![
        // At the edges of the budget (120 MB decoded, 100 scans, 40 MP).
        (
            "200-edge-rgb8-40mp.png",
            images::png_file(
                SIDE,
                SIDE,
                8,
                2,
                &[],
                &images::zlib_zeros((1 + 3 * u64::from(SIDE)) * u64::from(SIDE)),
            ),
        ),
        (
            "200-edge-rgba16-15mp.png",
            images::png_rgba16_bomb(3872, 3872),
        ),
        (
            "200-edge-progressive-100-scans.jpg",
            images::jpeg_scan_bomb(SIDE as u16, 99),
        ),
        (
            "200-edge-iccp-600mb.png",
            images::png_iccp_bomb(8, 8, 600_000_000),
        ),
        // Past them.
        ("413-scans-30001.jpg", images::jpeg_scan_bomb(4096, 30_000)),
        ("413-rgba16-40mp.png", images::png_rgba16_bomb(SIDE, SIDE)),
        (
            "413-progressive-444-coefficients.jpg",
            images::jpeg_progressive_declaring(6000, 6000, 3),
        ),
        (
            "413-bmp-declaring.bmp",
            images::bmp_declaring(100_000, 100_000),
        ),
        (
            "413-webp-declaring.webp",
            images::webp_declaring(1 << 24, 1 << 24),
        ),
    ]
}

fn prepare_hostile(dir: &Path) -> anyhow::Result<()> {
    let mut list = String::new();
    for (name, body) in hostile_bodies() {
        std::fs::write(dir.join(name), body)?;
        list.push_str(name);
        list.push('\n');
    }
    std::fs::write(dir.join("hostile.txt"), list)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(max_body)) = (args.get(1), args.get(2).and_then(|m| m.parse().ok()))
    else {
        eprintln!("usage: load-prepare <dir> <max-body-bytes> [hostile]");
        return ExitCode::from(2);
    };
    let hostile = args.get(3).map(String::as_str) == Some("hostile");
    let result = prepare(Path::new(dir), max_body).and_then(|()| {
        if hostile {
            prepare_hostile(Path::new(dir))
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-prepare: {e:#}");
            ExitCode::FAILURE
        }
    }
}
