//! Delivering a callback to its target: the upstream client's connection pool (plain http or
//! https with `[upstream]`'s trust anchors, no egress proxy: the target is the consumer, not the
//! Conversation API), end-to-end headers only, the target's answer read whole within the
//! webhook's timeout.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tower::ServiceExt;

use crate::config::{Http1Engine, ProxySetting, UpstreamSettings};
use crate::domain::UpstreamErrorKind;
use crate::upstream::{GatewayBody, HyperUpstream, Upstream};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The client callbacks are delivered with.
pub fn client(
    upstream: &UpstreamSettings,
    longest: Duration,
    engine: Http1Engine,
) -> Result<Upstream, String> {
    let settings = UpstreamSettings {
        request_timeout: longest,
        proxy: ProxySetting::Disabled,
        ..upstream.clone()
    };
    HyperUpstream::new(&settings, engine).map(HyperUpstream::into_upstream)
}

/// The request headers a target gets: the sender's end-to-end headers without `host` and
/// those the `Connection` header names.
pub fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(listed.iter()) {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    headers
}

/// What the target answered.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its content type, if any.
    pub content_type: Option<http::HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

/// Why no answer came.
#[derive(Debug)]
pub enum DeliveryError {
    /// Connecting or sending failed, or the answer was too large or broken.
    Unreachable(String),
    /// No complete answer within the timeout.
    Timeout,
}

/// Posts `body` to `target` and reads its answer (at most `max_answer` bytes) within `timeout`.
pub async fn deliver(
    client: &Upstream,
    target: &Uri,
    headers: HeaderMap,
    body: GatewayBody,
    timeout: Duration,
    max_answer: usize,
) -> Result<Answer, DeliveryError> {
    let mut request = Request::post(target.clone())
        .body(body)
        .map_err(|e| DeliveryError::Unreachable(e.to_string()))?;
    *request.headers_mut() = headers;
    let exchange = async {
        let response = client
            .clone()
            .oneshot(request)
            .await
            .map_err(|f| match f.kind {
                UpstreamErrorKind::Timeout => DeliveryError::Timeout,
                _ => DeliveryError::Unreachable(f.detail),
            })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_answer)
            .collect()
            .await
            .map_err(|e| DeliveryError::Unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(DeliveryError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_and_host_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "gw".parse().expect("v"));
        h.insert(
            header::CONNECTION,
            "keep-alive, x-private".parse().expect("v"),
        );
        h.insert("x-private", "1".parse().expect("v"));
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().expect("v"));
        h.insert(header::CONTENT_TYPE, "application/json".parse().expect("v"));
        h.insert("x-sinch-webhook-signature", "s".parse().expect("v"));
        let out = end_to_end(h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-sinch-webhook-signature"]);
    }
}
