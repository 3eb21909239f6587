//! Detection of requests that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper processes such a request by `Transfer-Encoding` alone and drops `Content-Length`
//! before the service sees it (RFC 9112 §6.1 allows that), but modegate refuses them outright:
//! a request whose framing two parsers could read differently is a smuggling attempt. So the
//! client socket is wrapped in [`SniffIo`], which follows the HTTP/1 message framing as bytes
//! arrive — request heads are scanned, bodies (by `Content-Length` or chunked) are skipped —
//! and raises the connection's [`FramingFlag`] with the number of the request whose head held
//! both fields. The flag is raised before hyper parses that head, so the service sees it for
//! that request and no other; hyper itself stops keep-alive on such a connection.
//!
//! Body bytes are never read as headers, and nothing carries over from one request to the
//! next. An HTTP/2 preface switches the scan off; so does framing the scan cannot follow
//! (hyper answers that with 400 and closes the connection).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Raised with the (0-based) number of the first request on the connection whose head carried
/// both framing headers.
#[derive(Clone, Debug)]
pub struct FramingFlag(Arc<AtomicU64>);

impl Default for FramingFlag {
    fn default() -> Self {
        FramingFlag(Arc::new(AtomicU64::new(u64::MAX)))
    }
}

impl FramingFlag {
    /// Whether request number `request` (0-based, in arrival order) or an earlier one on this
    /// connection carried both framing headers.
    pub fn raised_for(&self, request: u64) -> bool {
        self.0.load(Ordering::Acquire) <= request
    }

    pub(crate) fn raise(&self, request: u64) {
        self.0.fetch_min(request, Ordering::AcqRel);
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// Longest line start kept: enough for a header name and a Content-Length or chunk size.
const KEEP: usize = 64;

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a request head (request line and header fields).
    Head,
    /// In a body of known length: this many bytes left.
    Body(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// In chunk data: this many bytes left, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// In the trailer fields after the last chunk.
    Trailer,
    /// Not scanning (HTTP/2, or framing the scanner cannot follow).
    Off,
}

/// Incremental scanner over the bytes a client sends.
#[derive(Debug)]
struct Sniffer {
    phase: Phase,
    /// Lower-cased start of the current line.
    line: [u8; KEEP],
    /// Bytes of the current line seen so far (excluding `\r`).
    line_len: usize,
    /// Lines of the current head seen so far.
    head_lines: usize,
    content_length: Option<Option<u64>>,
    chunked: Option<bool>,
    /// Number of the request whose head is being read.
    request: u64,
    /// Bytes seen on the connection, up to the preface length.
    seen: usize,
}

impl Default for Sniffer {
    fn default() -> Self {
        Sniffer {
            phase: Phase::Head,
            line: [0; KEEP],
            line_len: 0,
            head_lines: 0,
            content_length: None,
            chunked: None,
            request: 0,
            seen: 0,
        }
    }
}

fn value_after_colon(line: &[u8]) -> &[u8] {
    let value = line
        .iter()
        .position(|b| *b == b':')
        .map_or(&[][..], |i| &line[i + 1..]);
    value.trim_ascii()
}

impl Sniffer {
    /// Whether a request head has begun and is not complete.
    fn in_head(&self) -> bool {
        self.phase == Phase::Head && (self.head_lines > 0 || self.line_len > 0)
    }

    fn current_line(&self) -> &[u8] {
        &self.line[..self.line_len.min(KEEP)]
    }

    /// A complete line in the head or the trailer.
    fn end_head_line(&mut self, flag: &FramingFlag) {
        let empty = self.line_len == 0;
        if self.phase == Phase::Trailer {
            if empty {
                self.phase = Phase::Head;
            }
            return;
        }
        if empty {
            if self.head_lines == 0 {
                // Blank lines before a request line are ignored (RFC 9112 §2.2).
                return;
            }
            self.end_head(flag);
            return;
        }
        self.head_lines += 1;
        let line = self.current_line();
        if line.starts_with(b"content-length:") {
            let n = std::str::from_utf8(value_after_colon(line))
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            self.content_length = Some(n);
        } else if line.starts_with(b"transfer-encoding:") {
            let last = value_after_colon(line)
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            self.chunked = Some(last == b"chunked");
        }
    }

    fn end_head(&mut self, flag: &FramingFlag) {
        let request = self.request;
        self.request += 1;
        self.head_lines = 0;
        let (cl, te) = (self.content_length.take(), self.chunked.take());
        self.phase = match (cl, te) {
            (Some(_), Some(_)) => {
                flag.raise(request);
                Phase::Off
            }
            (None, Some(true)) => Phase::ChunkSize,
            // A final coding other than chunked, or a length that is not a number: hyper
            // refuses the request and closes the connection.
            (None, Some(false)) | (Some(None), None) => Phase::Off,
            (Some(Some(0)), None) | (None, None) => Phase::Head,
            (Some(Some(n)), None) => Phase::Body(n),
        };
    }

    fn end_chunk_size_line(&mut self) {
        let line = self.current_line();
        let digits: Vec<u8> = line
            .iter()
            .copied()
            .take_while(u8::is_ascii_hexdigit)
            .collect();
        let size = std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| u64::from_str_radix(d, 16).ok());
        self.phase = match size {
            Some(0) => Phase::Trailer,
            Some(n) => Phase::ChunkData(n),
            None => Phase::Off,
        };
    }

    /// Appends part of a line: lower-cased into `line` up to `KEEP` bytes, counted beyond,
    /// `\r` skipped.
    fn take_line_bytes(&mut self, segment: &[u8]) {
        let room = KEEP.saturating_sub(self.line_len).min(segment.len());
        let (kept, beyond) = segment.split_at(room);
        if kept.contains(&b'\r') {
            for &b in kept {
                if b != b'\r' {
                    self.line[self.line_len] = b.to_ascii_lowercase();
                    self.line_len += 1;
                }
            }
            // What the skipped `\r`s left room for is taken from what follows.
            return self.take_line_bytes(beyond);
        }
        if room > 0 {
            // Only while the line still fits: past `KEEP`, `line_len` counts beyond the buffer.
            let at = self.line_len;
            self.line[at..at + room].copy_from_slice(kept);
            self.line[at..at + room].make_ascii_lowercase();
        }
        self.line_len += room;
        self.line_len += beyond.iter().filter(|b| **b != b'\r').count();
    }

    fn feed(&mut self, mut bytes: &[u8], flag: &FramingFlag) {
        if self.phase == Phase::Off {
            return;
        }
        if self.seen < H2_PREFACE.len() {
            let n = (H2_PREFACE.len() - self.seen).min(bytes.len());
            if bytes[..n] == H2_PREFACE[self.seen..self.seen + n] {
                self.seen += n;
                if self.seen == H2_PREFACE.len() {
                    self.phase = Phase::Off;
                    return;
                }
            } else {
                self.seen = usize::MAX;
            }
        }
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Body(left) | Phase::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    let left = left - n;
                    self.phase = match self.phase {
                        Phase::Body(_) if left == 0 => Phase::Head,
                        Phase::Body(_) => Phase::Body(left),
                        _ if left == 0 => Phase::ChunkEnd,
                        _ => Phase::ChunkData(left),
                    };
                }
                Phase::Head | Phase::ChunkSize | Phase::ChunkEnd | Phase::Trailer => {
                    let (segment, rest, ends_line) = match memchr::memchr(b'\n', bytes) {
                        // The CR of a CRLF is dropped here, so the common line takes the
                        // copying path in `take_line_bytes` rather than the byte-by-byte one.
                        Some(i) => (
                            bytes[..i].strip_suffix(b"\r").unwrap_or(&bytes[..i]),
                            &bytes[i + 1..],
                            true,
                        ),
                        None => (bytes, &[][..], false),
                    };
                    self.take_line_bytes(segment);
                    bytes = rest;
                    if !ends_line {
                        return;
                    }
                    match self.phase {
                        Phase::ChunkSize => self.end_chunk_size_line(),
                        Phase::ChunkEnd => {
                            self.phase = if self.line_len == 0 {
                                Phase::ChunkSize
                            } else {
                                Phase::Off
                            }
                        }
                        _ => self.end_head_line(flag),
                    }
                    self.line_len = 0;
                }
            }
        }
    }
}

/// A client socket whose incoming bytes are scanned for conflicting framing headers, and whose
/// writes are watched: a client that leaves them unread (no byte accepted) for the stall
/// timeout gets its connection closed, so a stalled reader costs a bounded time and memory.
pub struct SniffIo<T> {
    inner: T,
    sniffer: Sniffer,
    flag: FramingFlag,
    stall: Option<(std::time::Duration, Option<super::OnWriteStall>)>,
    /// Armed while writes are pending.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where a write stall is recorded as the reason the connection closes.
    close: super::CloseCause,
    /// The stall was reported (it is reported once, however often the dead socket is polled).
    reported: bool,
    /// What `close` was last told of a request head in progress.
    in_head: bool,
}

impl<T> std::fmt::Debug for SniffIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniffIo").finish_non_exhaustive()
    }
}

impl<T> SniffIo<T> {
    /// Wraps `inner`; `flag` is raised on a conflicting request; `stall` is the write-stall
    /// timeout and whom to tell when it closes the connection, which is also recorded in
    /// `close`.
    pub fn new(
        inner: T,
        flag: FramingFlag,
        stall: Option<(std::time::Duration, Option<super::OnWriteStall>)>,
        close: super::CloseCause,
    ) -> Self {
        Self {
            inner,
            sniffer: Sniffer::default(),
            flag,
            stall,
            stalled: None,
            close,
            reported: false,
            in_head: false,
        }
    }

    /// Wraps the write side of a connection whose reads are taken elsewhere (the native
    /// engine reads heads itself): only the write-stall watchdog runs.
    pub fn writer(
        inner: T,
        stall: Option<(std::time::Duration, Option<super::OnWriteStall>)>,
        close: super::CloseCause,
    ) -> Self {
        let mut io = Self::new(inner, FramingFlag::default(), stall, close);
        io.sniffer.phase = Phase::Off;
        io
    }

    /// Tracks a write attempt: progress disarms the watchdog; a pending write arms it (with the
    /// task's waker, so the deadline wakes the connection) and fails it once the deadline passed.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let Some((timeout, on_stall)) = &self.stall else {
            return result;
        };
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(*timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            if !self.reported {
                self.reported = true;
                self.close.set(super::CloseReason::WriteStall);
                if let Some(f) = on_stall {
                    f();
                }
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the body idle timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SniffIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.sniffer.feed(&buf.filled()[before..], &this.flag);
            let in_head = this.sniffer.in_head();
            if in_head != this.in_head {
                this.in_head = in_head;
                this.close.set_head_started(in_head);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SniffIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers flagged, after feeding `chunks`.
    fn flagged(chunks: &[&[u8]]) -> Option<u64> {
        let flag = FramingFlag::default();
        let mut s = Sniffer::default();
        for c in chunks {
            s.feed(c, &flag);
        }
        (0..16).find(|n| flag.raised_for(*n))
    }

    #[test]
    fn both_headers_in_one_head_raise_the_flag_for_that_request() {
        assert_eq!(
            flagged(&[
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            ]),
            Some(0)
        );
        assert_eq!(
            flagged(&[
                b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n"
            ]),
            Some(0)
        );
        assert_eq!(
            flagged(&[
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ]),
            Some(1),
            "the second request, not the first"
        );
    }

    #[test]
    fn long_lines_split_anywhere_are_read_as_in_one_piece() {
        let long = "a".repeat(3 * KEEP);
        let head = format!(
            "POST / HTTP/1.1\r\nX-Long: {long}\r\nContent-Length: 4\r\nX-Pad:\r{long}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let bytes = head.as_bytes();
        assert_eq!(flagged(&[bytes]), Some(0));
        for size in 1..=2 * KEEP + 3 {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(flagged(&chunks), Some(0), "chunks of {size}");
        }
        let clean = format!("GET / HTTP/1.1\r\nX-Long: {long}\r\nContent-Length: 0\r\n\r\n");
        for size in 1..=2 * KEEP + 3 {
            let chunks: Vec<&[u8]> = clean.as_bytes().chunks(size).collect();
            assert_eq!(flagged(&chunks), None, "chunks of {size}");
        }
    }

    #[test]
    fn headers_split_across_reads_are_found() {
        assert_eq!(
            flagged(&[
                b"POST / HTTP/1.1\r\nContent-Len",
                b"gth: 4\r\nTransfer-",
                b"Encoding: chunked\r",
                b"\n\r\n"
            ]),
            Some(0)
        );
    }

    #[test]
    fn body_bytes_are_never_read_as_headers() {
        // A text body whose lines look like framing headers, then a clean second request.
        let body = b"x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
        let head = format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        assert_eq!(
            flagged(&[head.as_bytes(), body, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"]),
            None
        );
        // The same lines inside chunked data and a trailer.
        assert_eq!(
            flagged(&[
                b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"1e\r\ncontent-length: 1\r\ntransfer-e\r\n",
                b"0\r\nx-trailer: y\r\n\r\n",
                b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
            ]),
            None
        );
    }

    #[test]
    fn nothing_carries_over_between_requests() {
        assert_eq!(
            flagged(&[
                b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nok",
                b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                b"\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
            ]),
            None
        );
        assert_eq!(
            flagged(&[b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding-X: y\r\n\r\n"]),
            None
        );
    }

    #[test]
    fn a_head_in_progress_is_told_apart_from_an_idle_connection() {
        let flag = FramingFlag::default();
        let mut s = Sniffer::default();
        assert!(!s.in_head());
        s.feed(b"GET /a HTTP/1.1\r\nHo", &flag);
        assert!(s.in_head());
        s.feed(b"st: x\r\n\r\n", &flag);
        assert!(!s.in_head(), "complete");
        s.feed(b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\no", &flag);
        assert!(!s.in_head(), "in a body");
        s.feed(b"k\r\n", &flag);
        assert!(
            !s.in_head(),
            "blank lines before a request line are not a head"
        );
        s.feed(b"G", &flag);
        assert!(s.in_head());
    }

    #[test]
    fn http2_connections_are_not_scanned() {
        assert_eq!(
            flagged(&[
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                b"\ncontent-length: 1\ntransfer-encoding: x\n\n"
            ]),
            None
        );
    }
}
