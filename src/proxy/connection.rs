//! What the proxy knows of a client connection, and `ConnectionLayer`, the first layer of the
//! stack, which hands it to every request on that connection as an extension. Because the
//! layer is part of the stack, the stack alone (as tests drive it) sees the framing check and
//! `x-forwarded-for` exactly as served connections do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use super::headers;
use super::meta::RequestMeta;
use crate::schema::Api;
use crate::server::framing::FramingFlag;
use crate::server::{CloseCause, ConnectionInfo};

/// A client connection, built once and shared by its requests.
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its `x-forwarded-for` value.
    pub forwarded_for: http::HeaderValue,
    /// Raised when a request on this connection carried both framing headers.
    pub framing: FramingFlag,
    /// Whether the client connected over TLS (forwarded as `x-forwarded-proto: https`).
    pub tls: bool,
    /// The API the listener serves: it classifies the connection's requests and chooses their
    /// origin (never a header).
    pub api: Api,
    /// Where the request path records why it closes the connection (an HTTP/1.1 body that made
    /// no progress).
    pub close: CloseCause,
    /// Requests seen so far (HTTP/1 serves them in order, so this numbers them as the framing
    /// sniffer does).
    requests: AtomicU64,
}

impl Connection {
    /// From the server's connection info.
    pub fn new(info: ConnectionInfo) -> Arc<Connection> {
        Connection::for_api(info, Api::Conversation)
    }

    /// From the server's connection info, on a listener serving `api`.
    pub fn for_api(info: ConnectionInfo, api: Api) -> Arc<Connection> {
        Arc::new(Connection {
            api,
            peer: info.peer,
            forwarded_for: headers::forwarded_for(info.peer.ip()),
            framing: info.framing,
            tls: info.tls,
            close: info.close,
            requests: AtomicU64::new(0),
        })
    }

    /// Whether request `index` of this connection carried both framing headers.
    pub fn ambiguous_framing(&self, index: u64) -> bool {
        self.framing.raised_for(index)
    }

    /// A connection from `peer` that no socket stands behind (in-process callers, tests).
    pub fn in_process(peer: SocketAddr) -> Arc<Connection> {
        Connection::in_process_for(peer, Api::Conversation)
    }

    /// [`Connection::in_process`] on a listener serving `api`.
    pub fn in_process_for(peer: SocketAddr, api: Api) -> Arc<Connection> {
        Connection::for_api(
            ConnectionInfo {
                peer,
                framing: FramingFlag::default(),
                tls: false,
                close: CloseCause::default(),
            },
            api,
        )
    }
}

/// Layer for [`WithConnection`].
#[derive(Clone, Debug)]
pub struct ConnectionLayer {
    connection: Arc<Connection>,
}

impl ConnectionLayer {
    /// Hands `connection` to every request.
    pub fn new(connection: Arc<Connection>) -> Self {
        Self { connection }
    }
}

impl<S> Layer<S> for ConnectionLayer {
    type Service = WithConnection<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WithConnection {
            inner,
            connection: self.connection.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct WithConnection<S> {
    inner: S,
    connection: Arc<Connection>,
}

impl<S, B> Service<Request<B>> for WithConnection<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let index = self.connection.requests.fetch_add(1, Ordering::Relaxed);
        RequestMeta::of(&mut req).connection = Some((self.connection.clone(), index));
        self.inner.call(req)
    }
}
