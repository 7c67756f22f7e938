//! Decode memory shared by concurrent requests: each decode first reserves an upper bound of
//! what it will hold ([`memory_bound`], from the container alone), and waits while the
//! reservations of the decodes already running leave no room ([`DecodeMemory`]).
//!
//! The per-image budget bounds one decode at [`Limits::max_decoded_bytes`]; this bounds all of
//! them together at 1.5 times that, whatever the number of workers: one image at the edge of
//! the budget and ordinary ones beside it, but never two at the edge at once. Ordinary images
//! (a 12 MP photo decoded at reduced size holds about 3 MB) never wait.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use image::ImageFormat;

use super::Limits;
use super::cancel::{Cancel, Interrupted};
use super::container::{self, JpegFrame};

/// How often a waiting decode looks at its [`Cancel`] token.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Bytes a decode of `bytes` holds at most, from the container: its output buffer in the
/// decoder's sample type (PNG: from `IHDR`; GIF, WebP, BMP: 4 bytes a pixel; JPEG: its
/// components at full size) plus a progressive JPEG's coefficients; `limits.max_decoded_bytes` when the container does not say (TIFF),
/// and never more than that (a larger image is refused before any allocation). 0 for what is
/// not an image.
pub(crate) fn memory_bound(bytes: &[u8], limits: &Limits) -> u64 {
    let Ok(format) = image::guess_format(bytes) else {
        return 0;
    };
    let Ok(found) = container::read(format, bytes) else {
        return 0;
    };
    let Some((width, height)) = found.size else {
        return limits.max_decoded_bytes;
    };
    let pixels = u64::from(width) * u64::from(height);
    let bound = match format {
        ImageFormat::Png => pixels.saturating_mul(png_bytes_per_pixel(bytes)),
        ImageFormat::Jpeg => match found.jpeg.as_ref().and_then(|j| j.frame.as_ref()) {
            Some(frame) => jpeg_bound(frame),
            None => limits.max_decoded_bytes,
        },
        _ => pixels.saturating_mul(4),
    };
    bound.min(limits.max_decoded_bytes)
}

/// Output bytes per pixel of a PNG after the image crate's expansion (palette and `tRNS` to
/// RGB(A), sub-byte depths to 8 bits), from `IHDR` (PNG spec §11.2.2): 8 when unknown.
fn png_bytes_per_pixel(bytes: &[u8]) -> u64 {
    let (Some(&depth), Some(&colour)) = (bytes.get(24), bytes.get(25)) else {
        return 8;
    };
    let sample = if depth == 16 { 2 } else { 1 };
    // A `tRNS` chunk may add an alpha channel to gray (0), RGB (2) and palette (3) images.
    let channels = if matches!(colour, 0 | 4) { 2 } else { 4 };
    sample * channels
}

/// A JPEG's output at full size plus, if progressive, its coefficients. Full size even when
/// the decode will be at reduced scale: that decode may fall back to a full-size one (an
/// unsupported variant), and at most `workers` decodes run at once anyway, so a 12 MP photo
/// reserving 36 MB only matters next to an image at the edge of the budget.
fn jpeg_bound(frame: &JpegFrame) -> u64 {
    let components = frame.sampling.len().clamp(1, 4) as u64;
    let output = u64::from(frame.width) * u64::from(frame.height) * components;
    let coefficients = if frame.progressive {
        frame.coefficient_bytes()
    } else {
        0
    };
    output.saturating_add(coefficients)
}

/// The memory reserved by running decodes, shared by every request of a process.
#[derive(Debug)]
pub struct DecodeMemory {
    capacity: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl DecodeMemory {
    /// Room for `capacity` bytes of decodes at once.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The room for decodes under `limits`: 1.5 × `max_decoded_bytes`.
    pub fn for_limits(limits: &Limits) -> Self {
        Self::new(
            limits
                .max_decoded_bytes
                .saturating_add(limits.max_decoded_bytes / 2),
        )
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> u64 {
        *self.lock()
    }

    /// Reserves `bytes` (at most the capacity), waiting while other reservations leave no
    /// room; a reservation always succeeds when nothing else is reserved. Blocks the calling
    /// thread (a decode worker: the wait is for another worker's decode to end) and gives up
    /// when `cancel` fires.
    pub fn reserve(&self, bytes: u64, cancel: &Cancel) -> Result<Reservation<'_>, Interrupted> {
        let bytes = bytes.min(self.capacity);
        let mut used = self.lock();
        while *used > 0 && *used + bytes > self.capacity {
            cancel.check()?;
            used = self
                .freed
                .wait_timeout(used, CANCEL_POLL)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        *used += bytes;
        Ok(Reservation {
            memory: self,
            bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Bytes reserved in a [`DecodeMemory`], given back on drop.
#[derive(Debug)]
pub struct Reservation<'a> {
    memory: &'a DecodeMemory,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self.memory.lock();
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.memory.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn png_header(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&width.to_be_bytes());
        png.extend_from_slice(&height.to_be_bytes());
        png.extend_from_slice(&[depth, colour, 0, 0, 0]);
        png
    }

    #[test]
    fn bounds_follow_the_header_and_stop_at_the_budget() {
        let limits = Limits::DEFAULT;
        assert_eq!(memory_bound(&png_header(100, 10, 8, 2), &limits), 4000);
        assert_eq!(memory_bound(&png_header(100, 10, 16, 6), &limits), 8000);
        assert_eq!(memory_bound(&png_header(100, 10, 1, 0), &limits), 2000);
        assert_eq!(
            memory_bound(&png_header(6000, 6000, 16, 6), &limits),
            limits.max_decoded_bytes
        );
        assert_eq!(memory_bound(b"not an image", &limits), 0);
        assert_eq!(
            memory_bound(b"II*\0\x08\0\0\0", &limits),
            limits.max_decoded_bytes,
            "TIFF sizes are not read here"
        );
    }

    #[test]
    fn jpeg_bounds_count_components_at_full_size_and_coefficients() {
        let frame = JpegFrame {
            width: 4096,
            height: 4096,
            progressive: false,
            sampling: vec![(2, 2), (1, 1), (1, 1)],
        };
        assert_eq!(jpeg_bound(&frame), 4096 * 4096 * 3);
        let progressive = JpegFrame {
            progressive: true,
            ..frame
        };
        // 4:2:0: 1.5 samples a pixel, 2 bytes each.
        assert_eq!(jpeg_bound(&progressive), 4096 * 4096 * 3 + 4096 * 4096 * 3);
    }

    #[test]
    fn a_reservation_waits_for_room_and_a_lone_one_always_fits() {
        let memory = Arc::new(DecodeMemory::new(100));
        let never = Cancel::never();
        let big = memory.reserve(1_000, &never).unwrap();
        assert_eq!(memory.used(), 100, "clamped to the capacity");
        drop(big);
        let first = memory.reserve(70, &never).unwrap();
        let small = memory.reserve(30, &never).unwrap();
        assert_eq!(memory.used(), 100);
        let waited = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (memory, waited) = (Arc::clone(&memory), Arc::clone(&waited));
            std::thread::spawn(move || {
                let _r = memory.reserve(50, &Cancel::never()).unwrap();
                waited.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waited.load(Ordering::SeqCst), "reserved past the capacity");
        drop(first);
        waiter.join().unwrap();
        assert!(waited.load(Ordering::SeqCst));
        drop(small);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_waiting_reservation_gives_up_when_cancelled() {
        let memory = DecodeMemory::new(100);
        let _held = memory.reserve(100, &Cancel::never()).unwrap();
        let (cancel, guard) = Cancel::new(None);
        drop(guard);
        assert_eq!(
            memory.reserve(1, &cancel).unwrap_err(),
            Interrupted::Cancelled
        );
        assert_eq!(memory.used(), 100);
    }
}
