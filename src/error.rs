//! The gateway's one error type and the one place it becomes a response.
//!
//! Inner steps return `Result<_, GatewayError>` with `?`; the rescue layer
//! (`proxy::rescue`) turns an error into an answer in the API's error shape with
//! [`GatewayError::to_api_error`] and [`GatewayError::headers`]. The mapping is an exhaustive `match`, so a new variant cannot
//! ship without a status. Bodies say what the client can act on and nothing about internals;
//! internal detail is logged here, once.

use http::{header, HeaderName, HeaderValue, StatusCode};

use crate::api_error::ApiError;
use crate::domain::{Disposition, UpstreamErrorKind};

/// Everything that can stop the gateway from completing a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `CONNECT`: modegate is not a tunnel.
    #[error("CONNECT requested")]
    ConnectMethod,
    /// An absolute-form target naming a host other than the upstream.
    #[error("absolute-form target names a foreign host")]
    ForeignTarget,
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling vector).
    #[error("both Content-Length and Transfer-Encoding present")]
    AmbiguousFraming,
    /// A request head over the gateway's limits (header count or bytes). hyper's own limits
    /// sit above these as a backstop, so the gateway answers in the API's shape.
    #[error("request head over the limits ({headers} headers, {bytes} bytes)")]
    HeadTooLarge {
        /// Header fields in the head.
        headers: usize,
        /// Bytes of the target and header fields.
        bytes: usize,
    },
    /// A body larger than `server.max_policy_body_bytes` on a policy route.
    #[error("policy body over {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client's request body made no progress for `server.body_idle_timeout_secs`.
    #[error("request body idle")]
    RequestBodyIdle,
    /// The client's body could not be read to the end.
    #[error("client body read failed: {0}")]
    ClientBody(String),
    /// A policy route's body is not what the API accepts (malformed JSON, wrong shape).
    #[error("invalid request body: {message}")]
    InvalidBody {
        /// Client-safe description (a field path and what is wrong; never the body itself).
        message: String,
    },
    /// The app's mode could not be learned and `policy.unknown_mode = "reject"`.
    #[error("processing mode unavailable")]
    ModeUnavailable,
    /// Inject mode: the caller did not present the gateway's shared secret.
    #[error("inbound credentials refused")]
    InboundUnauthenticated,
    /// Inject mode: no upstream access token could be obtained.
    #[error("token endpoint {kind:?}: {detail}")]
    Token {
        /// Timeout → 504, anything else → 502.
        kind: UpstreamErrorKind,
        /// Internal detail for the log only.
        detail: String,
    },
    /// A rewrite the policy requires could not be made because its lookup (the contact of a
    /// recipient rewrite) failed (timeout, 5xx, 429, a broken answer): the request is not
    /// forwarded unrewritten; the caller may retry.
    #[error("rewrite lookup failed: {detail}")]
    RewriteUnavailable {
        /// Internal detail for the log only.
        detail: String,
    },
    /// The upstream could not be reached or broke off.
    #[error("upstream {kind:?}: {detail}")]
    Upstream {
        /// Connect, timeout or reset.
        kind: UpstreamErrorKind,
        /// Internal detail for the log only.
        detail: String,
        /// What the gateway had decided before the upstream failed.
        attempted: Disposition,
    },
}

impl GatewayError {
    /// The client-facing error.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            GatewayError::ConnectMethod => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: modegate is a reverse proxy for the Conversation API, not a tunnel",
            ),
            GatewayError::ForeignTarget => ApiError::invalid_argument(
                "request target names another host: modegate only forwards to its configured upstream; send origin-form paths such as /v1/projects/{project_id}/apps",
            ),
            GatewayError::AmbiguousFraming => ApiError::invalid_argument(
                "request has both Content-Length and Transfer-Encoding; send exactly one",
            ),
            GatewayError::HeadTooLarge { .. } => ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "request head too large: the gateway accepts at most {} header fields and {} KiB of target and headers; send fewer or smaller headers",
                    crate::server::MAX_HEADERS,
                    crate::server::MAX_HEAD_BYTES / 1024
                ),
            ),
            GatewayError::BodyTooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the gateway's policy limit of {limit} bytes"),
            ),
            GatewayError::RequestBodyIdle => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body made no progress for the gateway's body idle timeout; send it without pausing",
            ),
            GatewayError::ClientBody(_) => {
                ApiError::invalid_argument("request body could not be read to the end")
            }
            GatewayError::InvalidBody { message } => ApiError::invalid_argument(message.clone()),
            GatewayError::ModeUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the app's processing mode cannot be determined right now; retry later",
            ),
            GatewayError::InboundUnauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this gateway authenticates to the Conversation API itself; present its shared secret as a Bearer token or as the key secret",
            ),
            GatewayError::Token { kind, .. } => match kind {
                UpstreamErrorKind::Timeout => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the gateway could not obtain an access token in time",
                ),
                _ => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the gateway could not obtain an access token for the Conversation API",
                ),
            },
            GatewayError::RewriteUnavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "recipient.contact_id: the gateway must rewrite this recipient to recipient.identified_by, and its contact lookup failed; the request was not sent — retry later",
            ),
            GatewayError::Upstream { kind, .. } => match kind {
                UpstreamErrorKind::Timeout => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the Conversation API did not answer in time",
                ),
                UpstreamErrorKind::Connect | UpstreamErrorKind::Tls => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the Conversation API could not be reached",
                ),
                UpstreamErrorKind::Reset | UpstreamErrorKind::Status5xx => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the connection to the Conversation API failed",
                ),
            },
        }
    }

    /// The `x-modegate-decision` to report.
    pub fn disposition(&self) -> Disposition {
        match self {
            GatewayError::Upstream { attempted, .. } => *attempted,
            GatewayError::ConnectMethod
            | GatewayError::ForeignTarget
            | GatewayError::AmbiguousFraming
            | GatewayError::HeadTooLarge { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::RequestBodyIdle
            | GatewayError::ClientBody(_)
            | GatewayError::InvalidBody { .. }
            | GatewayError::ModeUnavailable
            | GatewayError::RewriteUnavailable { .. }
            | GatewayError::InboundUnauthenticated => Disposition::Rejected,
            GatewayError::Token { .. } => Disposition::Forwarded,
        }
    }

    /// Whether the connection must not be reused after this answer (unread or untrustworthy
    /// request bytes may follow).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::AmbiguousFraming
                | GatewayError::HeadTooLarge { .. }
                | GatewayError::BodyTooLarge { .. }
                | GatewayError::RequestBodyIdle
                | GatewayError::ClientBody(_)
        )
    }

    /// Headers the answer carries besides the body: the authentication challenge, the
    /// connection close after unread or untrustworthy bytes, a retry hint.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        match self {
            GatewayError::InboundUnauthenticated => out.push((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"modegate\""),
            )),
            GatewayError::RewriteUnavailable { .. } => {
                out.push((header::RETRY_AFTER, HeaderValue::from_static("1")))
            }
            _ => {}
        }
        if self.closes_connection() {
            out.push((header::CONNECTION, HeaderValue::from_static("close")));
        }
        out
    }

    /// Whether the failure is the upstream's (logged as a warning) rather than the caller's.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            GatewayError::Upstream { .. }
                | GatewayError::Token { .. }
                | GatewayError::RewriteUnavailable { .. }
        )
    }
}
