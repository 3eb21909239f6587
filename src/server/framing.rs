//! Detection of requests that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper processes such a request by `Transfer-Encoding` alone and drops `Content-Length`
//! before the service sees it (RFC 9112 §6.1 allows that), but modegate refuses them outright:
//! a request whose framing two parsers could read differently is a smuggling attempt. So the
//! client socket is wrapped in [`SniffIo`], which watches HTTP/1 header blocks as bytes arrive
//! and raises a per-connection [`FramingFlag`] when one block holds both fields. The flag is
//! raised before hyper parses the head, so the service sees it for that request. hyper itself
//! stops keep-alive on such a connection, so nothing after it is read as a request.
//!
//! The scan is a byte search for line ends plus a prefix compare per line; an HTTP/2 preface
//! switches it off.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Raised once a request on the connection carried both framing headers.
#[derive(Clone, Debug, Default)]
pub struct FramingFlag(Arc<AtomicBool>);

impl FramingFlag {
    /// Whether a conflicting request was seen on this connection.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// Longest line prefix kept for matching ("transfer-encoding:" is 18 bytes).
const PREFIX: usize = 18;

/// Incremental scanner over the bytes a client sends.
#[derive(Debug, Default)]
struct Sniffer {
    /// Lower-cased start of the current line.
    prefix: [u8; PREFIX],
    /// Bytes of the current line seen so far (excluding `\r`).
    line_len: usize,
    content_length: bool,
    transfer_encoding: bool,
    /// Bytes seen on the connection, up to the preface length.
    seen: usize,
    off: bool,
}

impl Sniffer {
    fn end_line(&mut self, flag: &FramingFlag) {
        if self.line_len == 0 {
            // Empty line: end of a header block.
            self.content_length = false;
            self.transfer_encoding = false;
        } else {
            let line = &self.prefix[..self.line_len.min(PREFIX)];
            if line.starts_with(b"content-length:") {
                self.content_length = true;
            } else if line == b"transfer-encoding:" {
                self.transfer_encoding = true;
            }
            if self.content_length && self.transfer_encoding {
                flag.raise();
                self.off = true;
            }
        }
        self.line_len = 0;
    }

    fn feed(&mut self, mut bytes: &[u8], flag: &FramingFlag) {
        if self.off {
            return;
        }
        if self.seen < H2_PREFACE.len() {
            let n = (H2_PREFACE.len() - self.seen).min(bytes.len());
            if bytes[..n] == H2_PREFACE[self.seen..self.seen + n] {
                self.seen += n;
                if self.seen == H2_PREFACE.len() {
                    self.off = true;
                    return;
                }
            } else {
                self.seen = usize::MAX;
            }
        }
        while !bytes.is_empty() {
            let (segment, rest, ends_line) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            for &b in segment {
                if b == b'\r' {
                    continue;
                }
                if self.line_len < PREFIX {
                    self.prefix[self.line_len] = b.to_ascii_lowercase();
                }
                self.line_len += 1;
            }
            if ends_line {
                self.end_line(flag);
                if self.off {
                    return;
                }
            }
            bytes = rest;
        }
    }
}

/// A client socket whose incoming bytes are scanned for conflicting framing headers.
#[derive(Debug)]
pub struct SniffIo<T> {
    inner: T,
    sniffer: Sniffer,
    flag: FramingFlag,
}

impl<T> SniffIo<T> {
    /// Wraps `inner`; `flag` is raised on a conflicting request.
    pub fn new(inner: T, flag: FramingFlag) -> Self {
        Self {
            inner,
            sniffer: Sniffer::default(),
            flag,
        }
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let flag = FramingFlag::default();
        let mut s = Sniffer::default();
        for c in chunks {
            s.feed(c, &flag);
        }
        flag.is_raised()
    }

    #[test]
    fn both_headers_in_one_head_raise_the_flag() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n"
        ]));
    }

    #[test]
    fn headers_split_across_reads_are_found() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Len",
            b"gth: 4\r\nTransfer-",
            b"Encoding: chunked\r",
            b"\n\r\n"
        ]));
    }

    #[test]
    fn one_framing_header_per_head_is_fine() {
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]));
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding-X: y\r\n\r\n"
        ]));
    }

    #[test]
    fn http2_connections_are_not_scanned() {
        assert!(!scan(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\ncontent-length: 1\ntransfer-encoding: x\n"
        ]));
    }
}
