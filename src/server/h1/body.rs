//! Request bodies (and the decoders the upstream side reads responses with): the connection's read side with its buffer ([`Reader`]), the decoders
//! (`Content-Length`, and the chunked coding with hyper's exact state machine: hex size, then
//! optional whitespace and `;` extensions, CRLF; data then CRLF; trailer fields after the last
//! chunk, each line ending in CRLF, at most 16 KiB and 100 fields), and [`RequestBody`], which
//! lends the read side to whatever task polls the body and hands it back to its connection
//! when the body ends or is dropped.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::oneshot;

use super::parse::Framing;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;
/// Most bytes of chunk extensions per chunk (hyper's).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// Most bytes of trailer fields (hyper's).
const TRAILER_LIMIT: usize = 16 * 1024;
/// Most trailer fields (hyper's).
const TRAILER_FIELDS: usize = 100;

/// The connection's read side and what it has read and not used yet.
#[derive(Debug)]
pub(crate) struct Reader {
    io: OwnedReadHalf,
    pub(crate) buf: BytesMut,
}

impl Reader {
    /// Wraps `io`, with `buf` already read from it.
    pub(crate) fn new(io: OwnedReadHalf, buf: BytesMut) -> Self {
        Self { io, buf }
    }

    /// The read half and what was read from it.
    pub(crate) fn into_parts(self) -> (OwnedReadHalf, BytesMut) {
        (self.io, self.buf)
    }

    /// Reads more into the buffer; `Ok(0)` at end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        use std::future::Future;
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        let read = self.io.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }

    /// Reads more into the buffer.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// A read side a body decoder pulls from: a server connection's, or an upstream connection's
/// (`crate::upstream::h1`).
pub(crate) trait Source {
    /// What was read and not used yet.
    fn buffer(&mut self) -> &mut BytesMut;
    /// Reads more into the buffer; `Ok(0)` at end of stream.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>>;
}

impl Source for Reader {
    fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_fill(cx)
    }
}

/// What a body's next frame is.
#[derive(Debug)]
pub(crate) enum Next {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete (by its framing, or by the end of the stream for a body read to
    /// the close).
    End,
    /// Malformed framing, or the stream ended early.
    Failed(io::Error),
}

/// Where the chunked decoder is (hyper's states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// What a decode step produced.
#[derive(Debug)]
pub(crate) enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More bytes are needed.
    More,
}

/// A body decoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Length(u64),
    /// Everything until the end of the stream.
    Close,
    Chunked {
        state: Chunk,
        size: u64,
        extensions: u64,
        trailers: Option<BytesMut>,
        trailer_count: usize,
    },
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

impl Decoder {
    /// A decoder for `framing`.
    pub(crate) fn new(framing: Framing) -> Self {
        let kind = match framing {
            Framing::Length(n) => Kind::Length(n),
            Framing::Close => Kind::Close,
            Framing::Chunked => Kind::Chunked {
                state: Chunk::Start,
                size: 0,
                extensions: 0,
                trailers: None,
                trailer_count: 0,
            },
        };
        Self { kind }
    }

    /// Whether the body is complete.
    pub(crate) fn is_eof(&self) -> bool {
        matches!(
            self.kind,
            Kind::Length(0)
                | Kind::Chunked {
                    state: Chunk::End,
                    ..
                }
        )
    }

    /// Bytes left, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            Kind::Chunked { .. } | Kind::Close => None,
        }
    }

    /// The size hint of a body read by `decoder` (`None`: a body already at its end).
    pub(crate) fn hint(decoder: Option<&Decoder>) -> SizeHint {
        match decoder.map(Decoder::remaining) {
            None => SizeHint::with_exact(0),
            Some(Some(n)) => SizeHint::with_exact(n),
            Some(None) => SizeHint::default(),
        }
    }

    /// Whether a body read by `decoder` is at its end (`None`: it already ended).
    pub(crate) fn at_end(decoder: Option<&Decoder>) -> bool {
        decoder.is_none_or(|d| d.remaining() == Some(0))
    }

    /// Whether the end of the stream ends the body (rather than cutting it short).
    pub(crate) fn ends_at_eof(&self) -> bool {
        matches!(self.kind, Kind::Close)
    }

    /// Decodes from the front of `buf`.
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        match &mut self.kind {
            Kind::Length(0) => Ok(Step::End),
            Kind::Close if buf.is_empty() => Ok(Step::More),
            Kind::Close => Ok(Step::Data(buf.split().freeze())),
            Kind::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Kind::Chunked {
                state,
                size,
                extensions,
                trailers,
                trailer_count,
            } => loop {
                if *state == Chunk::End {
                    return Ok(Step::End);
                }
                if *state == Chunk::Body {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(*size).unwrap_or(usize::MAX).min(buf.len());
                    *size -= n as u64;
                    if *size == 0 {
                        *state = Chunk::BodyCr;
                    }
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                let Some(&b) = buf.first() else {
                    return Ok(Step::More);
                };
                buf.advance(1);
                *state = chunk_byte(*state, b, size, extensions, trailers, trailer_count)?;
                if *state == Chunk::End {
                    if let Some(t) = trailers.take() {
                        return decode_trailers(&t, *trailer_count).map(Step::Trailers);
                    }
                    return Ok(Step::End);
                }
            },
        }
    }

    /// Decodes the next frame, reading from `source` only when its buffer runs out.
    pub(crate) fn poll_next(
        &mut self,
        source: &mut impl Source,
        cx: &mut Context<'_>,
    ) -> Poll<Next> {
        loop {
            return Poll::Ready(match self.step(source.buffer()) {
                Ok(Step::Data(data)) => Next::Data(data),
                Ok(Step::Trailers(trailers)) => Next::Trailers(trailers),
                Ok(Step::End) => Next::End,
                Ok(Step::More) => match ready!(source.poll_more(cx)) {
                    Ok(0) if self.ends_at_eof() => Next::End,
                    Ok(0) => Next::Failed(self.eof_error()),
                    Ok(_) => continue,
                    Err(e) => Next::Failed(e),
                },
                Err(e) => Next::Failed(e),
            });
        }
    }

    /// The error for a stream that ended inside the body.
    pub(crate) fn eof_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "end of file before message length reached",
        )
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b + 10 - b'a')),
        b'A'..=b'F' => Some(u64::from(b + 10 - b'A')),
        _ => None,
    }
}

fn push_trailer(t: &mut BytesMut, b: u8) -> io::Result<()> {
    t.extend_from_slice(&[b]);
    if t.len() >= TRAILER_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunk trailers bytes over limit",
        ));
    }
    Ok(())
}

/// One byte of the chunked coding outside chunk data (hyper's `ChunkedState::step`).
fn chunk_byte(
    state: Chunk,
    b: u8,
    size: &mut u64,
    extensions: &mut u64,
    trailers: &mut Option<BytesMut>,
    trailer_count: &mut usize,
) -> io::Result<Chunk> {
    let overflow = || io::Error::new(io::ErrorKind::InvalidData, "invalid chunk size: overflow");
    Ok(match state {
        Chunk::Start | Chunk::Size => match (hex(b), b) {
            (Some(d), _) => {
                *size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(d))
                    .ok_or_else(overflow)?;
                Chunk::Size
            }
            (None, _) if state == Chunk::Start => return Err(invalid("missing chunk size digit")),
            (None, b'\t' | b' ') => Chunk::SizeLws,
            (None, b';') => Chunk::Extension,
            (None, b'\r') => Chunk::SizeLf,
            (None, _) => return Err(invalid("invalid chunk size")),
        },
        Chunk::SizeLws => match b {
            b'\t' | b' ' => Chunk::SizeLws,
            b';' => Chunk::Extension,
            b'\r' => Chunk::SizeLf,
            _ => return Err(invalid("invalid chunk size whitespace")),
        },
        Chunk::Extension => match b {
            b'\r' => Chunk::SizeLf,
            b'\n' => return Err(invalid("chunk extension contains a newline")),
            _ => {
                *extensions += 1;
                if *extensions >= EXTENSIONS_LIMIT {
                    return Err(invalid("chunk extensions over limit"));
                }
                Chunk::Extension
            }
        },
        Chunk::SizeLf => match b {
            b'\n' if *size == 0 => Chunk::EndCr,
            b'\n' => {
                *extensions = 0;
                Chunk::Body
            }
            _ => return Err(invalid("invalid chunk size LF")),
        },
        Chunk::BodyCr => match b {
            b'\r' => Chunk::BodyLf,
            _ => return Err(invalid("invalid chunk body CR")),
        },
        Chunk::BodyLf => match b {
            b'\n' => Chunk::Start,
            _ => return Err(invalid("invalid chunk body LF")),
        },
        Chunk::Trailer => {
            push_trailer(trailers.get_or_insert_with(BytesMut::new), b)?;
            if b == b'\r' {
                Chunk::TrailerLf
            } else {
                Chunk::Trailer
            }
        }
        Chunk::TrailerLf => match b {
            b'\n' => {
                if *trailer_count >= TRAILER_FIELDS {
                    return Err(invalid("chunk trailers count overflow"));
                }
                *trailer_count += 1;
                push_trailer(trailers.get_or_insert_with(BytesMut::new), b)?;
                Chunk::EndCr
            }
            _ => return Err(invalid("invalid trailer end LF")),
        },
        Chunk::EndCr => {
            if b == b'\r' {
                if let Some(t) = trailers {
                    push_trailer(t, b)?;
                }
                Chunk::EndLf
            } else {
                push_trailer(trailers.get_or_insert_with(BytesMut::new), b)?;
                Chunk::Trailer
            }
        }
        Chunk::EndLf => match b {
            b'\n' => {
                if let Some(t) = trailers {
                    push_trailer(t, b)?;
                }
                Chunk::End
            }
            _ => return Err(invalid("invalid chunk end LF")),
        },
        Chunk::Body | Chunk::End => state,
    })
}

/// Trailer fields, parsed as hyper does.
fn decode_trailers(buf: &[u8], count: usize) -> io::Result<HeaderMap> {
    let mut fields = vec![httparse::EMPTY_HEADER; count];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::new();
            for field in fields {
                let name = http::HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| invalid("invalid trailer name"))?;
                let value = http::HeaderValue::from_bytes(field.value)
                    .map_err(|_| invalid("invalid trailer value"))?;
                trailers.append(name, value);
            }
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) => Err(invalid("partial trailer fields")),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
    }
}

/// How a lent read side came back to its connection.
#[derive(Debug)]
pub(crate) enum Returned {
    /// The body was read to its end.
    Done(Reader),
    /// The body was dropped before its end; whether it had been free to read ahead (it was
    /// polled, or no `100 Continue` was awaited).
    Unfinished(Reader, Decoder, bool),
    /// The body failed (malformed framing, or the stream ended early).
    Failed,
}

/// A request body read from a native connection.
#[derive(Debug)]
pub struct RequestBody {
    active: Option<Box<Active>>,
}

#[derive(Debug)]
struct Active {
    reader: Reader,
    decoder: Decoder,
    back: Option<oneshot::Sender<Returned>>,
    /// Told when the body is first polled (`Expect: 100-continue`).
    wants: Option<oneshot::Sender<()>>,
}

impl RequestBody {
    /// A body with nothing in it.
    pub(crate) fn empty() -> Self {
        Self { active: None }
    }

    /// A body read through `reader`, which goes back through `back` when the body ends or is
    /// dropped; `wants` is told when the body is first polled.
    pub(crate) fn lend(
        reader: Reader,
        decoder: Decoder,
        back: oneshot::Sender<Returned>,
        wants: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            active: Some(Box::new(Active {
                reader,
                decoder,
                back: Some(back),
                wants,
            })),
        }
    }

    fn finish(&mut self, returned: impl FnOnce(Reader, Decoder) -> Returned) {
        if let Some(mut active) = self.active.take() {
            if let Some(back) = active.back.take() {
                let _ = back.send(returned(active.reader, active.decoder));
            }
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let ahead = self.active.as_ref().is_some_and(|a| a.wants.is_none());
        self.finish(|reader, decoder| Returned::Unfinished(reader, decoder, ahead));
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some(active) = this.active.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(wants) = active.wants.take() {
            let _ = wants.send(());
        }
        match ready!(active.decoder.poll_next(&mut active.reader, cx)) {
            Next::Data(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Next::Trailers(t) => {
                this.finish(|reader, _| Returned::Done(reader));
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Next::End => {
                this.finish(|reader, _| Returned::Done(reader));
                Poll::Ready(None)
            }
            Next::Failed(e) => {
                this.finish(|_, _| Returned::Failed);
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        Decoder::at_end(self.active.as_ref().map(|a| &a.decoder))
    }

    fn size_hint(&self) -> SizeHint {
        Decoder::hint(self.active.as_ref().map(|a| &a.decoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` fed in pieces of `size`: the data, the trailers, and whether it ended
    /// (or the error).
    fn decode(framing: Framing, bytes: &[u8], size: usize) -> Result<(Vec<u8>, usize), String> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = 0;
        let mut pieces = bytes.chunks(size.max(1));
        loop {
            match decoder.step(&mut buf).map_err(|e| e.to_string())? {
                Step::Data(d) => data.extend_from_slice(&d),
                Step::Trailers(t) => trailers += t.len(),
                Step::End => return Ok((data, trailers)),
                Step::More => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err("eof".into()),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_alike_whatever_the_split() {
        let body = b"5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        for size in 1..=body.len() {
            assert_eq!(
                decode(Framing::Chunked, body, size),
                Ok((b"hello0123456789".to_vec(), 1)),
                "pieces of {size}"
            );
        }
        assert_eq!(
            decode(Framing::Length(4), b"abcdef", 1),
            Ok((b"abcd".to_vec(), 0))
        );
    }

    #[test]
    fn malformed_chunked_framing_is_an_error() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"fffffffffffffffff1\r\n",
            b"-1\r\n",
            b"1;\n",
            b"1 x\r\n",
            b"0\r\nx-t: 1\nx\r\n\r\n",
        ] {
            assert!(
                decode(Framing::Chunked, bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_trailer_section_is_bounded() {
        let mut body = b"0\r\n".to_vec();
        for i in 0..=TRAILER_FIELDS {
            body.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        assert!(decode(Framing::Chunked, &body, 64).is_err());
    }
}
