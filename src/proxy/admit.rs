//! Phase 1, admit: refuse what the gateway must never forward, before anything is read.
//!
//! - `CONNECT` and absolute-form targets naming another host: modegate is a reverse proxy,
//!   not a tunnel or an open proxy; a `Host` header never chooses the upstream.
//! - A request with both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1): a
//!   smuggling vector, refused and the connection closed rather than normalised.
//! - In inject mode, callers that do not present the gateway's shared secret.
//! - What the upstream could read differently from the gateway (rule `request.canonical`): a
//!   path with no canonical form, or one that resembles an operation only in a way front ends
//!   read differently (see `schema::route`); a method or target override (headers, `_method`);
//!   a gRPC request; a query the API schema reads otherwise (see `schema::query`); a body on an
//!   operation that takes none; more than one `Authorization`; a `Connection` header that would
//!   strip a header the gateway relies on; a method the API does not define on a known route;
//!   and, with `policy.unrecognized_route = "reject"`, any path that names no operation of the
//!   API (rule `request.unrecognized_route`).

use http::{header, Method, Request, Version};

use super::canonical::NonCanonical;
use super::classify::allowed_methods;
use super::ctx::RequestCtx;
use super::meta::RequestMeta;
use crate::domain::Operation;
use crate::error::GatewayError;
use crate::policy::RuleId;
use crate::schema::{query, Api};
use crate::upstream::{full, GatewayBody, Origin};

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

/// Refuses a head over the gateway's limits (in the API's error shape, unlike hyper's backstop).
pub fn check_head<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let headers = req.headers();
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    let bytes = target
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if headers.len() > crate::server::MAX_HEADERS || bytes > crate::server::MAX_HEAD_BYTES {
        return Err(GatewayError::HeadTooLarge {
            headers: headers.len(),
            bytes,
        });
    }
    Ok(())
}

/// Refuses a request whose framing two parsers could read differently. The connection's
/// framing flag records, per request, what hyper no longer shows once it has normalised the
/// head.
pub fn check_framing<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let raised = RequestMeta::connection_of(req.extensions())
        .is_some_and(|(c, index)| c.ambiguous_framing(*index));
    let h = req.headers();
    if raised
        || (h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH))
    {
        return Err(GatewayError::AmbiguousFraming);
    }
    Ok(())
}

/// Headers some front ends honour to run a request as another method or on another target.
const METHOD_OVERRIDES: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// End-to-end headers the gateway decides on or frames with: a `Connection` header naming one
/// would make a hop strip it after the gateway used it.
const RELIED_ON: [&str; 5] = [
    "authorization",
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
];

/// Records what the upstream could read differently from the gateway (see the module docs).
pub fn check_request<B>(ctx: &mut RequestCtx, req: &Request<B>) {
    if let Some(NonCanonical(message)) = req.extensions().get::<NonCanonical>() {
        ctx.ambiguous(message.clone());
    }
    // One pass over the headers (comparisons, no hashing) finds everything looked at here.
    let headers = req.headers();
    let mut overrides = [false; METHOD_OVERRIDES.len()];
    let mut authorizations = 0usize;
    let mut content_type = None;
    let mut relied_on = None;
    for (name, value) in headers {
        if name == header::AUTHORIZATION {
            authorizations += 1;
        } else if name == header::CONTENT_TYPE {
            content_type.get_or_insert(value);
        } else if name == header::CONNECTION {
            relied_on = relied_on.or_else(|| relied_on_token(value));
        } else if let Some(i) = METHOD_OVERRIDES.iter().position(|o| name.as_str() == *o) {
            overrides[i] = true;
        }
    }
    for (name, _) in METHOD_OVERRIDES
        .iter()
        .zip(overrides)
        .filter(|(_, here)| *here)
    {
        ctx.ambiguous(format!("{name}: method and target overrides are not accepted; send the request with the method and path it means"),
        );
    }
    if authorizations > 1 {
        ctx.ambiguous(
            "authorization: more than one Authorization header; send exactly one credential".into(),
        );
    }
    if let Some(token) = relied_on {
        ctx.ambiguous(format!("connection: names {token}, which must reach the upstream as the gateway saw it; remove it from Connection"),
        );
    }
    if method_in_query(req.uri().query()) {
        ctx.ambiguous(
            "_method: method overrides are not accepted; send the request with the method it means"
                .into(),
        );
    }
    if is_grpc(content_type, req.uri().path()) {
        ctx.ambiguous(
            "content-type: gRPC requests are not proxied; send the API's JSON over HTTP".into(),
        );
    }
    if let Some(def) = ctx.class.definition() {
        if let Some(problem) = query::check(def, req.uri().query(), &CatalogueReads(def.op)) {
            ctx.ambiguous(problem);
        }
        return;
    }
    if ctx.operation() != Operation::Other {
        return;
    }
    if let Some(refusal) = ctx.class.refusal {
        ctx.ambiguous(refusal.message().into());
        return;
    }
    let path = req.uri().path();
    let allowed: Vec<String> = allowed_methods(ctx.api, path, req.method())
        .iter()
        .map(ToString::to_string)
        .collect();
    if !allowed.is_empty() {
        ctx.ambiguous(format!(
            "method: {} is not defined for this path; the API takes {} here",
            req.method(),
            allowed.join(" or ")
        ));
    } else if req.extensions().get::<NonCanonical>().is_none() && path != "/oauth2/token" {
        ctx.record_request_rule(RuleId::UnrecognizedRoute,
            match ctx.api {
                Api::Conversation => "path: no Conversation API operation has this path; check it against the API reference",
                Api::Batch => "path: no Batch API operation has this path; check it against the Batch API reference",
            }
            .into(),
        );
    }
}

/// Whether the request's operation takes no body although one may follow: then
/// [`check_no_body`] reads it.
pub fn may_carry_stray_body(ctx: &RequestCtx, body: &GatewayBody) -> bool {
    ctx.class.definition().is_some_and(|d| !d.takes_body()) && !http_body::Body::is_end_stream(body)
}

/// Reads the body of an operation that takes none (bounded by `limit`): a non-empty one is
/// ambiguous — some front ends read it — and refused (in shadow it is forwarded as it came).
pub async fn check_no_body(
    ctx: &mut RequestCtx,
    body: GatewayBody,
    limit: usize,
) -> Result<GatewayBody, GatewayError> {
    let bytes = super::body::read_body(body, limit).await?;
    if !bytes.is_empty() {
        ctx.ambiguous(format!(
                "body: {} takes no body, and front ends differ on whether they read one; send the request without a body",
                ctx.operation().as_str()
            ),
        );
    }
    Ok(full(bytes))
}

/// Whether the query has a `_method` parameter (however its bytes are encoded).
fn method_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        let b = q.as_bytes();
        (b.contains(&b'%') || b.windows(5).any(|w| w.eq_ignore_ascii_case(b"ethod")))
            && form_urlencoded::parse(b).any(|(k, _)| k.eq_ignore_ascii_case("_method"))
    })
}

/// A Connection header value's first token that names a header the gateway relies on.
fn relied_on_token(value: &http::HeaderValue) -> Option<String> {
    value
        .to_str()
        .ok()?
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .find(|t| RELIED_ON.contains(&t.as_str()))
}

/// A gRPC request: by its content type, or by a `/package.Service/Method` path.
fn is_grpc(content_type: Option<&http::HeaderValue>, path: &str) -> bool {
    let grpc_type = content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        });
    // `/package.Service/Method`: exactly two slashes (the API's own paths have more).
    if path.bytes().filter(|&b| b == b'/').count() != 2 {
        return grpc_type;
    }
    let mut segments = path.strip_prefix('/').unwrap_or("").split('/');
    let service_path = match (segments.next(), segments.next(), segments.next()) {
        (Some(service), Some(method), None) => {
            let ident = |s: &str| {
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !s.as_bytes()[0].is_ascii_digit()
            };
            service.contains('.') && service.split('.').all(ident) && ident(method)
        }
        _ => false,
    };
    grpc_type || service_path
}

/// The catalogue's declarations of what rules read, for the query reader.
struct CatalogueReads(Operation);

impl query::RuleReads for CatalogueReads {
    fn reads(&self, path: &str) -> bool {
        RuleId::ALL
            .iter()
            .any(|r| r.applies_to(self.0) && r.reads().contains(&path))
    }

    fn any(&self) -> bool {
        RuleId::ALL.iter().any(|r| r.applies_to(self.0))
    }
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
    fn a_method_override_in_the_query_is_found_however_it_is_encoded() {
        for q in [
            "_method=GET",
            "a=1&_METHOD=DELETE",
            "%5Fmethod=GET",
            "_%6Dethod=PATCH",
            "_meth%6Fd=PUT",
        ] {
            assert!(method_in_query(Some(q)), "{q}");
        }
        for q in ["method=GET", "a=_method", "x_method=1", ""] {
            assert!(!method_in_query(Some(q)), "{q}");
        }
        assert!(!method_in_query(None));
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
