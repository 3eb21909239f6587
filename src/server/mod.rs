//! Listeners: accept, serve each connection with hyper-util's auto builder (HTTP/1.1 and h2c on
//! one port), cap concurrent connections, and drain gracefully on shutdown.
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

/// Per-listener connection settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionSettings {
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Concurrent connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Time in-flight requests get after shutdown is triggered.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Most bytes of request target and header fields the gateway accepts; checked by the request
/// path, which answers 431 in the API's error shape.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields per request the gateway accepts (checked like [`MAX_HEAD_BYTES`]).
pub const MAX_HEADERS: usize = 128;
/// hyper's own HTTP/1 limits, a backstop above the gateway's: a head over these gets hyper's
/// bare answer and the connection closed.
const HYPER_MAX_BUF: usize = 2 * MAX_HEAD_BYTES;
const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;
/// Most HTTP/2 header-list bytes.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;

fn builder(settings: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(HYPER_MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST)
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
        let service = TowerToHyperService::new(make(ConnectionInfo {
            peer,
            framing: framing.clone(),
        }));
        let io = TokioIo::new(SniffIo::new(stream, framing));
        let connection = builder.serve_connection(io, service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
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
