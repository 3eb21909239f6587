//! The native HTTP/1.1 engine (`server.http1_engine = "native"`): one task per connection
//! reads request heads with httparse into a reusable buffer ([`parse`]), hands each request
//! with its body ([`body`]) to the same tower stack hyper feeds, and writes the answers in
//! order ([`encode`]): keep-alive, pipelining, `Expect: 100-continue`, the header read
//! timeout (and idle timeout between requests), graceful drain and the write-stall watchdog
//! behave as on hyper's engine, and every head is accepted, refused or framed as hyper would.
//!
//! A connection whose first bytes are the HTTP/2 preface is handed to hyper (h2c), with the
//! bytes already read put back in front ([`Rewind`]).

pub mod body;
pub(crate) mod encode;
pub(crate) mod parse;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

pub use body::RequestBody;
use body::{Decoder, Reader, Returned, Step};
use parse::{Framing, Parsed};

use super::framing::{FramingFlag, SniffIo};
use super::{CloseCause, CloseReason, Shutdown};

/// An error of a connection or a body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most bytes buffered while a head is incomplete (hyper's buffer limit on the other engine);
/// past it the head is refused with 431.
pub(crate) const MAX_BUF: usize = 2 * super::MAX_HEAD_BYTES;
/// Response body data at least this large is written from its own buffer, not copied.
const COPY_LIMIT: usize = 16 * 1024;

/// What a native connection needs besides its socket and service.
pub(crate) struct Ctx {
    pub(crate) header_read_timeout: Duration,
    pub(crate) close: CloseCause,
    pub(crate) framing: FramingFlag,
    pub(crate) shutdown: Shutdown,
}

/// The write side: the socket's write half behind the write-stall watchdog.
pub(crate) type Writer = SniffIo<OwnedWriteHalf>;

/// Polls `fut` once, without waiting.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the connection's first bytes tell HTTP/1 from the HTTP/2 preface; whether they
/// are the preface.
pub(crate) async fn sniff_h2(reader: &mut Reader) -> io::Result<bool> {
    loop {
        let n = reader.buf.len().min(H2_PREFACE.len());
        if reader.buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        if reader.fill().await? == 0 {
            return Ok(false);
        }
    }
}

/// Whether `buf` holds the start of a request (anything but the blank lines RFC 9112 §2.2
/// lets a client send between requests).
fn head_started(buf: &[u8]) -> bool {
    buf.iter().any(|b| *b != b'\r' && *b != b'\n')
}

/// How reading the next head ended.
enum Next {
    Head(Box<parse::Head>),
    /// The connection is done (end of stream, refused head, timeout, shutdown).
    Close,
}

/// Reads the next head; the header read timeout runs from the call (for a later request, from
/// the previous answer: a connection that sends nothing in it closed as idle).
async fn read_head(
    reader: &mut Reader,
    writer: &mut Writer,
    conn: &mut Conn,
    first: bool,
) -> io::Result<Next> {
    let ctx = &conn.ctx;
    let deadline = tokio::time::Instant::now() + ctx.header_read_timeout;
    let mut started = false;
    loop {
        if !reader.buf.is_empty() {
            match parse::parse(&mut reader.buf, &mut conn.spans) {
                Parsed::Head(head) => {
                    if started {
                        ctx.close.set_head_started(false);
                    }
                    return Ok(Next::Head(head));
                }
                Parsed::Refused(status) => return refuse(writer, status).await,
                Parsed::Partial if reader.buf.len() >= MAX_BUF => {
                    return refuse(writer, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
                }
                Parsed::Partial => {}
            }
        }
        let waiting = !head_started(&reader.buf);
        tokio::select! {
            biased;
            read = reader.fill() => {
                if read? == 0 {
                    return Ok(Next::Close);
                }
                if !started && head_started(&reader.buf) {
                    started = true;
                    ctx.close.set_head_started(true);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                ctx.close.set(if started || first { CloseReason::HeaderTimeout } else { CloseReason::Idle });
                return Err(io::Error::new(io::ErrorKind::TimedOut, "header read timeout"));
            }
            () = &mut conn.stop, if waiting => return Ok(Next::Close),
        }
    }
}

async fn refuse(writer: &mut Writer, status: StatusCode) -> io::Result<Next> {
    let mut out = Vec::with_capacity(128);
    encode::refusal(status, &mut out);
    writer.write_all(&out).await?;
    let _ = writer.shutdown().await;
    Ok(Next::Close)
}

/// What a connection keeps between its requests.
struct Conn {
    ctx: Ctx,
    /// Field spans of the head being parsed.
    spans: parse::Spans,
    /// Completes when shutdown is triggered (made once, polled while waiting for a head).
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Serves HTTP/1.1 on one connection until it closes.
pub(crate) async fn serve<S, B>(
    mut reader: Reader,
    mut writer: Writer,
    mut service: S,
    ctx: Ctx,
) -> Result<(), BoxError>
where
    S: tower::Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut out: Vec<u8> = Vec::new();
    let mut index: u64 = 0;
    let mut shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        ctx,
        spans: Vec::new(),
        stop: Box::pin(async move { shutdown.wait().await }),
    };
    loop {
        if reader.buf.is_empty() {
            // Nothing of a next request has arrived: an idle keep-alive connection holds no
            // buffers (as nginx's), so a thousand idle clients cost little memory.
            reader.buf = BytesMut::new();
            out = Vec::new();
        }
        let head = match read_head(&mut reader, &mut writer, &mut conn, index == 0).await? {
            Next::Head(head) => head,
            Next::Close => return Ok(()),
        };
        let parse::Head {
            request,
            framing,
            keep_alive,
            expect_continue,
            ambiguous,
        } = *head;
        let ctx = &conn.ctx;
        if ambiguous {
            ctx.framing.raise(index);
        }
        index += 1;
        let method = request.method().clone();
        let http10 = request.version() == http::Version::HTTP_10;
        // The body borrows the read side; it comes back when the body ends or is dropped.
        let (lent, back, wants) = match framing {
            Framing::Length(0) => (None, None, None),
            framing => {
                let (tx, rx) = oneshot::channel();
                let (wants_tx, wants_rx) = if expect_continue {
                    let (t, r) = oneshot::channel();
                    (Some(t), Some(r))
                } else {
                    (None, None)
                };
                (
                    Some((Decoder::new(framing), tx, wants_tx)),
                    Some(rx),
                    wants_rx,
                )
            }
        };
        let mut held = Some(reader);
        let body = match lent {
            None => RequestBody::empty(),
            Some((decoder, tx, wants_tx)) => match held.take() {
                Some(r) => RequestBody::lend(r, decoder, tx, wants_tx),
                None => RequestBody::empty(),
            },
        };
        let Ok(()) = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
        let call = service.call(request.map(|()| body));
        let response = match respond(call, held.as_mut(), wants, &mut writer).await? {
            Some(response) => response,
            None => return Ok(()),
        };
        let keep_alive = keep_alive && !ctx.shutdown.is_triggered();
        let asked = encode::Asked {
            method: &method,
            http10,
            keep_alive,
        };
        let written = write_response(response, asked, &mut writer, &mut out).await?;
        reader = match (held, back) {
            (Some(r), _) => r,
            (None, Some(back)) => match take_back(back, ctx.header_read_timeout).await {
                Some(r) => r,
                None => return close(&mut writer).await,
            },
            (None, None) => return close(&mut writer).await,
        };
        if written.last || !keep_alive || ctx.shutdown.is_triggered() {
            return close(&mut writer).await;
        }
    }
}

async fn close(writer: &mut Writer) -> Result<(), BoxError> {
    let _ = writer.shutdown().await;
    Ok(())
}

/// Waits for the service's answer; meanwhile sends `100 Continue` when the body is first read,
/// and notices a client that closed its connection (the request is then abandoned, as hyper
/// does).
async fn respond<F, B>(
    call: F,
    mut held: Option<&mut Reader>,
    mut wants: Option<oneshot::Receiver<()>>,
    writer: &mut Writer,
) -> io::Result<Option<Response<B>>>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    let mut call = pin!(call);
    let mut watch_eof = held.as_ref().is_some_and(|r| r.buf.is_empty());
    loop {
        tokio::select! {
            biased;
            response = &mut call => {
                let Ok(response) = response;
                return Ok(Some(response));
            }
            wanted = async {
                match wants.as_mut() {
                    Some(w) => w.await.is_ok(),
                    None => false,
                }
            }, if wants.is_some() => {
                wants = None;
                if wanted {
                    writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                }
            }
            read = async { match held.as_deref_mut() { Some(r) => r.fill().await, None => Ok(1) } }, if watch_eof => {
                watch_eof = false;
                if read? == 0 {
                    return Ok(None);
                }
            }
        }
    }
}

/// The read side back from a lent body. A body read to its end gives it back as it is. One
/// dropped before its end is drained as far as hyper's engine would have read it: hyper reads
/// one frame ahead of the service (unless a `100 Continue` is still owed) and, once the body is
/// dropped, one more frame (from what is buffered, or one read that does not wait); the
/// connection is kept only if that ends the body.
async fn take_back(back: oneshot::Receiver<Returned>, wait: Duration) -> Option<Reader> {
    match tokio::time::timeout(wait, back).await {
        Ok(Ok(Returned::Done(reader))) => Some(reader),
        Ok(Ok(Returned::Unfinished(mut reader, mut decoder, ahead))) => {
            for _ in 0..if ahead { 2 } else { 1 } {
                let mut step = decoder.step(&mut reader.buf);
                if matches!(step, Ok(Step::More)) {
                    match poll_once(reader.fill()) {
                        Some(Ok(n)) if n > 0 => step = decoder.step(&mut reader.buf),
                        _ => return None,
                    }
                }
                match step {
                    Ok(Step::End) => return Some(reader),
                    Ok(Step::Data(_) | Step::Trailers(_)) if decoder.is_eof() => {
                        return Some(reader)
                    }
                    Ok(Step::Data(_) | Step::Trailers(_)) => {}
                    Ok(Step::More) | Err(_) => return None,
                }
            }
            None
        }
        _ => None,
    }
}

/// What writing a response found.
struct Written {
    last: bool,
}

async fn write_response<B>(
    response: Response<B>,
    asked: encode::Asked<'_>,
    writer: &mut Writer,
    out: &mut Vec<u8>,
) -> Result<Written, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let shape = if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    };
    out.clear();
    // One allocation for the head and a small body.
    out.reserve(2 * 1024);
    let plan = encode::head(&parts, asked, shape, out);
    let mut body = pin!(body);
    let mut sent: u64 = 0;
    if shape.is_some() && !plan.bodiless {
        loop {
            let ready: Option<Option<Result<_, BoxError>>> =
                poll_once(body.as_mut().frame()).map(|frame| frame.map(|f| f.map_err(Into::into)));
            let frame = match ready {
                Some(frame) => frame,
                None => {
                    flush(writer, out).await?;
                    body.as_mut().frame().await.map(|f| f.map_err(Into::into))
                }
            };
            let Some(frame) = frame else { break };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    // What is already framed (the head, at least) goes out first, so the client
                    // reads a truncated answer rather than none (a body can fail before its first
                    // wait, when the upstream's last bytes and its close arrived together).
                    flush(writer, out).await?;
                    return Err(e);
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let len = data.len() as u64;
            match plan.out {
                encode::Out::Length(n) => {
                    if sent + len > n {
                        return Err("the response body is longer than its length".into());
                    }
                    put(writer, out, data).await?;
                }
                encode::Out::Chunked => {
                    out.extend_from_slice(format!("{len:X}\r\n").as_bytes());
                    put(writer, out, data).await?;
                    out.extend_from_slice(b"\r\n");
                }
                encode::Out::Close => put(writer, out, data).await?,
            }
            sent += len;
        }
    }
    match plan.out {
        encode::Out::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        encode::Out::Length(n) if sent < n && shape.is_some() && !plan.bodiless => {
            flush(writer, out).await?;
            return Err("the response body ended before its length".into());
        }
        _ => {}
    }
    flush(writer, out).await?;
    Ok(Written { last: plan.last })
}

/// Queues `data` after what `out` holds: copied when small, else written as it is.
async fn put(writer: &mut Writer, out: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if data.len() < COPY_LIMIT {
        out.extend_from_slice(&data);
        return Ok(());
    }
    flush(writer, out).await?;
    writer.write_all(&data).await
}

async fn flush(writer: &mut Writer, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        writer.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub(crate) struct Rewind<T> {
    prefix: Option<Bytes>,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, whose next reads return `prefix` first.
    pub(crate) fn new(prefix: BytesMut, inner: T) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then(|| prefix.freeze()),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut prefix) = self.prefix.take() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if !prefix.is_empty() {
                self.prefix = Some(prefix);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
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
