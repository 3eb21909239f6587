//! `ConnectionLayer`, the first layer of the stack, which hands what the proxy knows of a client
//! connection ([`Connection`]) to every request on that connection as an extension. Because the
//! layer is part of the stack, the stack alone (as tests drive it) sees the framing check and
//! `x-forwarded-for` exactly as served connections do.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

pub use super::meta::Connection;
use super::meta::RequestMeta;

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
        let index = self.connection.next_request();
        RequestMeta::of(&mut req).connection = Some((self.connection.clone(), index));
        self.inner.call(req)
    }
}
