//! The upstream connection pool: one multiplexed HTTP/2 connection per origin (hyper's
//! `client::conn`) when ALPN chose h2, else HTTP/1.1 connections kept alive and reused newest
//! first (the warmest socket), with an idle timeout and a cap per origin. HTTP/1.1 runs on
//! hyper's `client::conn::http1`, or on the native client ([`super::h1`]) when
//! `server.http1_engine = "native"`.
//!
//! An HTTP/1.1 sender goes back to the pool as soon as the response head arrives; it is only
//! handed out again once hyper's dispatcher says it is ready — that is, once the previous
//! response body was read to its end. A body abandoned mid-way leaves its connection closed
//! and never reused, with no task per request to watch it. A request the connection could not
//! even start to send (the upstream closed an idle keep-alive connection, an h2 connection
//! going away) is retried once on a fresh connection; nothing that reached the wire is.
//!
//! A native connection comes back to the pool from its response body, once that body was
//! read to its end and the exchange allows keep-alive; before it is handed out again it is
//! checked, without waiting, for an upstream that closed it or sent something unasked.
//!
//! Connections come from the connector the TLS and egress settings build (rustls, ALPN, an
//! optional CONNECT tunnel), so every failure keeps its classification: connect or TLS while
//! connecting, reset once sending.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use http::uri::{Authority, Scheme};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use super::egress::EgressConnector;
use super::h1::{self as native, Connection as NativeConnection};
use super::{
    BoxError, GatewayBody, UPSTREAM_H2_CONNECTION_WINDOW, UPSTREAM_H2_STREAM_WINDOW,
    UPSTREAM_READ_BUF,
};
use crate::config::Http1Engine;

type Connector = HttpsConnector<EgressConnector>;
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Why a pooled exchange failed.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made (TCP, the proxy tunnel, or TLS).
    Connect(BoxError),
    /// The connection failed while the request was sent or the response head awaited.
    Send(BoxError),
    /// The request's URI names no origin.
    NoOrigin,
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(e) => write!(f, "connect: {e}"),
            PoolError::Send(e) => write!(f, "send: {e}"),
            PoolError::NoOrigin => f.write_str("the request URI names no origin"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Connect(e) => Some(&**e),
            PoolError::Send(e) => Some(&**e),
            PoolError::NoOrigin => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    https: bool,
    authority: Authority,
}

impl Key {
    fn of(uri: &Uri) -> Option<Key> {
        Some(Key {
            https: uri.scheme() == Some(&Scheme::HTTPS),
            authority: uri.authority()?.clone(),
        })
    }
}

#[derive(Default)]
struct Host {
    /// The origin's h2 connection, shared by every request.
    h2: Option<http2::SendRequest<GatewayBody>>,
    /// HTTP/1.1 connections, newest at the back, with when each was checked in.
    h1: VecDeque<(http1::SendRequest<GatewayBody>, Instant)>,
    /// Native HTTP/1.1 connections, newest at the back, with when each was checked in.
    native: VecDeque<(Box<NativeConnection>, Instant)>,
    /// Where this origin's native connections come back to.
    home: Option<Arc<HostHome>>,
}

impl Host {
    fn home(&mut self, pool: &Arc<Inner>, key: &Key) -> Arc<HostHome> {
        self.home
            .get_or_insert_with(|| {
                Arc::new(HostHome {
                    pool: Arc::downgrade(pool),
                    host: HeaderValue::from_str(key.authority.as_str()).ok(),
                    key: key.clone(),
                })
            })
            .clone()
    }
}

enum Sender {
    H1(http1::SendRequest<GatewayBody>),
    H2(http2::SendRequest<GatewayBody>),
    Native(Box<NativeConnection>, Arc<HostHome>),
}

/// An origin of the pool, as the place its native connections come back to.
struct HostHome {
    pool: Weak<Inner>,
    key: Key,
    /// The origin's `Host` value, built once.
    host: Option<HeaderValue>,
}

impl native::Home for HostHome {
    fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    fn check_in(&self, connection: Box<NativeConnection>) {
        let Some(inner) = self.pool.upgrade() else {
            return;
        };
        let max = inner.settings.max_idle_per_host;
        let mut hosts = inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let host = hosts.entry(&self.key);
        if host.native.len() >= max {
            host.native.pop_front();
        }
        if max > 0 {
            host.native.push_back((connection, Instant::now()));
        }
    }
}

/// A response body from either HTTP/1.1 engine or h2.
#[derive(Debug)]
pub enum PoolBody {
    /// From a hyper connection.
    Hyper(Incoming),
    /// From a native HTTP/1.1 connection.
    Native(native::ResponseBody),
}

impl Body for PoolBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            PoolBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            PoolBody::Native(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PoolBody::Hyper(b) => b.is_end_stream(),
            PoolBody::Native(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PoolBody::Hyper(b) => b.size_hint(),
            PoolBody::Native(b) => b.size_hint(),
        }
    }
}

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// How long an unused HTTP/1.1 connection is kept.
    pub idle_timeout: Duration,
    /// HTTP/1.1 connections kept per origin.
    pub max_idle_per_host: usize,
    /// Which HTTP/1.1 client runs the origins that do not speak h2 (`server.http1_engine`).
    pub http1_engine: Http1Engine,
}

/// Origins and their connections. A gateway talks to one or two origins (the API, the token
/// endpoint), so a short list searched by equality beats hashing the authority per request.
#[derive(Default)]
struct Hosts(Vec<(Key, Host)>);

impl Hosts {
    fn get_mut(&mut self, key: &Key) -> Option<&mut Host> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, h)| h)
    }

    fn entry(&mut self, key: &Key) -> &mut Host {
        match self.0.iter().position(|(k, _)| k == key) {
            Some(i) => &mut self.0[i].1,
            None => {
                self.0.push((key.clone(), Host::default()));
                let last = self.0.len() - 1;
                &mut self.0[last].1
            }
        }
    }
}

struct Inner {
    connector: Connector,
    hosts: Mutex<Hosts>,
    settings: PoolSettings,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool over `connector`. Inside a Tokio runtime, a background task closes connections
    /// idle past the timeout even for origins that see no further traffic.
    pub fn new(connector: Connector, settings: PoolSettings) -> Pool {
        let inner = Arc::new(Inner {
            connector,
            hosts: Mutex::new(Hosts::default()),
            settings,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&inner), settings.idle_timeout));
        }
        Pool { inner }
    }

    /// Connections currently pooled for `uri`'s origin: (h2 connections, HTTP/1.1 connections).
    pub fn pooled(&self, uri: &Uri) -> (usize, usize) {
        let Some(key) = Key::of(uri) else {
            return (0, 0);
        };
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.get_mut(&key).map_or((0, 0), |h| {
            (
                h.h2.iter().filter(|s| !s.is_closed()).count(),
                h.h1.iter().filter(|(s, _)| !s.is_closed()).count()
                    + h.native
                        .iter_mut()
                        .map(|(c, _)| usize::from(c.is_reusable()))
                        .sum::<usize>(),
            )
        })
    }

    /// Sends `request` (an absolute URI) and waits for the response head.
    pub async fn send(
        &self,
        request: Request<GatewayBody>,
    ) -> Result<Response<PoolBody>, PoolError> {
        let key = Key::of(request.uri()).ok_or(PoolError::NoOrigin)?;
        let mut request = request;
        let mut reused = true;
        loop {
            let sender = match self.checkout(&key) {
                Some(sender) => sender,
                None => {
                    reused = false;
                    // Boxed: connecting (TCP, tunnel, TLS, handshake) is a large state machine
                    // that only the first request to an origin needs; inline, every
                    // request's future would carry (and copy) its size.
                    Box::pin(self.connect(&key)).await?
                }
            };
            let outcome = match sender {
                Sender::H2(mut sender) => {
                    *request.version_mut() = Version::HTTP_2;
                    sender.try_send_request(request).await
                }
                Sender::Native(connection, home) => {
                    *request.version_mut() = Version::HTTP_11;
                    // Boxed: the native exchange's state machine would otherwise make every
                    // request's future larger on either engine (hyper's requests move it too).
                    match Box::pin(connection.send(request, Some(home))).await {
                        Ok(response) => return Ok(response.map(PoolBody::Native)),
                        // Never sent: once more, on a connection of its own.
                        Err(native::SendError {
                            request: Some(back),
                            ..
                        }) if reused => {
                            request = back;
                            reused = false;
                            continue;
                        }
                        Err(e) => return Err(PoolError::Send(e.error.into())),
                    }
                }
                Sender::H1(mut sender) => {
                    *request.version_mut() = Version::HTTP_11;
                    origin_form(&mut request);
                    let sent = sender.try_send_request(request).await;
                    if sent.is_ok() {
                        self.checkin(&key, sender);
                    }
                    sent
                }
            };
            match outcome {
                Ok(response) => return Ok(response.map(PoolBody::Hyper)),
                Err(mut e) => match e.take_message() {
                    // Never sent: once more, on a connection of its own.
                    Some(back) if reused => {
                        request = back;
                        reused = false;
                        self.forget_h2(&key);
                        continue;
                    }
                    _ => return Err(PoolError::Send(e.into_error().into())),
                },
            }
        }
    }

    fn checkout(&self, key: &Key) -> Option<Sender> {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let host = hosts.get_mut(key)?;
        if let Some(h2) = &host.h2 {
            if !h2.is_closed() {
                return Some(Sender::H2(h2.clone()));
            }
            host.h2 = None;
        }
        // Checked in oldest first, so the expired ones are at the front (the reaper takes any
        // others); one clock read per checkout.
        let timeout = self.inner.settings.idle_timeout;
        if self.inner.settings.http1_engine == Http1Engine::Native {
            expire(&mut host.native, timeout);
            // Newest first; one the upstream closed (or wrote to unasked) is dropped.
            while let Some((mut connection, _)) = host.native.pop_back() {
                if connection.is_reusable() {
                    return Some(Sender::Native(connection, host.home(&self.inner, key)));
                }
            }
            return None;
        }
        expire(&mut host.h1, timeout);
        // Newest first; a connection still finishing its last response is skipped, not lost,
        // and a closed one is dropped on the way.
        while let Some(i) = host
            .h1
            .iter()
            .rposition(|(s, _)| s.is_ready() || s.is_closed())
        {
            let (sender, _) = host.h1.remove(i)?;
            if !sender.is_closed() {
                return Some(Sender::H1(sender));
            }
        }
        None
    }

    fn checkin(&self, key: &Key, sender: http1::SendRequest<GatewayBody>) {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let host = hosts.entry(key);
        if host.h1.len() >= self.inner.settings.max_idle_per_host {
            // The oldest goes; dropping its sender closes it once it is idle.
            host.h1.pop_front();
        }
        if self.inner.settings.max_idle_per_host > 0 {
            host.h1.push_back((sender, Instant::now()));
        }
    }

    fn forget_h2(&self, key: &Key) {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(host) = hosts.get_mut(key) {
            if host.h2.as_ref().is_some_and(|s| s.is_closed()) {
                host.h2 = None;
            }
        }
    }

    async fn connect(&self, key: &Key) -> Result<Sender, PoolError> {
        let origin = Uri::builder()
            .scheme(if key.https {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            })
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| PoolError::Connect(e.into()))?;
        let io: Io = self
            .inner
            .connector
            .clone()
            .oneshot(origin)
            .await
            .map_err(PoolError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_send_buf_size(UPSTREAM_READ_BUF)
                .initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
                .initial_connection_window_size(UPSTREAM_H2_CONNECTION_WINDOW)
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_while_idle(false)
                .handshake(io)
                .await
                .map_err(|e| PoolError::Send(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            sender
                .ready()
                .await
                .map_err(|e| PoolError::Send(e.into()))?;
            let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let host = hosts.entry(key);
            match &host.h2 {
                // Another request's connection won the race: new requests share that one.
                Some(existing) if !existing.is_closed() => {}
                _ => host.h2 = Some(sender.clone()),
            }
            return Ok(Sender::H2(sender));
        }
        if self.inner.settings.http1_engine == Http1Engine::Native {
            let home = self
                .inner
                .hosts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .home(&self.inner, key);
            return Ok(Sender::Native(NativeConnection::new(io), home));
        }
        let (mut sender, connection) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUF)
            .handshake(io)
            .await
            .map_err(|e| PoolError::Send(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        sender
            .ready()
            .await
            .map_err(|e| PoolError::Send(e.into()))?;
        Ok(Sender::H1(sender))
    }
}

/// Drops the connections idle for `timeout` or longer from the front of `queue` (checked in
/// oldest first); one clock read when none is due.
fn expire<T>(queue: &mut VecDeque<(T, Instant)>, timeout: Duration) {
    if queue
        .front()
        .is_some_and(|(_, since)| since.elapsed() >= timeout)
    {
        let now = Instant::now();
        while queue
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= timeout)
        {
            queue.pop_front();
        }
    }
}

/// HTTP/1.1 wants the origin form and a `Host`: the authority of the absolute URI.
fn origin_form(request: &mut Request<GatewayBody>) {
    let uri = request.uri();
    if let Some(authority) = uri.authority() {
        if !request.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
    }
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
}

/// Closes connections idle past the timeout, until the pool is gone.
async fn reap(pool: Weak<Inner>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let mut hosts = inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        for (_, host) in hosts.0.iter_mut() {
            host.h1
                .retain(|(s, since)| !s.is_closed() && since.elapsed() < idle_timeout);
            host.native
                .retain_mut(|(c, since)| since.elapsed() < idle_timeout && c.is_reusable());
            if host.h2.as_ref().is_some_and(|s| s.is_closed()) {
                host.h2 = None;
            }
        }
        hosts
            .0
            .retain(|(_, h)| h.h2.is_some() || !h.h1.is_empty() || !h.native.is_empty());
    }
}

impl Service<Request<GatewayBody>> for Pool {
    type Response = Response<PoolBody>;
    type Error = PoolError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<PoolBody>, PoolError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<GatewayBody>) -> Self::Future {
        let pool = self.clone();
        Box::pin(async move { pool.send(request).await })
    }
}
