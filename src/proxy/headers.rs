//! Header hygiene, as pure functions over a `HeaderMap` (RFC 9110 §7.6.1).
//!
//! Work is proportional to what is present: the common request has no `Connection` tokens to
//! chase, so stripping is a handful of map lookups.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// `x-request-id`: kept from the caller or generated.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-modegate-decision`: forwarded | rewritten | rejected | shadow.
pub const X_MODEGATE_DECISION: HeaderName = HeaderName::from_static("x-modegate-decision");
/// `x-modegate-rule`: every rule that rewrote or rejected, comma-separated in evaluation order.
pub const X_MODEGATE_RULE: HeaderName = HeaderName::from_static("x-modegate-rule");
/// `x-modegate-shadow`: every rule that matched in shadow, comma-separated in evaluation order.
pub const X_MODEGATE_SHADOW: HeaderName = HeaderName::from_static("x-modegate-shadow");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HOPS: usize = 9;
/// Headers that never cross a proxy, whether or not `Connection` lists them: the hop-by-hop
/// ones and `Upgrade`.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The index of `name` in [`HOP_BY_HOP`]: a match on the name's text (by length, then bytes),
/// which costs less than comparing it with each entry.
fn hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Whether a `Connection` token names one of [`HOP_BY_HOP`] (any case).
fn is_hop_token(token: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
}

/// End-to-end headers the gateway relies on (body framing, request correlation); a
/// `Connection` token naming them is ignored rather than honoured.
fn protected(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || name == header::CONTENT_TYPE || name == X_REQUEST_ID
}

/// Removes hop-by-hop headers, including every header named in `Connection`, and `Upgrade`.
///
/// One pass over the names present (cheap comparisons, no hashing) finds which are there; the
/// common request has none, and the common response only `Connection`, so only what is
/// present is looked up and removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOPS];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_index(name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        // The common `Connection` value lists only hop-by-hop names (`keep-alive`, `close`),
        // which go below anyway: nothing is collected, and nothing allocated, for it.
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                // `keep-alive` and the like are removed below anyway (and not parsed here).
                if token.is_empty() || is_hop_token(token) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    if !protected(&name) {
                        listed.push(name);
                    }
                }
            }
        }
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
}

/// The `x-forwarded-for` value of a client address (computed once per connection).
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Prepares a client request's headers for the upstream: hop-by-hop removed, `Host` dropped (the
/// client sets it from the upstream URI), `x-forwarded-for` appended, `x-forwarded-proto` set.
/// `client` is the connection's [`forwarded_for`] value and whether it is TLS: a TLS
/// connection is forwarded as `https` whatever the client claimed; on a plain one a value set
/// by a TLS-terminating hop in front is kept.
pub fn to_upstream(headers: &mut HeaderMap, client: Option<(&HeaderValue, bool)>) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    if client.is_some_and(|(_, tls)| tls) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
    if let Some((ip, _)) = client {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => {
                HeaderValue::try_from(format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok()
            }
            _ => Some(ip.clone()),
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

/// Prepares upstream response headers for the client.
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    /// The names left, sorted: removal may reorder a map (across different names order carries
    /// no meaning).
    fn left(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer t"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(left(&h), ["authorization", "x-keep"]);
    }

    #[test]
    fn hop_index_names_each_entry() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_index(&header::CONTENT_TYPE), None);
        assert_eq!(hop_index(&HeaderName::from_static("x-connection")), None);
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_alone_and_listed_names_in_any_case() {
        for name in &HOP_BY_HOP {
            let mut h = map(&[(name.as_str(), "v"), ("x-keep", "yes")]);
            strip_hop_by_hop(&mut h);
            assert_eq!(left(&h), ["x-keep"], "{name}");
        }
        let mut h = map(&[
            ("connection", "Keep-Alive, X-Listed ,UPGRADE"),
            ("keep-alive", "timeout=5"),
            ("x-listed", "1"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(left(&h), ["x-keep"]);
    }

    #[test]
    fn connection_cannot_strip_protected_headers() {
        let mut h = map(&[
            ("connection", "content-length, x-request-id"),
            ("content-length", "3"),
            ("x-request-id", "abc"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("content-length"));
        assert!(h.contains_key("x-request-id"));
    }

    #[test]
    fn upstream_headers_get_forwarding_info_and_lose_host() {
        let mut h = map(&[("host", "gateway.local"), ("x-forwarded-for", "10.0.0.1")]);
        let local = forwarded_for("127.0.0.1".parse().expect("ip"));
        to_upstream(&mut h, Some((&local, false)));
        assert!(!h.contains_key("host"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = HeaderMap::new();
        to_upstream(
            &mut h,
            Some((&forwarded_for("::1".parse().expect("ip")), false)),
        );
        assert_eq!(h["x-forwarded-for"], "::1");

        // Over TLS the gateway's own knowledge wins over the client's claim.
        let mut h = map(&[("x-forwarded-proto", "http")]);
        to_upstream(&mut h, Some((&local, true)));
        assert_eq!(h["x-forwarded-proto"], "https");
        // On a plain connection a TLS-terminating hop's value is kept.
        let mut h = map(&[("x-forwarded-proto", "https")]);
        to_upstream(&mut h, Some((&local, false)));
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn response_headers_lose_hop_by_hop_only() {
        let mut h = map(&[
            ("connection", "close"),
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
        ]);
        to_client(&mut h);
        assert_eq!(left(&h), ["content-type"]);
    }
}
