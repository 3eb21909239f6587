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
//!   a task that moves the upstream body to the client a frame at a time, as the client asks
//!   for them, and gives up when either side makes no progress for the timeout, dropping the
//!   upstream body and ending the stream's task ([`StreamCancel`]): the stream is reset
//!   (RST_STREAM CANCEL) at once, without waiting for the client to open its window again.
//! - An HTTP/1.1 body abandoned either way ends its connection; the connection's
//!   [`CloseCause`] records why (`modegate_connections_closed_total{reason="body_idle"}`).

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
use crate::server::streams::StreamCancel;
use crate::server::{CloseCause, CloseReason};
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
    /// The HTTP/1.1 connection this body ends when abandoned.
    close: Option<CloseCause>,
}

impl IdleBody {
    /// Wraps `inner`; `close` is the HTTP/1.1 connection that abandoning it closes.
    pub fn new(
        inner: GatewayBody,
        timeout: Duration,
        direction: Direction,
        metrics: Arc<Metrics>,
        fired: Arc<AtomicBool>,
        close: Option<CloseCause>,
    ) -> Self {
        Self {
            inner,
            timeout,
            direction,
            metrics,
            idle: None,
            fired,
            close,
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
                if let Some(close) = &this.close {
                    close.set(CloseReason::BodyIdle);
                }
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

/// Wraps `body` so it fails after `timeout` without progress (see [`IdleBody::new`]).
pub fn idle(
    body: GatewayBody,
    timeout: Duration,
    direction: Direction,
    metrics: &Arc<Metrics>,
    fired: Arc<AtomicBool>,
    close: Option<CloseCause>,
) -> GatewayBody {
    boxed(IdleBody::new(
        body,
        timeout,
        direction,
        metrics.clone(),
        fired,
        close,
    ))
}

/// Moves an upstream response body to an HTTP/2 client one frame at a time, on demand, giving
/// up when the upstream sends nothing, or the client takes nothing, for `timeout`.
///
/// The relay reads the next upstream frame only when the client's side asks for one, which
/// hyper does only while the stream can send. A stalled stream therefore holds no frame here:
/// what the client does not take stays in the upstream connection, where backpressure belongs.
/// Giving up ends the stream's task, which resets the stream at once (called from outside an
/// h2 stream task, the stream fails when next polled instead).
pub fn relay(mut body: GatewayBody, timeout: Duration, metrics: Arc<Metrics>) -> GatewayBody {
    if body.is_end_stream() {
        return body;
    }
    let stream = StreamCancel::current();
    let reset = move || {
        if let Some(stream) = &stream {
            stream.cancel();
        }
    };
    let size = body.size_hint();
    let (want, mut wanted) = tokio::sync::mpsc::channel::<()>(1);
    let (send, frames) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(1);
    tokio::spawn(async move {
        loop {
            match tokio::time::timeout(timeout, wanted.recv()).await {
                Ok(Some(())) => {}
                // The client went away: nothing to deliver.
                Ok(None) => return,
                Err(_) => {
                    // The client took nothing: the stream is reset, and the upstream body is
                    // dropped here, which closes its connection.
                    abandoned(Direction::Response, timeout, &metrics);
                    reset();
                    return;
                }
            }
            let item = match tokio::time::timeout(timeout, body.frame()).await {
                Err(_) => {
                    let error = abandoned(Direction::Response, timeout, &metrics);
                    reset();
                    Err(error)
                }
                Ok(None) => return,
                Ok(Some(item)) => item,
            };
            let failed = item.is_err();
            if send.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    boxed(Relayed {
        want,
        frames,
        asked: false,
        size,
    })
}

/// The client's side of [`relay`]: asks for a frame when polled, then waits for it; keeps the
/// size hint of the body it relays.
struct Relayed {
    want: tokio::sync::mpsc::Sender<()>,
    frames: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BodyError>>,
    /// A frame has been asked for and not yet received.
    asked: bool,
    size: SizeHint,
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if !this.asked {
            if this.want.try_send(()).is_err() {
                // The relay only stops listening mid-body when it gave up on this client.
                return Poll::Ready(Some(Err(BodyError::new(
                    "the response body was abandoned: the client took nothing for the body idle timeout",
                ))));
            }
            this.asked = true;
        }
        let polled = this.frames.poll_recv(cx);
        if matches!(polled, Poll::Ready(Some(_))) {
            this.asked = false;
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}
