//! Listeners: accept, serve each connection with hyper-util's auto builder (HTTP/1.1 and h2c on
//! one port, or both over TLS with ALPN), cap concurrent connections, and drain gracefully on
//! shutdown.
//!
//! One deadline runs from accept until the connection's first complete request head, whatever
//! the protocol phase: the HTTP/1-or-h2 sniff, the TLS handshake, the h2 preface and SETTINGS,
//! the first HEADERS. A connection that misses it is closed, so no slot is held by a peer that
//! never asks for anything.
//!
//! The same loop serves the proxy, the admin endpoints and the simulator. With
//! `server.http1_engine = "native"`, plain-TCP HTTP/1.1 connections of the proxy listeners are
//! served by [`h1`] instead of hyper (h2c, TLS, admin and simulator stay on hyper).

pub mod close;
pub mod framing;
pub mod h1;
pub mod streams;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Http1Engine;

pub use close::{CloseCause, CloseReason, OnClose};
use framing::{FramingFlag, SniffIo};
use streams::StreamExecutor;

/// The receiving side of a shutdown request. Cloneable; every clone sees the trigger.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of a shutdown request.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A new trigger and its signal.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Asks every listener to stop accepting and drain.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    /// A further signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Completes once shutdown was triggered (or the trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Called when a client stopped reading for the write-stall timeout (the connection is closed).
pub type OnWriteStall = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Per-listener connection settings.
#[derive(Clone)]
pub struct ConnectionSettings {
    /// Time a client has from accept to its first complete request head (through TLS and the
    /// h2 preface), and between HTTP/1.1 requests.
    pub header_read_timeout: Duration,
    /// Time a client may leave the gateway's writes unread before its connection is closed
    /// (`None`: no limit).
    pub write_stall_timeout: Option<Duration>,
    /// Told of every connection closed for a write stall.
    pub on_write_stall: Option<OnWriteStall>,
    /// Told of every connection the gateway closed, with why.
    pub on_close: Option<OnClose>,
    /// Concurrent connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Time in-flight requests get after shutdown is triggered.
    pub shutdown_grace: Duration,
    /// TLS for every connection (the handshake counts against the header read timeout).
    pub tls: Option<crate::tls::ServerTls>,
    /// The engine of plain-TCP HTTP/1.1 connections (used where the service's body type is
    /// one the native engine can produce, see [`ServerBody`]).
    pub http1_engine: Http1Engine,
}

/// A request body type a listener's service takes. hyper's own [`Incoming`] is served by hyper
/// alone; [`ProxyBody`] by either engine.
pub trait ServerBody: Send + Sized + 'static {
    /// From hyper's body.
    fn from_hyper(body: Incoming) -> Self;
    /// From the native engine's body, when this type can hold it.
    const FROM_NATIVE: Option<fn(h1::RequestBody) -> Self>;
}

impl ServerBody for Incoming {
    fn from_hyper(body: Incoming) -> Self {
        body
    }
    const FROM_NATIVE: Option<fn(h1::RequestBody) -> Self> = None;
}

/// The request body of the proxy listeners: read by hyper or by the native engine.
#[derive(Debug)]
pub enum ProxyBody {
    /// Read by hyper.
    Hyper(Incoming),
    /// Read by [`h1`].
    Native(h1::RequestBody),
}

impl ServerBody for ProxyBody {
    fn from_hyper(body: Incoming) -> Self {
        ProxyBody::Hyper(body)
    }
    const FROM_NATIVE: Option<fn(h1::RequestBody) -> Self> = Some(ProxyBody::Native);
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Native(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Hyper(b) => b.is_end_stream(),
            ProxyBody::Native(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ProxyBody::Hyper(b) => b.size_hint(),
            ProxyBody::Native(b) => b.size_hint(),
        }
    }
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            write_stall_timeout: None,
            on_write_stall: None,
            on_close: None,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            shutdown_grace: Duration::from_secs(20),
            tls: None,
            http1_engine: Http1Engine::Hyper,
        }
    }
}

/// Most bytes of request target and header fields the gateway accepts; checked by the request
/// path, which answers 431 in the API's error shape.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields per request the gateway accepts (checked like [`MAX_HEAD_BYTES`]). Below
/// hyper's own HTTP/1 count (its default, 100), which is the backstop for header counts: hyper
/// parses up to its default into a buffer on the stack, while any configured count costs two
/// heap buffers initialised on every request (a test holds the gateway's answer just below
/// 100 headers, so a change of hyper's default shows).
pub const MAX_HEADERS: usize = 96;
/// hyper's own HTTP/1 buffer limit, a backstop above the gateway's: a head over it gets hyper's
/// bare answer and the connection closed. It also bounds what hyper queues to write to a
/// client that stops reading.
const HYPER_MAX_BUF: usize = 2 * MAX_HEAD_BYTES;

// HTTP/2 limits, pinned here so a dependency update cannot change them silently.
/// Streams reset by the client before the server accepted them (rapid-reset protection).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for protocol errors before the connection is closed.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1_024;
/// Header-list bytes per request: hyper's 16 KiB, so a small HPACK block cannot expand into a
/// large upstream header set.
const MAX_H2_HEADER_LIST: u32 = 16 * 1024;
/// Bytes buffered per stream to send to a client: what a stalled HTTP/2 stream costs.
pub const H2_MAX_SEND_BUF: usize = 16 * 1024;
/// Per-stream and per-connection receive windows.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

fn builder(settings: &ConnectionSettings) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(StreamExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(HYPER_MAX_BUF)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// What a per-connection service learns of its connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Raised when a request on this connection carried both framing headers.
    pub framing: FramingFlag,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Where the request path records why it is closing the connection.
    pub close: CloseCause,
}

/// Marks its connection's first request: hyper calls the service once a request head is
/// complete, which ends the connection's head deadline.
#[derive(Clone)]
struct FirstHead<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S: tower::Service<R>, R> tower::Service<R> for FirstHead<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Release);
        }
        self.inner.call(req)
    }
}

/// Whether `error` is hyper's HTTP/1 header read timeout (an h2 keep-alive timeout carries a
/// source; the header timeout has none).
fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(|e| e.is_timeout() && std::error::Error::source(e).is_none())
}

/// Serves `listener` until `shutdown`, then drains for at most `shutdown_grace`.
///
/// `make` builds the service for one connection.
pub async fn serve<M, S, B, RB>(
    name: &'static str,
    listener: TcpListener,
    make: M,
    settings: ConnectionSettings,
    mut shutdown: Shutdown,
) where
    M: Fn(ConnectionInfo) -> S,
    S: tower::Service<Request<RB>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: ServerBody,
{
    use tower::ServiceExt;
    let native = match (settings.http1_engine, &settings.tls, RB::FROM_NATIVE) {
        (Http1Engine::Native, None, Some(from_native)) => Some(from_native),
        _ => None,
    };
    let from_hyper: fn(Request<Incoming>) -> Request<RB> = |req| req.map(RB::from_hyper);
    tracing::debug!(
        listener = name,
        http1_engine = if native.is_some() { "native" } else { "hyper" },
        "serving"
    );
    let builder = builder(&settings);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let framing = FramingFlag::default();
        let close = CloseCause::default();
        let tls = settings.tls.as_ref().map(crate::tls::ServerTls::acceptor);
        let seen = Arc::new(AtomicBool::new(false));
        let service = FirstHead {
            inner: make(ConnectionInfo {
                peer,
                framing: framing.clone(),
                tls: tls.is_some(),
                close: close.clone(),
            }),
            seen: seen.clone(),
        };
        let native_ctx = native.map(|from_native| {
            let ctx = h1::Ctx {
                header_read_timeout: settings.header_read_timeout,
                close: close.clone(),
                framing: framing.clone(),
                shutdown: shutdown.clone(),
            };
            (from_native, ctx)
        });
        let builder = builder.clone();
        let graceful = graceful.watcher();
        let head_timeout = settings.header_read_timeout;
        let on_close = settings.on_close.clone();
        let stall = settings
            .write_stall_timeout
            .map(|t| (t, settings.on_write_stall.clone()));
        tokio::spawn(async move {
            let io_close = close.clone();
            let connection = async move {
                match (tls, native_ctx) {
                    (None, Some((from_native, ctx))) => {
                        let (read, write) = stream.into_split();
                        let mut reader = h1::body::Reader::new(read, bytes::BytesMut::new());
                        if !h1::sniff_h2(&mut reader).await? {
                            // Held until the connection ends, so a drain waits for it.
                            let _graceful = graceful;
                            let writer = SniffIo::writer(write, stall, io_close);
                            let service =
                                service.map_request(move |req: Request<h1::RequestBody>| {
                                    req.map(from_native)
                                });
                            return h1::serve(reader, writer, service, ctx).await;
                        }
                        let (read, buf) = reader.into_parts();
                        let stream = read.reunite(write)?;
                        let io = h1::Rewind::new(buf, stream);
                        let io = TokioIo::new(SniffIo::new(io, framing, stall, io_close));
                        let service = TowerToHyperService::new(service.map_request(from_hyper));
                        // Boxed: hyper's connection state is not carried in every connection
                        // task's future (a native connection's task stays small).
                        Box::pin(graceful.watch(builder.serve_connection(io, service).into_owned()))
                            .await
                    }
                    (None, None) => {
                        let io = TokioIo::new(SniffIo::new(stream, framing, stall, io_close));
                        let service = TowerToHyperService::new(service.map_request(from_hyper));
                        // Boxed: hyper's connection state is not carried in every connection
                        // task's future (a native connection's task stays small).
                        Box::pin(graceful.watch(builder.serve_connection(io, service).into_owned()))
                            .await
                    }
                    (Some(acceptor), _) => match Box::pin(acceptor.accept(stream)).await {
                        Ok(stream) => {
                            let service = TowerToHyperService::new(service.map_request(from_hyper));
                            let io = TokioIo::new(SniffIo::new(stream, framing, stall, io_close));
                            Box::pin(
                                graceful.watch(builder.serve_connection(io, service).into_owned()),
                            )
                            .await
                        }
                        Err(e) => Err(format!("TLS handshake failed: {e}").into()),
                    },
                }
            };
            // hyper's own header timer starts only once it reads a request, after the sniff
            // and the handshake; this one starts at accept and stops at the first request.
            let head_deadline = async {
                tokio::time::sleep(head_timeout).await;
                if seen.load(Ordering::Acquire) {
                    std::future::pending::<()>().await;
                }
            };
            let ended = tokio::select! {
                result = connection => result,
                () = head_deadline => {
                    close.set(CloseReason::HeaderTimeout);
                    Err("no complete request head within the header read timeout".into())
                }
            };
            if let Err(e) = &ended {
                if is_header_timeout(&**e) {
                    // hyper's timer, waiting for a later HTTP/1.1 request: a head begun and
                    // not finished, or none begun at all.
                    close.set(if close.head_started() || !seen.load(Ordering::Acquire) {
                        CloseReason::HeaderTimeout
                    } else {
                        CloseReason::Idle
                    });
                }
                tracing::debug!(listener = name, peer = %peer, error = %e, "connection ended with error");
            }
            drop(permit);
            if let Some(reason) = close.get() {
                tracing::debug!(listener = name, peer = %peer, reason = reason.as_str(), "closed the connection");
                if let Some(on_close) = &on_close {
                    on_close(reason);
                }
            }
        });
    }
    drop(listener);
    let in_flight = settings.max_connections - permits.available_permits();
    tracing::info!(listener = name, connections = in_flight, "draining");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = name, "drained"),
        _ = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(listener = name, grace = ?settings.shutdown_grace, "shutdown grace expired; closing remaining connections");
        }
    }
}

/// Binds `addr` (port 0 picks a free one) and logs `listening on ADDR`.
pub async fn bind(name: &'static str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(listener = name, "listening on {local}");
    Ok(listener)
}
