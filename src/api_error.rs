//! The Conversation API's error shape, shared by the gateway's own answers and the simulator.
//!
//! `{"error":{"code":400,"message":"…","status":"INVALID_ARGUMENT","details":[…]}}` is what both
//! official SDKs parse, so every answer modegate makes itself uses it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// The `type_url` gateway rejections put in `details` next to the rule id.
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// One error answer in the API's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message: what is wrong and how to fix it.
    pub message: String,
    /// `details[].value` entries (`ErrorInfo`), e.g. the rule id of a gateway rejection.
    pub details: Vec<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
    details: Vec<Detail<'a>>,
}

#[derive(Serialize)]
struct Detail<'a> {
    type_url: &'static str,
    value: &'a str,
}

/// The API's status name for an HTTP status (`INVALID_ARGUMENT` for 400, …).
pub fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 414 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 | 501 => "UNIMPLEMENTED",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        408 | 504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 `INVALID_ARGUMENT`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Adds an `ErrorInfo` detail (used for the rule id of a gateway rejection).
    pub fn with_detail(mut self, value: impl Into<String>) -> Self {
        self.details.push(value.into());
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        let envelope = Envelope {
            error: Body {
                code: self.status.as_u16(),
                message: &self.message,
                status: status_name(self.status),
                details: self
                    .details
                    .iter()
                    .map(|value| Detail {
                        type_url: ERROR_INFO_TYPE,
                        value,
                    })
                    .collect(),
            },
        };
        // Serialising plain strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// A complete response with `content-type: application/json`.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = self.to_json();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_body_matches_the_api_shape() {
        let err = ApiError::invalid_argument("recipient.contact_id: not supported")
            .with_detail("dispatch.send.contact_recipient");
        let v: serde_json::Value = serde_json::from_slice(&err.to_json()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"error":{"code":400,"message":"recipient.contact_id: not supported",
                "status":"INVALID_ARGUMENT","details":[{"type_url":ERROR_INFO_TYPE,
                "value":"dispatch.send.contact_recipient"}]}})
        );
    }

    #[test]
    fn status_names_follow_the_api() {
        assert_eq!(status_name(StatusCode::BAD_GATEWAY), "UNAVAILABLE");
        assert_eq!(
            status_name(StatusCode::GATEWAY_TIMEOUT),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(
            status_name(StatusCode::PAYLOAD_TOO_LARGE),
            "INVALID_ARGUMENT"
        );
        assert_eq!(status_name(StatusCode::UNAUTHORIZED), "UNAUTHENTICATED");
        assert_eq!(status_name(StatusCode::NOT_FOUND), "NOT_FOUND");
        assert_eq!(
            status_name(StatusCode::TOO_MANY_REQUESTS),
            "RESOURCE_EXHAUSTED"
        );
    }
}
