//! Giving up on an image: a [`Cancel`] token (set when whoever waits for the result is gone)
//! with an optional deadline, and the [`GuardedReader`] through which every decoder reads
//! its input, which fails the next read once the token is set or the deadline has passed.
//!
//! The decoders are other crates' code and cannot be stopped from outside, but they all pull
//! their input through `Read`/`BufRead`: the PNG, GIF, TIFF, BMP and WebP decoders read
//! while they decode (at least once per row or strip), and `jpeg-decoder` (the reduced-size
//! JPEG path) reads the entropy-coded data byte by byte, so at least once per scan. A failed
//! read ends their work with an I/O error, which [`Cancel::check`] then names. zune-jpeg
//! (full-size JPEGs) reads the whole file before decoding; its work is bounded by the scan
//! and size limits instead, and the token is checked again when it returns.
//!
//! The reader can also hide byte ranges of the file (metadata chunks the pipeline never
//! uses, see `super::metadata`): it presents the kept ranges as one contiguous stream.

use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why an image was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Interrupted {
    /// Whoever asked for the result is gone (the client disconnected).
    #[error("the request was abandoned by its client; its image was not processed further")]
    Cancelled,
    /// The request's deadline (the function timeout) passed.
    #[error("the request's deadline passed before its image was processed")]
    DeadlineExceeded,
}

/// A cancellation flag plus an optional deadline, checked by the decoders' reader and between
/// the stages of preprocessing. Cheap to clone; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Option<Arc<AtomicBool>>,
    deadline: Option<Instant>,
}

impl Cancel {
    /// A token that never fires (tools, tests, the CLI).
    pub fn never() -> Self {
        Self::default()
    }

    /// A token that fires when the returned [`CancelOnDrop`] is dropped, or at `deadline`.
    pub fn new(deadline: Option<Instant>) -> (Self, CancelOnDrop) {
        let flag = Arc::new(AtomicBool::new(false));
        let token = Self {
            flag: Some(Arc::clone(&flag)),
            deadline,
        };
        (token, CancelOnDrop(flag))
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// `Err` once the token was cancelled or its deadline has passed.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_cancelled() {
            return Err(Interrupted::Cancelled);
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Interrupted::DeadlineExceeded),
            _ => Ok(()),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.flag
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

/// Cancels its [`Cancel`] token when dropped: held by the request (an async task), so a request
/// whose future is dropped (client gone) stops the CPU work done on its behalf.
#[derive(Debug)]
pub struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How many reads go by between two deadline checks (the flag is checked on every read; the
/// clock, at some 20 ns a call, less often: `jpeg-decoder` reads one byte at a time).
const CLOCK_EVERY: u32 = 256;

/// A `Read + BufRead + Seek` view of `kept` ranges of `bytes`, laid end to end, that fails
/// with an I/O error once `cancel` fires.
pub(crate) struct GuardedReader<'a> {
    bytes: &'a [u8],
    /// Kept ranges of `bytes`, in order, non-overlapping.
    kept: Vec<Range<usize>>,
    /// `starts[i]`: position of `kept[i]` in the presented stream; last = total length.
    starts: Vec<u64>,
    /// Position in the presented stream.
    pos: u64,
    /// Index into `kept` of the range holding `pos` (or `kept.len()` at the end).
    segment: usize,
    cancel: Cancel,
    reads: u32,
}

impl<'a> GuardedReader<'a> {
    /// All of `bytes`.
    pub(crate) fn new(bytes: &'a [u8], cancel: Cancel) -> Self {
        let whole = 0..bytes.len();
        Self::with_ranges(bytes, Vec::from([whole]), cancel)
    }

    /// Only the `kept` ranges of `bytes` (sorted, non-overlapping, within `bytes`; ranges
    /// outside are clamped).
    pub(crate) fn with_ranges(bytes: &'a [u8], kept: Vec<Range<usize>>, cancel: Cancel) -> Self {
        let kept: Vec<Range<usize>> = kept
            .into_iter()
            .map(|r| r.start.min(bytes.len())..r.end.min(bytes.len()))
            .filter(|r| r.start < r.end)
            .collect();
        let mut starts = Vec::with_capacity(kept.len() + 1);
        let mut total = 0u64;
        for range in &kept {
            starts.push(total);
            total += range.len() as u64;
        }
        starts.push(total);
        Self {
            bytes,
            kept,
            starts,
            pos: 0,
            segment: 0,
            cancel,
            reads: 0,
        }
    }

    /// The token this reader checks.
    pub(crate) fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Length of the presented stream.
    pub(crate) fn len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    fn guard(&mut self) -> io::Result<()> {
        self.reads = self.reads.wrapping_add(1);
        let result = if self.reads.is_multiple_of(CLOCK_EVERY) {
            self.cancel.check()
        } else if self.cancel.is_cancelled() {
            Err(Interrupted::Cancelled)
        } else {
            Ok(())
        };
        result.map_err(io::Error::other)
    }

    /// The unread rest of the current range.
    fn current(&self) -> &'a [u8] {
        let Some(range) = self.kept.get(self.segment) else {
            return &[];
        };
        let offset = (self.pos - self.starts[self.segment]) as usize;
        &self.bytes[range.start + offset..range.end]
    }

    fn seek_to(&mut self, pos: u64) {
        self.pos = pos.min(self.len());
        // The last range starting at or before `pos`; the end when `pos` is the length.
        self.segment = match self.starts.binary_search(&self.pos) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
    }
}

impl Read for GuardedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for GuardedReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.guard()?;
        Ok(self.current())
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.current().len());
        self.seek_to(self.pos + amount as u64);
    }
}

impl Seek for GuardedReader<'_> {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        let target = match from {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.seek_to(target);
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn read_all(reader: &mut GuardedReader<'_>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn kept_ranges_read_as_one_stream_and_seek_across_them() {
        let bytes = b"0123456789abcdef";
        let mut r = GuardedReader::with_ranges(bytes, vec![0..3, 5..6, 10..20], Cancel::never());
        assert_eq!(r.len(), 3 + 1 + 6);
        assert_eq!(read_all(&mut r).unwrap(), b"0125abcdef");
        assert_eq!(r.seek(SeekFrom::Start(3)).unwrap(), 3);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"5a");
        assert_eq!(r.seek(SeekFrom::End(-2)).unwrap(), 8);
        assert_eq!(read_all(&mut r).unwrap(), b"ef");
        assert_eq!(r.seek(SeekFrom::Current(-4)).unwrap(), 6);
        assert_eq!(r.fill_buf().unwrap(), b"cdef");
        assert!(r.seek(SeekFrom::Current(-7)).is_err());
        assert_eq!(r.seek(SeekFrom::Start(100)).unwrap(), 10);
        assert_eq!(read_all(&mut r).unwrap(), b"");
    }

    #[test]
    fn a_cancelled_token_fails_the_next_read() {
        let (cancel, guard) = Cancel::new(None);
        let mut r = GuardedReader::new(b"abc", cancel.clone());
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(cancel.check(), Ok(()));
        drop(guard);
        assert!(r.read_exact(&mut one).is_err());
        assert_eq!(cancel.check(), Err(Interrupted::Cancelled));
    }

    #[test]
    fn a_passed_deadline_fails_reads_within_the_clock_interval() {
        let past = Instant::now().checked_sub(Duration::from_millis(1));
        let (cancel, _guard) = Cancel::new(past);
        assert_eq!(cancel.check(), Err(Interrupted::DeadlineExceeded));
        let bytes = vec![0u8; 4096];
        let mut r = GuardedReader::new(&bytes, cancel);
        let mut one = [0u8; 1];
        let ok = (0..4096)
            .take_while(|_| r.read_exact(&mut one).is_ok())
            .count();
        assert!(ok < CLOCK_EVERY as usize, "{ok} reads after the deadline");
    }

    #[test]
    fn never_never_fires() {
        assert_eq!(Cancel::never().check(), Ok(()));
        assert_eq!(Cancel::never().deadline(), None);
    }
}
