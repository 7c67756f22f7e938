//! A request id on the answers hyper writes by itself.
//!
//! When a request cannot be parsed (a malformed request line or header: 400; a URI over 64 KB:
//! 414; too many or too large headers: 431), hyper answers it itself and closes the connection:
//! no service runs, so [`dispatch`](super::dispatch) cannot add its [`X_REQUEST_ID`] header.
//! [`StampParserErrors`] wraps the connection's socket and inserts a fresh `local-…` id into
//! such a response head as it is written, and logs the id with the status, so the answer can be
//! found in the log like any other.
//!
//! Recognising them: hyper writes its own answer only when no response is in progress
//! (`Writing::Init` in hyper 1's `Conn::on_parse_error`), so it starts a write; it is a 4xx; and
//! unlike every answer of ours it has no [`X_REQUEST_ID`] header.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::context::local_request_id;
use super::dispatch::X_REQUEST_ID;

/// A socket whose hyper-written 4xx answers get an [`X_REQUEST_ID`] header.
#[derive(Debug)]
pub struct StampParserErrors<T> {
    inner: T,
    /// A stamped head (and whatever followed it in the same write) not yet fully written, with
    /// the count already written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> StampParserErrors<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> StampParserErrors<T> {
    /// Writes out a pending stamped head; ready once nothing is pending.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// `buf` with a request id inserted after its status line, when `buf` starts a 4xx response
/// head without one.
fn stamp(buf: &[u8]) -> Option<Vec<u8>> {
    let is_4xx = buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4");
    if !is_4xx {
        return None;
    }
    let head_end = find(buf, b"\r\n\r\n").map_or(buf.len(), |i| i + 2);
    let head = buf[..head_end].to_ascii_lowercase();
    let marker = format!("\r\n{}:", X_REQUEST_ID.as_str());
    if find(&head, marker.as_bytes()).is_some() {
        return None;
    }
    let line_end = find(buf, b"\r\n")? + 2;
    let status = String::from_utf8_lossy(&buf[9..line_end - 2]).into_owned();
    let request_id = local_request_id();
    tracing::info!(
        request_id,
        status,
        "request refused by the HTTP parser (malformed request line or headers)"
    );
    let header = format!("{}: {request_id}\r\n", X_REQUEST_ID.as_str());
    let mut stamped = Vec::with_capacity(buf.len() + header.len());
    stamped.extend_from_slice(&buf[..line_end]);
    stamped.extend_from_slice(header.as_bytes());
    stamped.extend_from_slice(&buf[line_end..]);
    Some(stamped)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<T: AsyncRead + Unpin> AsyncRead for StampParserErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StampParserErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        match stamp(buf) {
            Some(stamped) => {
                // The whole of `buf` is taken over; it is written out by later calls
                // (a flush or shutdown always comes before the connection closes).
                this.pending = Some((stamped, 0));
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let first = bufs.iter().find(|b| !b.is_empty());
        match first {
            // A head to stamp goes through `poll_write` alone (a short vectored write).
            Some(first) if stamp_candidate(first) => Pin::new(this).poll_write(cx, first),
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Cheap pre-check of [`stamp`] for vectored writes.
fn stamp_candidate(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_bare_4xx_head_gets_a_request_id_after_its_status_line() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let stamped = String::from_utf8(stamp(head).expect("stamped")).expect("utf-8");
        let mut lines = stamped.split("\r\n");
        assert_eq!(
            lines.next(),
            Some("HTTP/1.1 431 Request Header Fields Too Large")
        );
        let id_line = lines.next().expect("second line");
        assert!(id_line.starts_with("x-request-id: local-"), "{id_line}");
        assert!(
            stamped.ends_with("\r\ncontent-length: 0\r\n\r\n"),
            "{stamped}"
        );
    }

    #[test]
    fn our_answers_and_other_statuses_are_left_alone() {
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: r-1\r\n\r\n{}";
        assert_eq!(stamp(ours), None);
        assert_eq!(stamp(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(stamp(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert_eq!(stamp(b"{\"error\": \"HTTP/1.1 400\"}"), None);
    }

    #[tokio::test]
    async fn the_stamped_head_reaches_the_socket_whole_even_through_short_writes() {
        // A duplex pipe with a 7-byte buffer forces many short writes.
        let (client, mut server) = tokio::io::duplex(7);
        let mut wrapped = StampParserErrors::new(client);
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
                .await
                .map(|_| out)
        });
        wrapped.write_all(head).await.expect("write");
        wrapped.shutdown().await.expect("shutdown");
        drop(wrapped);
        let out = String::from_utf8(reader.await.expect("join").expect("read")).expect("utf-8");
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\nx-request-id: local-"),
            "{out}"
        );
        assert!(out.ends_with("\r\ncontent-length: 0\r\n\r\n"), "{out}");
    }
}
