//! Phase 1, admit: refuse what the gateway must never forward, before anything is read.
//!
//! - `CONNECT` and absolute-form targets naming another host: modegate is a reverse proxy,
//!   not a tunnel or an open proxy; a `Host` header never chooses the upstream.
//! - A request with both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1): a
//!   smuggling vector, refused and the connection closed rather than normalised.
//! - In inject mode, callers that do not present the gateway's shared secret.

use std::sync::Arc;

use http::{header, Method, Request, Version};

use super::connection::Connection;
use crate::error::GatewayError;
use crate::upstream::Origin;

/// Refuses targets that would make the gateway an open proxy or a tunnel.
pub fn check_target<B>(origin: &Origin, req: &Request<B>) -> Result<(), GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::ConnectMethod);
    }
    // HTTP/2 always carries :authority; it plays the part of Host and chooses nothing. In
    // HTTP/1 an authority means absolute-form, acceptable only when it names the upstream.
    if req.version() < Version::HTTP_2 {
        if let Some(authority) = req.uri().authority() {
            if authority != origin.authority() {
                return Err(GatewayError::ForeignTarget);
            }
        }
    }
    Ok(())
}

/// Refuses a request whose framing two parsers could read differently. The connection's
/// framing flag records what hyper no longer shows once it has normalised the head.
pub fn check_framing<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let raised = req
        .extensions()
        .get::<Arc<Connection>>()
        .is_some_and(|c| c.framing.is_raised());
    let h = req.headers();
    if raised
        || (h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH))
    {
        return Err(GatewayError::AmbiguousFraming);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Uri;

    fn origin() -> Origin {
        Origin::from_uri(&Uri::from_static("https://us.conversation.api.sinch.com"))
            .expect("origin")
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request")
    }

    #[test]
    fn tunnels_and_foreign_hosts_are_refused() {
        assert!(matches!(
            check_target(&origin(), &request(Method::CONNECT, "example.com:443")),
            Err(GatewayError::ConnectMethod)
        ));
        assert!(matches!(
            check_target(
                &origin(),
                &request(Method::GET, "http://example.com/v1/projects/p/apps")
            ),
            Err(GatewayError::ForeignTarget)
        ));
        assert!(check_target(
            &origin(),
            &request(
                Method::GET,
                "https://us.conversation.api.sinch.com/v1/projects/p/apps"
            )
        )
        .is_ok());
        assert!(check_target(&origin(), &request(Method::GET, "/v1/projects/p/apps")).is_ok());
    }

    #[test]
    fn both_framing_headers_are_refused() {
        let mut req = request(Method::POST, "/");
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("4"));
        assert!(check_framing(&req).is_ok());
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        assert!(matches!(
            check_framing(&req),
            Err(GatewayError::AmbiguousFraming)
        ));
    }
}
