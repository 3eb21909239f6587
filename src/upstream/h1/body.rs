//! Response bodies read from a native upstream connection: decoded with the server side's
//! decoders (`Content-Length`, chunked with hyper's strictness, or to the close), read from the
//! socket only when polled and at most [`UPSTREAM_READ_BUF`] at a time, and the connection
//! handed back to its [`Home`] once the body was read to its end and the exchange allows
//! keep-alive. A body dropped before its end drops (closes) its connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::{Connection, Home};
use crate::server::h1::body::{Decoder, Next};

/// The body of a response read by the native HTTP/1.1 client.
pub struct ResponseBody {
    reading: Option<Reading>,
}

struct Reading {
    connection: Box<Connection>,
    decoder: Decoder,
    /// The exchange allows the connection to carry another request once this body ends.
    keep_alive: bool,
    home: Option<Arc<dyn Home>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("open", &self.reading.is_some())
            .finish()
    }
}

impl ResponseBody {
    /// A body with nothing in it.
    pub(crate) fn empty() -> Self {
        Self { reading: None }
    }

    /// A body read from `connection` by `decoder`.
    pub(crate) fn new(
        connection: Box<Connection>,
        decoder: Decoder,
        keep_alive: bool,
        home: Option<Arc<dyn Home>>,
    ) -> Self {
        Self {
            reading: Some(Reading {
                connection,
                decoder,
                keep_alive,
                home,
            }),
        }
    }

    /// Ends the body: a complete one gives its connection back when it may be reused.
    fn finish(&mut self, complete: bool) {
        if let Some(reading) = self.reading.take() {
            if complete && reading.keep_alive {
                Connection::release(reading.connection, reading.home);
            }
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(reading.decoder.poll_next(&mut *reading.connection, cx)) {
            Next::Data(data) => {
                if reading.decoder.is_eof() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Next::Trailers(trailers) => {
                this.finish(true);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Next::End => {
                // A body read to the close leaves nothing to reuse.
                let framed = !reading.decoder.ends_at_eof();
                this.finish(framed);
                Poll::Ready(None)
            }
            Next::Failed(e) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        Decoder::at_end(self.reading.as_ref().map(|r| &r.decoder))
    }

    fn size_hint(&self) -> SizeHint {
        Decoder::hint(self.reading.as_ref().map(|r| &r.decoder))
    }
}
