//! Generators of hostile and degenerate image files, written byte by byte from the format
//! specifications so each one is exactly the attack it is named after:
//!
//! - PNG: W3C PNG spec (2nd ed.) §5.3 chunk layout, §11.2.2 IHDR, CRC-32 of ISO 3309;
//!   zlib RFC 1950 (header 0x78 0x01, Adler-32 trailer), deflate RFC 1951 §3.2.6 fixed Huffman
//!   codes (literal 0 = 8-bit 0x30, length 258 = symbol 285 = 8-bit 0xC5, distance 1 = 5-bit 0,
//!   end of block = 7-bit 0).
//! - GIF: GIF89a spec §18 (logical screen descriptor: width/height u16 LE at offset 6).
//! - TIFF 6.0 §2 (header `II*\0`, IFD entries of 12 bytes: tag, type, count, value).
//! - WebP container spec (RIFF, `VP8X` chunk: canvas width−1 / height−1 as 24-bit LE).
//! - JPEG ITU T.81 §B.2.2 (SOF0: marker FFC0, length, precision, height u16 BE, width u16 BE);
//!   Exif 2.32 §4.5.4 (APP1 `Exif\0\0` + TIFF structure, orientation tag 0x0112).
//! - BMP: BITMAPINFOHEADER (width/height i32 LE at offsets 18/22).

use std::io::Cursor;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// CRC-32 (ISO 3309 / ITU-T V.42, polynomial 0xEDB88320 reflected), as PNG chunks use.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// One PNG chunk: length, type, data, CRC over type + data.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
    out
}

/// A PNG with the given IHDR fields, extra chunks before IDAT, and IDAT payload.
pub fn png_file(
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
    before_idat: &[Vec<u8>],
    idat: &[u8],
) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth, colour type, compression 0, filter 0, interlace 0
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    for chunk in before_idat {
        out.extend_from_slice(chunk);
    }
    out.extend(png_chunk(b"IDAT", idat));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// LSB-first bit writer for deflate.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.filled;
        self.filled += count;
        while self.filled >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    /// Huffman codes are sent most significant bit first (RFC 1951 §3.1.1).
    fn put_code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A complete zlib stream that inflates to `n` zero bytes (n ≥ 1): one fixed-Huffman block of a
/// literal 0 followed by length-258/distance-1 copies, i.e. ~13 bits per 258 output bytes.
pub fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        filled: 0,
    };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = 01, fixed Huffman
    bits.put_code(0x30, 8); // literal 0
    let rest = n - 1;
    for _ in 0..rest / 258 {
        bits.put_code(0xC5, 8); // length 258 (symbol 285, no extra bits)
        bits.put_code(0, 5); // distance 1 (code 0, no extra bits)
    }
    for _ in 0..rest % 258 {
        bits.put_code(0x30, 8);
    }
    bits.put_code(0, 7); // end of block (symbol 256)
    let mut out = bits.finish();
    // Adler-32 of n zeros: a stays 1, b adds a (=1) per byte.
    let adler = (((n % 65_521) as u32) << 16) | 1;
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

/// A real PNG decompression bomb: 1-bit greyscale `width × height`, every row filter 0 and
/// every pixel 0, the whole image data present as one tiny zlib stream.
pub fn png_zero_bomb(width: u32, height: u32) -> Vec<u8> {
    let row = 1 + u64::from(width).div_ceil(8);
    png_file(
        width,
        height,
        1,
        0,
        &[],
        &zlib_zeros(row * u64::from(height)),
    )
}

/// A PNG whose header declares `width × height` (8-bit RGB) followed by only one row's worth of
/// image data, as an attacker would send to make a server allocate the declared size.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    png_file(width, height, 8, 2, &[], &zlib_zeros(1 + 3 * 16))
}

/// A deterministic colourful picture.
pub fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x.wrapping_mul(7) & 0xff) as u8,
            (y.wrapping_mul(5) & 0xff) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    })
}

/// `picture` encoded with the image crate's encoder for `format`.
pub fn encode(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let image = picture(width, height);
    if format == ImageFormat::WebP {
        // The WebP encoder wants RGBA or RGB; RGB is fine.
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut out, format)
            .expect("encode webp");
    } else {
        image.write_to(&mut out, format).expect("encode");
    }
    out.into_inner()
}

/// An animated GIF of `frames` frames of `side × side` pixels.
pub fn gif_frames(side: u32, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 30);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        let frames = (0..frames).map(|i| {
            let shade = (i % 251) as u8;
            let image = RgbaImage::from_fn(side, side, |x, _| Rgba([shade, x as u8, 0, 255]));
            Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(10, 1))
        });
        encoder.encode_frames(frames).expect("encode gif frames");
    }
    out
}

/// A small GIF whose logical screen claims `width × height`.
pub fn gif_with_screen(width: u16, height: u16) -> Vec<u8> {
    let mut gif = gif_frames(8, 1);
    gif[6..8].copy_from_slice(&width.to_le_bytes());
    gif[8..10].copy_from_slice(&height.to_le_bytes());
    gif
}

/// A little-endian uncompressed greyscale TIFF declaring `width × height` with a 16-byte strip.
pub fn tiff_declaring(width: u32, height: u32) -> Vec<u8> {
    // (tag, type, count, value); type 3 = SHORT, 4 = LONG.
    let strip_offset = 8 + 2 + 9 * 12 + 4;
    let entries: [(u16, u16, u32, u32); 9] = [
        (256, 4, 1, width),        // ImageWidth
        (257, 4, 1, height),       // ImageLength
        (258, 3, 1, 8),            // BitsPerSample
        (259, 3, 1, 1),            // Compression: none
        (262, 3, 1, 1),            // PhotometricInterpretation: BlackIsZero
        (273, 4, 1, strip_offset), // StripOffsets
        (277, 3, 1, 1),            // SamplesPerPixel
        (278, 4, 1, height),       // RowsPerStrip
        (279, 4, 1, 16),           // StripByteCounts
    ];
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    out.extend_from_slice(&[0x80; 16]);
    out
}

/// A WebP whose `VP8X` chunk declares a `width × height` canvas (each at most 2^24), followed by
/// a real lossless 8×8 bitstream.
pub fn webp_declaring(width: u32, height: u32) -> Vec<u8> {
    let small = encode(8, 8, ImageFormat::WebP);
    // small = RIFF size WEBP <VP8L chunk...>; keep the image chunk.
    let image_chunk = &small[12..];
    let mut vp8x = b"VP8X".to_vec();
    vp8x.extend_from_slice(&10u32.to_le_bytes());
    vp8x.extend_from_slice(&[0, 0, 0, 0]); // flags + reserved
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(&vp8x);
    body.extend_from_slice(image_chunk);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Index of the first JPEG marker `0xFF code` at or after `from`.
fn find_marker(jpeg: &[u8], code: u8, from: usize) -> Option<usize> {
    (from..jpeg.len().saturating_sub(1)).find(|&i| jpeg[i] == 0xFF && jpeg[i + 1] == code)
}

/// A real baseline JPEG whose SOF0 header is rewritten to declare `width × height`.
pub fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = encode(16, 16, ImageFormat::Jpeg);
    let sof = find_marker(&jpeg, 0xC0, 2).expect("SOF0 in an image-crate JPEG");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// A real JPEG with an APP1 segment carrying `exif` (the bytes after `Exif\0\0`) right after SOI.
pub fn jpeg_with_exif(width: u32, height: u32, exif: &[u8]) -> Vec<u8> {
    let jpeg = encode(width, height, ImageFormat::Jpeg);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(exif);
    assert!(payload.len() + 2 <= 0xFFFF, "APP1 segment too long");
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A little-endian Exif TIFF structure whose IFD0 holds `entries` (tag, type, count, value).
pub fn exif_ifd(entries: &[(u16, u16, u32, u32)], declared_count: Option<u16>) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    let count = declared_count.unwrap_or(entries.len() as u16);
    out.extend_from_slice(&count.to_le_bytes());
    for &(tag, kind, n, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&8u32.to_le_bytes()); // next IFD = IFD0 again: a loop
    out
}

/// A 24-bit BMP whose info header declares `width × height` over a 4×4 pixel array.
pub fn bmp_declaring(width: i32, height: i32) -> Vec<u8> {
    let mut bmp = encode(4, 4, ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&width.to_le_bytes());
    bmp[22..26].copy_from_slice(&height.to_le_bytes());
    bmp
}

/// The first `num/den` of `bytes`.
pub fn truncated(bytes: &[u8], num: usize, den: usize) -> Vec<u8> {
    bytes[..bytes.len() * num / den].to_vec()
}

#[cfg(test)]
mod generator_tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        // The standard check value of CRC-32/ISO-HDLC for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn zlib_zeros_inflates_to_the_requested_length() {
        // Decoded by the png crate through the image crate: a 64×64 1-bit bomb is a real PNG.
        let png = png_zero_bomb(64, 64);
        let image = image::load_from_memory(&png).expect("decodes");
        assert_eq!((image.width(), image.height()), (64, 64));
        assert!(image.to_luma8().pixels().all(|p| p.0[0] == 0));
    }
}
