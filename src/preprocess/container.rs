//! What a file's container says, read by us before any decoder runs: the declared size (so
//! every format's oversized header gets the same answer, whichever decoder would have refused
//! it first and how), a JPEG's frame and scan count (decoder work), and the byte ranges a
//! decoder is shown, without the metadata the pipeline never uses.
//!
//! **Metadata.** TorchVision's `Image.open(f).convert("RGB")` never applies a colour profile
//! and never reads text chunks, so decoding them is pure cost: a PNG `iCCP` chunk is
//! zlib-compressed and can inflate a few hundred KB into gigabytes. They are hidden from the
//! decoders here, so they cost nothing:
//! - PNG (W3C PNG 3rd ed. §5.3, §11.3): `iCCP`, `tEXt`, `zTXt`, `iTXt`; an `eXIf` chunk over
//!   [`MAX_EXIF_BYTES`] too (its orientation is then ignored, as for any unusable EXIF);
//! - JPEG (ITU-T T.81 §B.2.4): `APP2`–`APP13`, `APP15` and `COM` segments (ICC profiles, XMP,
//!   Photoshop resources, comments). `APP0` (JFIF), `APP1` (EXIF, for the orientation) and
//!   `APP14` (Adobe, which says how CMYK samples are stored) are kept; a segment is at most
//!   64 KiB by the format.
//!
//! What remains is read uncompressed, so it costs at most its own bytes.
//!
//! **Sizes** are read from: PNG `IHDR` (§11.2.2); GIF logical screen (GIF89a §18); WebP
//! `VP8X` canvas, or the `VP8 ` frame header (RFC 6386 §9.1, 14-bit sizes) or `VP8L` header
//! (WebP lossless spec §3.2, 14-bit sizes minus one) of a simple file; BMP
//! `BITMAPCOREHEADER` (16-bit) or `BITMAPINFOHEADER` and later (signed 32-bit, negative
//! height = top-down); JPEG `SOFn`. TIFF sizes are left to the TIFF decoder, which reads them
//! before allocating anything.

use std::ops::Range;

use image::ImageFormat;

/// Largest PNG `eXIf` chunk read (the orientation is all we use): JPEG's own segment limit.
pub(crate) const MAX_EXIF_BYTES: usize = 64 * 1024;

/// Most byte ranges a file may be cut into by hiding metadata; a file that needs more (over
/// 4 000 metadata chunks between its image data chunks) is refused rather than indexed.
pub(crate) const MAX_KEPT_RANGES: usize = 4096;

/// What the container says, before decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Container {
    /// `(width, height)` the header declares, when we read it for this format.
    pub size: Option<(u32, u32)>,
    /// Byte ranges the decoder is shown; `None` = the whole file.
    pub kept: Option<Vec<Range<usize>>>,
    /// For a JPEG: its marker structure.
    pub jpeg: Option<JpegStructure>,
}

/// Why the container cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerError {
    /// Malformed where we read it.
    Corrupt(String),
    /// More metadata chunks than [`MAX_KEPT_RANGES`] allows.
    TooManyChunks(usize),
}

/// A JPEG's frame and scans, from its markers (ITU-T T.81 §B.1–B.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JpegStructure {
    /// The markers run from SOI to an EOI.
    pub complete: bool,
    /// Start-of-scan markers seen.
    pub scans: u64,
    /// The first frame header.
    pub frame: Option<JpegFrame>,
}

/// A JPEG frame header (`SOFn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JpegFrame {
    /// Samples per line.
    pub width: u32,
    /// Lines.
    pub height: u32,
    /// `SOF2`/`SOF6`/`SOF10`/`SOF14`: progressive DCT, whose decoders keep every coefficient.
    pub progressive: bool,
    /// `(horizontal, vertical)` sampling factor of each component.
    pub sampling: Vec<(u8, u8)>,
}

impl JpegFrame {
    /// Bytes of DCT coefficients a progressive decoder keeps for the whole image: 64 `i16`
    /// per block of each component, over whole MCUs (zune-jpeg and jpeg-decoder both allocate
    /// that much before the first scan).
    pub fn coefficient_bytes(&self) -> u64 {
        let h_max = u64::from(self.sampling.iter().map(|s| s.0).max().unwrap_or(1).max(1));
        let v_max = u64::from(self.sampling.iter().map(|s| s.1).max().unwrap_or(1).max(1));
        let (width, height) = (u64::from(self.width), u64::from(self.height));
        if self.sampling.len() == 1 {
            return width.div_ceil(8) * height.div_ceil(8) * 128;
        }
        let mcus_x = width.div_ceil(8 * h_max);
        let mcus_y = height.div_ceil(8 * v_max);
        self.sampling
            .iter()
            .map(|&(h, v)| mcus_x * u64::from(h) * mcus_y * u64::from(v) * 128)
            .sum()
    }
}

/// Reads the container of a file of `format`.
pub(crate) fn read(format: ImageFormat, bytes: &[u8]) -> Result<Container, ContainerError> {
    match format {
        ImageFormat::Png => png(bytes),
        ImageFormat::Jpeg => Ok(jpeg(bytes)),
        ImageFormat::Gif => Ok(Container {
            size: gif_size(bytes),
            ..Container::default()
        }),
        ImageFormat::WebP => Ok(Container {
            size: webp_size(bytes),
            ..Container::default()
        }),
        ImageFormat::Bmp => Ok(Container {
            size: bmp_size(bytes)?,
            ..Container::default()
        }),
        _ => Ok(Container::default()),
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 3)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], 0]))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Collects kept ranges: everything except the `skip`ped ones, merged.
struct Ranges {
    kept: Vec<Range<usize>>,
    from: usize,
    skipped: bool,
}

impl Ranges {
    fn new() -> Self {
        Self {
            kept: Vec::new(),
            from: 0,
            skipped: false,
        }
    }

    fn skip(&mut self, range: Range<usize>) -> Result<(), ContainerError> {
        if range.start > self.from {
            if self.kept.len() >= MAX_KEPT_RANGES {
                return Err(ContainerError::TooManyChunks(MAX_KEPT_RANGES));
            }
            self.kept.push(self.from..range.start);
        }
        self.from = self.from.max(range.end);
        self.skipped = true;
        Ok(())
    }

    fn finish(mut self, len: usize) -> Option<Vec<Range<usize>>> {
        if !self.skipped {
            return None;
        }
        if self.from < len {
            self.kept.push(self.from..len);
        }
        Some(self.kept)
    }
}

/// PNG: `IHDR` size, and the file without the chunks we never use.
fn png(bytes: &[u8]) -> Result<Container, ContainerError> {
    const SIGNATURE: usize = 8;
    let size = match (bytes.get(12..16), be32(bytes, 16), be32(bytes, 20)) {
        (Some(b"IHDR"), Some(w), Some(h)) => Some((w, h)),
        _ => None,
    };
    let mut ranges = Ranges::new();
    let mut at = SIGNATURE;
    // Chunk: length (4, big-endian), type (4), data, CRC (4).
    while let (Some(length), Some(kind)) = (be32(bytes, at), bytes.get(at + 4..at + 8)) {
        let end = at
            .saturating_add(12)
            .saturating_add(length as usize)
            .min(bytes.len());
        let unused = matches!(kind, b"iCCP" | b"tEXt" | b"zTXt" | b"iTXt")
            || (kind == b"eXIf" && length as usize > MAX_EXIF_BYTES);
        if unused {
            ranges.skip(at..end)?;
        }
        if kind == b"IEND" {
            break;
        }
        at = end;
    }
    Ok(Container {
        size,
        kept: ranges.finish(bytes.len()),
        jpeg: None,
    })
}

/// GIF: the logical screen size (frames larger than it are bounded by the decoder's budget).
fn gif_size(bytes: &[u8]) -> Option<(u32, u32)> {
    Some((le16(bytes, 6)?.into(), le16(bytes, 8)?.into()))
}

/// WebP: the `VP8X` canvas, else the size in the single `VP8 ` / `VP8L` chunk.
fn webp_size(bytes: &[u8]) -> Option<(u32, u32)> {
    // RIFF header (12 bytes), then the first chunk: fourcc (4), size (4), data.
    let chunk = bytes.get(12..16)?;
    let data = 20;
    match chunk {
        b"VP8X" => Some((le24(bytes, data + 4)? + 1, le24(bytes, data + 7)? + 1)),
        // Frame tag (3 bytes), start code 9D 01 2A, then 14-bit width and height.
        b"VP8 " if bytes.get(data + 3..data + 6) == Some(&[0x9D, 0x01, 0x2A]) => Some((
            u32::from(le16(bytes, data + 6)? & 0x3FFF),
            u32::from(le16(bytes, data + 8)? & 0x3FFF),
        )),
        // Signature 0x2F, then width − 1 (14 bits) and height − 1 (14 bits), LSB first.
        b"VP8L" if bytes.get(data) == Some(&0x2F) => {
            let bits = le32(bytes, data + 1)?;
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        _ => None,
    }
}

/// BMP: the info header's size (`|height|`: negative means top-down rows).
fn bmp_size(bytes: &[u8]) -> Result<Option<(u32, u32)>, ContainerError> {
    // File header (14 bytes), then the info header, whose first field is its own size.
    let Some(header_size) = le32(bytes, 14) else {
        return Ok(None);
    };
    if header_size == 12 {
        return Ok(le16(bytes, 18)
            .zip(le16(bytes, 20))
            .map(|(w, h)| (w.into(), h.into())));
    }
    let (Some(width), Some(height)) = (le32(bytes, 18), le32(bytes, 22)) else {
        return Ok(None);
    };
    let (width, height) = (width as i32, height as i32);
    if width < 0 || height == i32::MIN {
        return Err(ContainerError::Corrupt(format!(
            "the BMP header declares an invalid {width}×{height} image"
        )));
    }
    Ok(Some((width as u32, height.unsigned_abs())))
}

/// JPEG: markers from SOI: scan count, first frame, completeness, and the segments we hide.
/// After a SOS header the entropy-coded data runs to the next `FF xx` that is neither a
/// stuffed `FF 00` nor a restart marker `FF D0`–`FF D7`. Bytes after EOI are ignored, as
/// libjpeg does.
fn jpeg(bytes: &[u8]) -> Container {
    let mut structure = JpegStructure::default();
    let mut ranges = Ranges::new();
    let mut kept_ok = true;
    walk_jpeg(bytes, &mut structure, &mut |segment| {
        if kept_ok && ranges.skip(segment).is_err() {
            kept_ok = false;
        }
    });
    let size = structure.frame.as_ref().map(|f| (f.width, f.height));
    Container {
        size,
        // Over the range limit (64 KiB segments: only in a file of over 256 MB), show all.
        kept: if kept_ok {
            ranges.finish(bytes.len())
        } else {
            None
        },
        jpeg: Some(structure),
    }
}

/// Walks the markers, filling `structure` and calling `hide` with each unused segment.
fn walk_jpeg(bytes: &[u8], structure: &mut JpegStructure, hide: &mut dyn FnMut(Range<usize>)) {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.get(..2) != Some(&[0xFF, SOI]) {
        return;
    }
    let mut at = 2;
    loop {
        // A marker: one or more 0xFF fill bytes, then the code.
        let marker_start = at;
        if bytes.get(at) != Some(&0xFF) {
            return;
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at) else {
            return;
        };
        at += 1;
        match code {
            EOI => {
                structure.complete = true;
                return;
            }
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(&[hi, lo]) = bytes.get(at..at + 2) else {
            return;
        };
        let segment_end = at + usize::from(u16::from_be_bytes([hi, lo]));
        match code {
            // SOF0–SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) && structure.frame.is_none() => {
                structure.frame = frame(code, bytes.get(at + 2..segment_end));
            }
            // APP2–APP13, APP15, COM.
            0xE2..=0xED | 0xEF | 0xFE => hide(marker_start..segment_end.min(bytes.len())),
            _ => {}
        }
        at = segment_end;
        if code == SOS {
            structure.scans += 1;
            match entropy_coded_end(bytes, at) {
                Some(end) => at = end,
                None => return,
            }
        }
    }
}

/// The frame header after its length: precision (1), height (2), width (2), components (1),
/// then per component: id (1), sampling `H << 4 | V` (1), table (1).
fn frame(code: u8, header: Option<&[u8]>) -> Option<JpegFrame> {
    let header = header?;
    let height = u16::from_be_bytes([*header.get(1)?, *header.get(2)?]);
    let width = u16::from_be_bytes([*header.get(3)?, *header.get(4)?]);
    let count = usize::from(*header.get(5)?);
    let sampling = (0..count)
        .map(|i| header.get(6 + 3 * i + 1).map(|s| (s >> 4, s & 0x0F)))
        .collect::<Option<Vec<_>>>()?;
    Some(JpegFrame {
        width: width.into(),
        height: height.into(),
        progressive: matches!(code, 0xC2 | 0xC6 | 0xCA | 0xCE),
        sampling,
    })
}

/// Offset of the marker that ends the entropy-coded data starting at `from`.
fn entropy_coded_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, code];
        s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    /// SOI, APP1, APP2, SOF2 (3 components, 4:2:0), SOS + entropy data with a stuffed
    /// `FF 00` and a restart marker, a second SOS, COM, then EOI.
    fn tiny_jpeg() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend(segment(0xE1, b"Exif\0\0xx"));
        j.extend(segment(0xE2, b"ICC_PROFILE\0big"));
        j.extend(segment(
            0xC2,
            &[8, 0, 16, 0, 32, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1],
        ));
        j.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        j.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        j.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        j.extend([0x78]);
        j.extend(segment(0xFE, b"comment"));
        j.extend([0xFF, 0xD9]);
        j
    }

    #[test]
    fn a_jpeg_is_complete_only_up_to_its_eoi() {
        let full = tiny_jpeg();
        assert!(jpeg(&full).jpeg.unwrap().complete);
        for cut in 0..full.len() {
            assert!(!jpeg(&full[..cut]).jpeg.unwrap().complete, "cut at {cut}");
        }
        let mut trailing = full.clone();
        trailing.extend(b"trailing bytes after EOI are ignored");
        assert!(jpeg(&trailing).jpeg.unwrap().complete);
    }

    #[test]
    fn jpeg_scans_frame_and_hidden_segments() {
        let bytes = tiny_jpeg();
        let container = jpeg(&bytes);
        let structure = container.jpeg.clone().unwrap();
        assert_eq!(structure.scans, 2);
        let frame = structure.frame.unwrap();
        assert_eq!((frame.width, frame.height), (32, 16));
        assert!(frame.progressive);
        assert_eq!(frame.sampling, [(2, 2), (1, 1), (1, 1)]);
        // 2×1 MCUs of 16×16: luma 4 blocks each, chroma 1 each → 12 blocks × 128 bytes.
        assert_eq!(frame.coefficient_bytes(), 12 * 128);
        let kept = container.kept.unwrap();
        let shown: Vec<u8> = kept
            .iter()
            .flat_map(|r| bytes[r.clone()].to_vec())
            .collect();
        let hidden_icc = segment(0xE2, b"ICC_PROFILE\0big");
        let hidden_com = segment(0xFE, b"comment");
        assert_eq!(
            shown.len(),
            bytes.len() - hidden_icc.len() - hidden_com.len()
        );
        assert!(!shown.windows(11).any(|w| w == b"ICC_PROFILE"));
        assert!(shown.windows(4).any(|w| w == b"Exif"));
        let reparsed = jpeg(&shown).jpeg.unwrap();
        assert!(reparsed.complete);
        assert_eq!(reparsed.scans, 2);
    }

    #[test]
    fn gray_coefficients_count_whole_blocks() {
        let frame = JpegFrame {
            width: 17,
            height: 8,
            progressive: true,
            sampling: vec![(2, 2)],
        };
        assert_eq!(frame.coefficient_bytes(), 3 * 128);
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]); // CRC: not checked here
        c
    }

    #[test]
    fn png_size_and_unused_chunks_hidden() {
        let mut ihdr = 300u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&200u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &ihdr));
        let kept_head = png.len();
        png.extend(png_chunk(b"iCCP", b"profile\0\0zzzz"));
        png.extend(png_chunk(b"tEXt", b"k\0v"));
        png.extend(png_chunk(b"eXIf", b"MM\0*small"));
        png.extend(png_chunk(b"eXIf", &vec![0; MAX_EXIF_BYTES + 1]));
        png.extend(png_chunk(b"IDAT", b"data"));
        png.extend(png_chunk(b"IEND", b""));
        let container = png_container(&png);
        assert_eq!(container.size, Some((300, 200)));
        let kept = container.kept.unwrap();
        let shown: Vec<u8> = kept.iter().flat_map(|r| png[r.clone()].to_vec()).collect();
        let mut expected = png[..kept_head].to_vec();
        expected.extend(png_chunk(b"eXIf", b"MM\0*small"));
        expected.extend(png_chunk(b"IDAT", b"data"));
        expected.extend(png_chunk(b"IEND", b""));
        assert_eq!(shown, expected);
    }

    fn png_container(bytes: &[u8]) -> Container {
        png(bytes).unwrap()
    }

    #[test]
    fn a_png_without_unused_chunks_is_shown_whole() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
        png.extend(png_chunk(b"IEND", b""));
        assert_eq!(png_container(&png).kept, None);
        assert_eq!(png_container(&png).size, Some((1, 1)));
    }

    #[test]
    fn too_many_metadata_chunks_between_image_data_are_refused() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for _ in 0..=MAX_KEPT_RANGES {
            png.extend(png_chunk(b"IDAT", b""));
            png.extend(png_chunk(b"tEXt", b""));
        }
        assert_eq!(
            super::png(&png).unwrap_err(),
            ContainerError::TooManyChunks(MAX_KEPT_RANGES)
        );
    }

    #[test]
    fn webp_and_bmp_and_gif_sizes() {
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0x00, 0x01, 0x00]);
        assert_eq!(webp_size(&vp8x), Some((1 << 24, 257)));
        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        // width − 1 = 99, height − 1 = 49.
        vp8l.extend_from_slice(&(99u32 | (49 << 14)).to_le_bytes());
        assert_eq!(webp_size(&vp8l), Some((100, 50)));
        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\x9d\x01\x2a".to_vec();
        vp8.extend_from_slice(&(640u16 | 0x4000).to_le_bytes()); // scale bits ignored
        vp8.extend_from_slice(&480u16.to_le_bytes());
        assert_eq!(webp_size(&vp8), Some((640, 480)));
        assert_eq!(webp_size(b"RIFF\0\0\0\0WEBPVP8L"), None);

        let mut bmp = vec![0u8; 26];
        bmp[14..18].copy_from_slice(&40u32.to_le_bytes());
        bmp[18..22].copy_from_slice(&100_000i32.to_le_bytes());
        bmp[22..26].copy_from_slice(&(-3i32).to_le_bytes());
        assert_eq!(bmp_size(&bmp), Ok(Some((100_000, 3))));
        bmp[18..22].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(bmp_size(&bmp).is_err());
        let mut core = vec![0u8; 22];
        core[14..18].copy_from_slice(&12u32.to_le_bytes());
        core[18..20].copy_from_slice(&640u16.to_le_bytes());
        core[20..22].copy_from_slice(&480u16.to_le_bytes());
        assert_eq!(bmp_size(&core), Ok(Some((640, 480))));
        assert_eq!(bmp_size(&core[..20]), Ok(None));

        assert_eq!(gif_size(b"GIF89a\x10\x00\x20\x00"), Some((16, 32)));
    }
}
