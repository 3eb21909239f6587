//! Listeners: accept, serve each connection with hyper-util's auto builder (HTTP/1.1 and h2c on
//! one port, or both over TLS with ALPN), cap concurrent connections, and drain gracefully on
//! shutdown.
//!
//! The same loop serves the proxy, the admin endpoints and the simulator.

pub mod framing;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use framing::{FramingFlag, SniffIo};

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
    /// Time a client has to send a complete request head, and its first byte.
    pub header_read_timeout: Duration,
    /// Time a client may leave the gateway's writes unread before its connection is closed
    /// (`None`: no limit).
    pub write_stall_timeout: Option<Duration>,
    /// Told of every connection closed for a write stall.
    pub on_write_stall: Option<OnWriteStall>,
    /// Concurrent connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Time in-flight requests get after shutdown is triggered.
    pub shutdown_grace: Duration,
    /// TLS for every connection (the handshake must finish within the header read timeout).
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            write_stall_timeout: None,
            on_write_stall: None,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            shutdown_grace: Duration::from_secs(20),
            tls: None,
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

fn builder(settings: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
}

/// Serves `listener` until `shutdown`, then drains for at most `shutdown_grace`.
///
/// `make` builds the service for one connection.
pub async fn serve<M, S, B>(
    name: &'static str,
    listener: TcpListener,
    make: M,
    settings: ConnectionSettings,
    mut shutdown: Shutdown,
) where
    M: Fn(ConnectionInfo) -> S,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
        let tls = settings.tls.as_ref().map(crate::tls::ServerTls::acceptor);
        let service = TowerToHyperService::new(make(ConnectionInfo {
            peer,
            framing: framing.clone(),
            tls: tls.is_some(),
        }));
        let builder = builder.clone();
        let graceful = graceful.watcher();
        let first_byte = settings.header_read_timeout;
        let stall = settings
            .write_stall_timeout
            .map(|t| (t, settings.on_write_stall.clone()));
        tokio::spawn(async move {
            // The first-byte deadline: hyper's own header timer only starts once bytes arrive,
            // and choosing HTTP/1 or h2 waits for them without one, so a silent connection
            // would hold its slot for ever.
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) | Err(_) => {
                    tracing::debug!(listener = name, peer = %peer, "no request within the header read timeout; closing");
                    drop(permit);
                    return;
                }
            }
            let result = match tls {
                None => {
                    let io = TokioIo::new(SniffIo::new(stream, framing, stall));
                    graceful
                        .watch(builder.serve_connection(io, service).into_owned())
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(first_byte, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let io = TokioIo::new(SniffIo::new(stream, framing, stall));
                            graceful
                                .watch(builder.serve_connection(io, service).into_owned())
                                .await
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                        Err(_) => Err("no TLS handshake within the header read timeout".into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, peer = %peer, error = %e, "connection ended with error");
            }
            drop(permit);
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
