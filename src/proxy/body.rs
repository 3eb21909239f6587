//! Request bodies on the gateway's side: read whole under a limit, or held for a replay, and
//! the [`OutboundBody`] the phases hand on to the upstream.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::error::GatewayError;
use crate::upstream::{full, GatewayBody};

/// A request body on its way upstream: streamed as received, or bytes the gateway holds
/// (read for a rule, rewritten, or kept for a replay).
#[derive(Debug)]
pub enum OutboundBody {
    /// Streamed from the client.
    Stream(GatewayBody),
    /// Held whole.
    Bytes(Bytes),
}

impl OutboundBody {
    pub(super) fn into_body(self) -> GatewayBody {
        match self {
            OutboundBody::Stream(b) => b,
            OutboundBody::Bytes(b) => full(b),
        }
    }

    /// The bytes, when the gateway holds them (so the request can be sent again).
    pub(super) fn replayable(&self) -> Option<Bytes> {
        match self {
            OutboundBody::Stream(_) => None,
            OutboundBody::Bytes(b) => Some(b.clone()),
        }
    }
}

/// Reads a whole body, refusing one over `limit` bytes.
pub async fn read_body(body: GatewayBody, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(GatewayError::BodyTooLarge { limit })
            } else {
                Err(GatewayError::ClientBody(e.to_string()))
            }
        }
    }
}

/// The body to forward when no rule reads it: in inject mode (`hold`) a request may have to be
/// sent twice (after a 401 for an expired token), so a small body (up to `limit` bytes, by its
/// exact size hint) is read whole; everything else streams.
pub async fn replayable(
    body: GatewayBody,
    hold: bool,
    limit: usize,
) -> Result<OutboundBody, GatewayError> {
    let small = http_body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n <= limit as u64);
    if hold && small {
        return Ok(OutboundBody::Bytes(read_body(body, limit).await?));
    }
    Ok(OutboundBody::Stream(body))
}
