//! Bodies that stall are abandoned: `server.body_idle_timeout_secs` bounds how long a request
//! or response body may make no progress, in either direction.
//!
//! - [`IdleBody`] wraps a body the gateway reads from (the client's request body on its way
//!   upstream, the upstream's response body on its way to the client). When its source yields
//!   nothing for the timeout it ends in an error: hyper then closes the HTTP/1 connection or
//!   resets the h2 stream, and the upstream connection is dropped, never returned to the pool.
//! - A client that stops *reading* is caught where it shows: over HTTP/1 by the write-stall
//!   watchdog on its socket (`server::framing::SniffIo`); over HTTP/2, where one stalled
//!   stream does not stall the socket and hyper stops polling that stream's body, by [`relay`]:
//!   a task that moves the upstream body to the client through a one-frame channel and gives up
//!   when either side makes no progress for the timeout, dropping the upstream body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::metrics::Metrics;
use crate::upstream::{boxed, BodyError, GatewayBody};

/// Which way a body flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

impl Direction {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

fn abandoned(direction: Direction, timeout: Duration, metrics: &Metrics) -> BodyError {
    tracing::warn!(
        direction = direction.as_str(),
        timeout_secs = timeout.as_secs(),
        "a body made no progress for the body idle timeout; abandoning it"
    );
    metrics.body_idle_timeout(direction.as_str());
    BodyError::new(format!(
        "the {} body made no progress for {timeout:?}",
        direction.as_str()
    ))
}

/// A body that fails once its source makes no progress for `timeout`.
pub struct IdleBody {
    inner: GatewayBody,
    timeout: Duration,
    direction: Direction,
    metrics: Arc<Metrics>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Raised when the timeout fired (so the request path can tell a stalled client from a
    /// failed upstream).
    fired: Arc<AtomicBool>,
}

impl IdleBody {
    /// Wraps `inner`.
    pub fn new(
        inner: GatewayBody,
        timeout: Duration,
        direction: Direction,
        metrics: Arc<Metrics>,
        fired: Arc<AtomicBool>,
    ) -> Self {
        Self {
            inner,
            timeout,
            direction,
            metrics,
            idle: None,
            fired,
        }
    }
}

impl Body for IdleBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.fired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(abandoned(
                    this.direction,
                    this.timeout,
                    &this.metrics,
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps `body` so it fails after `timeout` without progress.
pub fn idle(
    body: GatewayBody,
    timeout: Duration,
    direction: Direction,
    metrics: &Arc<Metrics>,
    fired: Arc<AtomicBool>,
) -> GatewayBody {
    boxed(IdleBody::new(
        body,
        timeout,
        direction,
        metrics.clone(),
        fired,
    ))
}

/// Moves an upstream response body to an HTTP/2 client through a one-frame channel, giving up
/// when the upstream sends nothing, or the client takes nothing, for `timeout`.
pub fn relay(mut body: GatewayBody, timeout: Duration, metrics: Arc<Metrics>) -> GatewayBody {
    if body.is_end_stream() {
        return body;
    }
    let size = body.size_hint();
    let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BodyError>::new(1);
    tokio::spawn(async move {
        loop {
            let frame = match tokio::time::timeout(timeout, body.frame()).await {
                Err(_) => {
                    tx.abort(abandoned(Direction::Response, timeout, &metrics));
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => {
                    tx.abort(e);
                    return;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            match tokio::time::timeout(timeout, tx.send(frame)).await {
                Ok(Ok(())) => {}
                // The client went away: nothing to deliver.
                Ok(Err(_)) => return,
                Err(_) => {
                    // The client took nothing: the upstream body is dropped here, which closes
                    // its connection; the stream learns of it when it is polled again.
                    tx.abort(abandoned(Direction::Response, timeout, &metrics));
                    return;
                }
            }
        }
    });
    boxed(Sized { inner: rx, size })
}

/// A channel body that keeps the size hint of the body it relays.
struct Sized<B> {
    inner: B,
    size: SizeHint,
}

impl<B: Body + Unpin> Body for Sized<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}
