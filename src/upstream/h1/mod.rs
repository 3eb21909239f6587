//! The native HTTP/1.1 client (`server.http1_engine = "native"`): one upstream connection
//! ([`Connection`]) over the connector's stream (plain TCP, rustls, or either inside a CONNECT
//! tunnel), driven by the request's own task — no task per connection or request.
//!
//! A request's head is written from its parts in one buffer with the framing hyper's client
//! would give it ([`head`]), together with as much of its body as is ready; the rest of the
//! body streams while the response head is awaited, so an upstream that answers early is
//! heard. The response head is parsed with httparse as hyper parses it, and its body
//! ([`ResponseBody`]) streams with backpressure; the connection goes back to its [`Home`] (the
//! pool) only when that body was read to its end and the exchange allows keep-alive.
//!
//! A request whose first write failed with nothing written is handed back ([`SendError`]) so
//! that the pool can retry it once on a fresh connection; nothing that reached the wire is.

mod body;
pub(crate) mod head;

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use body::ResponseBody;
use head::Out;

use super::{GatewayBody, UPSTREAM_READ_BUF};
use crate::server::h1::body::{Decoder, Source};
use crate::server::h1::parse::Framing;

/// The stream under an upstream connection (what the pool's connector yields).
pub type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Where a connection goes when an exchange leaves it fit for another request.
pub trait Home: Send + Sync {
    /// Takes `connection` back (or drops it, closing it).
    fn check_in(&self, connection: Box<Connection>);

    /// The `Host` of requests to this home's origin, when it keeps one ready (else it is built
    /// from each request's authority).
    fn host(&self) -> Option<&HeaderValue> {
        None
    }
}

/// Request body data at most this large is copied behind the head into one write.
const COALESCE_LIMIT: usize = 16 * 1024;

/// One native HTTP/1.1 connection to an upstream.
pub struct Connection {
    io: TokioIo<Stream>,
    /// What was read and not used yet (never more than [`UPSTREAM_READ_BUF`]).
    read: BytesMut,
    /// The request being written.
    write: Vec<u8>,
    /// The upstream answered the last request in HTTP/1.0.
    http10: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.read.len())
            .field("http10", &self.http10)
            .finish_non_exhaustive()
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: io::Error,
    /// The request, when none of it reached the wire (it may be sent again elsewhere).
    pub request: Option<Request<GatewayBody>>,
}

impl Source for Connection {
    fn buffer(&mut self) -> &mut BytesMut {
        &mut self.read
    }

    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_fill(cx)
    }
}

/// Polls `fut` once, without waiting.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Where an exchange's request write is.
struct Writing {
    /// How the body is framed.
    out: Out,
    /// Body bytes sent so far.
    sent: u64,
    /// Bytes of `write` already on the wire.
    at: usize,
    /// Bytes written to the socket in all.
    wrote: usize,
    /// Body frames were taken from the request.
    took: bool,
    /// The body is complete (or not sent) and everything flushed.
    done: bool,
    ended: bool,
    /// New bytes were read since the last parse.
    fresh: bool,
}

impl Connection {
    /// A connection over `stream`.
    pub fn new(stream: Stream) -> Box<Connection> {
        Box::new(Connection {
            io: TokioIo::new(stream),
            read: BytesMut::new(),
            write: Vec::new(),
            http10: false,
        })
    }

    /// Whether the connection can carry another request: nothing unread, and the upstream
    /// has neither closed it nor sent anything unasked (checked without waiting).
    pub fn is_reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        poll_once(std::future::poll_fn(|cx| self.poll_fill(cx))).is_none()
    }

    /// Reads more into the read buffer (at most [`UPSTREAM_READ_BUF`] held); `Ok(0)` at the
    /// end of the stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let room = UPSTREAM_READ_BUF.saturating_sub(self.read.len()).max(1);
        if self.read.capacity() - self.read.len() < room {
            self.read.reserve(room);
        }
        let mut limited = (&mut self.read).limit(room);
        let read = self.io.read_buf(&mut limited);
        pin!(read).poll(cx)
    }

    /// Gives a connection whose exchange allows keep-alive back to `home`, if it is clean.
    fn release(connection: Box<Connection>, home: Option<Arc<dyn Home>>) {
        if let Some(home) = home {
            if connection.read.is_empty() {
                home.check_in(connection);
            }
        }
    }

    /// Sends `request` (an absolute URI: its path and query are the target, its authority the
    /// `Host` when the request has none) and waits for the response head; the body streams
    /// after, and returns the connection to `home` when it allows.
    pub async fn send(
        mut self: Box<Self>,
        request: Request<GatewayBody>,
        home: Option<Arc<dyn Home>>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let (mut parts, mut body) = request.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            let host = match home.as_deref().and_then(|h| h.host()) {
                Some(host) => Some(host.clone()),
                None => parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            };
            if let Some(host) = host {
                parts.headers.insert(header::HOST, host);
            }
        }
        let shape = if body.is_end_stream() {
            None
        } else {
            Some(body.size_hint().exact())
        };
        self.write.clear();
        let target = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let written = head::request(&mut parts, &target, shape, self.http10, &mut self.write);
        let head_len = self.write.len();
        let mut state = Writing {
            out: written.out,
            sent: 0,
            at: 0,
            wrote: 0,
            took: false,
            done: false,
            ended: matches!(written.out, Out::Length(0)),
            fresh: false,
        };
        // As much of the body as is ready goes out with the head.
        if let Err(error) = self.coalesce(&mut body, &mut state) {
            // What was framed goes out first, as hyper's client writes it.
            let _ = self.io.write_all(&self.write).await;
            return Err(SendError {
                error,
                request: None,
            });
        }
        let method = parts.method.clone();
        let exchange =
            std::future::poll_fn(|cx| self.poll_exchange(cx, &mut body, &mut state, &method)).await;
        let head = match exchange {
            Ok(head) => head,
            Err(error) => {
                let request = (state.wrote == 0)
                    .then(|| {
                        if !state.took {
                            Some(Request::from_parts(parts, body))
                        } else if state.ended && matches!(state.out, Out::Length(_)) {
                            // The whole body was taken into the head's buffer: send it again.
                            let bytes = Bytes::copy_from_slice(&self.write[head_len..]);
                            Some(Request::from_parts(parts, super::full(bytes)))
                        } else {
                            None
                        }
                    })
                    .flatten();
                return Err(SendError { error, request });
            }
        };
        let head::Head {
            response,
            framing,
            keep_alive,
        } = head;
        self.http10 = response.version() == http::Version::HTTP_10;
        let keep_alive = keep_alive && !written.close && state.done;
        let body = match framing {
            Framing::Length(0) => {
                if keep_alive {
                    Connection::release(self, home);
                }
                ResponseBody::empty()
            }
            framing => ResponseBody::new(self, Decoder::new(framing), keep_alive, home),
        };
        Ok(response.map(|()| body))
    }

    /// Takes the body frames that are ready (without waiting) into the write buffer.
    fn coalesce(&mut self, body: &mut GatewayBody, state: &mut Writing) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        while self.write.len() < COALESCE_LIMIT && !state.ended {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(frame) => {
                    state.took = true;
                    self.put_frame(frame, state)?;
                }
            }
        }
        Ok(())
    }

    /// Encodes one frame of the request body (or its end) behind what `write` holds.
    fn put_frame(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, super::BodyError>>,
        state: &mut Writing,
    ) -> io::Result<()> {
        match frame {
            None => {
                state.ended = true;
                match state.out {
                    Out::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                    Out::Length(n) if state.sent < n => {
                        return Err(io::Error::other("the request body ended before its length"))
                    }
                    Out::Length(_) => {}
                }
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    return Ok(());
                };
                if data.is_empty() {
                    return Ok(());
                }
                let len = data.len() as u64;
                match state.out {
                    Out::Length(n) if state.sent + len >= n => {
                        // Holding at least what is owed: only that goes out, and the request
                        // is complete (as hyper's client does).
                        let owed = usize::try_from(n - state.sent).unwrap_or(usize::MAX);
                        self.write.extend_from_slice(&data[..owed.min(data.len())]);
                        state.sent = n;
                        state.ended = true;
                        return Ok(());
                    }
                    Out::Length(_) => self.write.extend_from_slice(&data),
                    Out::Chunked => {
                        hex(len, &mut self.write);
                        self.write.extend_from_slice(b"\r\n");
                        self.write.extend_from_slice(&data);
                        self.write.extend_from_slice(b"\r\n");
                    }
                }
                state.sent += len;
            }
        }
        Ok(())
    }

    /// Writes the request (streaming its body) while reading the response head, until the
    /// head is complete.
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut GatewayBody,
        state: &mut Writing,
        method: &Method,
    ) -> Poll<io::Result<head::Head>> {
        loop {
            let mut progress = false;
            if state.at < self.write.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.write[state.at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        state.at += n;
                        state.wrote += n;
                        progress = true;
                        if state.at == self.write.len() {
                            self.write.clear();
                            state.at = 0;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            } else if !state.ended {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        state.took = true;
                        self.put_frame(frame, state)?;
                        progress = true;
                    }
                    // While the client's next frame is awaited, what a TLS session still holds
                    // goes out (a no-op on plain TCP); a failure shows on the next write.
                    Poll::Pending => {
                        let _ = Pin::new(&mut self.io).poll_flush(cx);
                    }
                }
            } else if !state.done {
                if let Poll::Ready(flushed) = Pin::new(&mut self.io).poll_flush(cx) {
                    flushed?;
                    state.done = true;
                    progress = true;
                }
            }
            if state.wrote > 0 {
                if state.fresh {
                    state.fresh = false;
                    if let Some(head) = head::response(&mut self.read, method)? {
                        return Poll::Ready(Ok(head));
                    }
                    if self.read.len() >= UPSTREAM_READ_BUF {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "message head is too large",
                        )));
                    }
                }
                if let Poll::Ready(read) = self.poll_fill(cx) {
                    if read? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before message completed",
                        )));
                    }
                    state.fresh = true;
                    progress = true;
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

/// Appends `n` in upper-case hexadecimal (a chunk size).
fn hex(n: u64, dst: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 16];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = DIGITS[(n & 0xF) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&buf[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_upper_case_hex() {
        for (n, text) in [(0, "0"), (10, "A"), (255, "FF"), (4096, "1000")] {
            let mut dst = Vec::new();
            hex(n, &mut dst);
            assert_eq!(dst, text.as_bytes());
        }
    }
}
