//! Request heads written and response heads read exactly as hyper's HTTP/1.1 client does
//! (`impl Http1Transaction for Client`):
//!
//! - the request's framing headers: no body → none added (a `Transfer-Encoding` removed); a
//!   `Transfer-Encoding` present → chunked, with `chunked` appended when it is not the final
//!   coding, and any `Content-Length` removed; a valid `Content-Length` present → that length;
//!   a body of known size → its `Content-Length`; of unknown size → chunked, except for `GET`,
//!   `HEAD` and `CONNECT`, which are sent without a body; towards an HTTP/1.0 upstream nothing
//!   is chunked;
//! - the response's framing (RFC 9112 §6.3): 1xx heads skipped (101 ends the connection's use),
//!   no body for `HEAD`, 204 and 304, chunked when the last `Transfer-Encoding` ends in
//!   `chunked` (an error on HTTP/1.0), else read to the close; else the `Content-Length`
//!   (repeats and comma lists must agree, anything but digits is an error), else read to the
//!   close; keep-alive by version and `Connection`.

use std::io;
use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use crate::server::h1::parse::{connection_has, digits, is_chunked, Framing};

/// Header fields httparse reads per response head (hyper's default).
const MAX_FIELDS: usize = 100;
/// Largest `Content-Length` (hyper's).
const MAX_LEN: u64 = u64::MAX - 2;

/// How a request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// Exactly this many bytes (0: none).
    Length(u64),
    /// The chunked coding.
    Chunked,
}

/// What writing a request head decided.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    /// The body's framing.
    pub(crate) out: Out,
    /// The request says `Connection: close`: the connection is not reused after it.
    pub(crate) close: bool,
}

fn any_has(headers: &HeaderMap, name: HeaderName, needle: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| connection_has(v, needle))
}

/// hyper's `content_length_parse_all`: every value, comma lists included, must be the same
/// number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().ok()?;
        for part in text.split(',') {
            let n = digits(part.trim().as_bytes())?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// Writes the head of a request into `dst`, adjusting its framing headers as hyper's client
/// does. `body` is `None` for a body already at its end, else its exact size when known;
/// `http10` says the upstream answered the previous request on this connection in HTTP/1.0.
pub(crate) fn request(
    parts: &mut http::request::Parts,
    target: &http::uri::PathAndQuery,
    body: Option<Option<u64>>,
    http10: bool,
    dst: &mut Vec<u8>,
) -> Written {
    let close = any_has(&parts.headers, header::CONNECTION, "close");
    let mut version = parts.version;
    if http10 {
        // hyper's `fix_keep_alive`: an HTTP/1.0 upstream keeps the connection only if asked.
        if !any_has(&parts.headers, header::CONNECTION, "keep-alive")
            && version == Version::HTTP_11
            && !close
        {
            parts
                .headers
                .append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        version = Version::HTTP_10;
    }
    let out = framing(
        &parts.method,
        &mut parts.headers,
        body,
        version != Version::HTTP_10,
    );
    dst.extend_from_slice(parts.method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.path().as_bytes());
    if let Some(query) = target.query() {
        dst.push(b'?');
        dst.extend_from_slice(query.as_bytes());
    }
    dst.extend_from_slice(if version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in &parts.headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    Written { out, close }
}

/// hyper's `Client::set_length`, on the same header map operations (so the fields come out in
/// the same order).
fn framing(
    method: &Method,
    headers: &mut HeaderMap,
    body: Option<Option<u64>>,
    can_chunked: bool,
) -> Out {
    let Some(size) = body else {
        headers.remove(header::TRANSFER_ENCODING);
        return Out::Length(0);
    };
    let existing = content_length(headers);
    if !can_chunked {
        headers.remove(header::TRANSFER_ENCODING);
        return match (existing, size) {
            (Some(len), _) => Out::Length(len),
            (None, Some(len)) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                Out::Length(len)
            }
            (None, None) => Out::Length(0),
        };
    }
    match headers.entry(header::TRANSFER_ENCODING) {
        Entry::Occupied(mut te) => {
            let chunked = te.iter().next_back().is_some_and(is_chunked);
            if !chunked {
                if let Some(last) = te.iter_mut().next_back() {
                    let mut joined = BytesMut::with_capacity(last.len() + 9);
                    joined.extend_from_slice(last.as_bytes());
                    joined.extend_from_slice(b", chunked");
                    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
                        *last = value;
                    }
                }
            }
            headers.remove(header::CONTENT_LENGTH);
            Out::Chunked
        }
        Entry::Vacant(te) => match (existing, size) {
            (Some(len), _) => Out::Length(len),
            (None, None) => {
                if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
                    Out::Length(0)
                } else {
                    te.insert(HeaderValue::from_static("chunked"));
                    headers.remove(header::CONTENT_LENGTH);
                    Out::Chunked
                }
            }
            (None, Some(len)) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                Out::Length(len)
            }
        },
    }
}

/// A response head read off the front of the buffer.
#[derive(Debug)]
pub(crate) struct Head {
    /// The response, without its body.
    pub(crate) response: Response<()>,
    /// How its body is delimited (`Length(0)`: no body).
    pub(crate) framing: Framing,
    /// Whether the connection may carry a further request afterwards.
    pub(crate) keep_alive: bool,
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Parses the response to a `method` request at the front of `buf`, skipping 1xx heads;
/// `Ok(None)` while the head is incomplete.
pub(crate) fn response(buf: &mut BytesMut, method: &Method) -> io::Result<Option<Head>> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let (Some(code), Some(version)) = (res.code, res.version) else {
            return Err(invalid("incomplete status line"));
        };
        let status = StatusCode::from_u16(code).map_err(|_| invalid("invalid status code"))?;
        let http11 = version == 1;
        if res.headers.iter().any(|h| h.name.len() >= 1 << 16) {
            return Err(invalid("header name too long"));
        }
        let mut headers = HeaderMap::with_capacity(res.headers.len());
        let mut keep_alive = http11;
        let mut saw_close = false;
        for field in res.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| invalid("invalid header name"))?;
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| invalid("invalid header value"))?;
            if name == header::CONNECTION {
                if saw_close || connection_has(&value, "close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = connection_has(&value, "keep-alive");
                }
            }
            headers.append(name, value);
        }
        let _ = buf.split_to(len);
        let framing = match status.as_u16() {
            101 => Some((Framing::Length(0), true)),
            100..=199 => None,
            204 | 304 => Some((Framing::Length(0), false)),
            _ if *method == Method::HEAD => Some((Framing::Length(0), false)),
            200..=299 if *method == Method::CONNECT => Some((Framing::Length(0), true)),
            _ => Some((body_framing(&headers, http11)?, false)),
        };
        let Some((framing, upgrade)) = framing else {
            continue;
        };
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = if http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive: keep_alive && !upgrade,
        }));
    }
}

/// The framing of a response that may have a body.
fn body_framing(headers: &HeaderMap, http11: bool) -> io::Result<Framing> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if !http11 {
            return Err(invalid("HTTP/1.0 cannot have Transfer-Encoding"));
        }
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .is_some_and(is_chunked);
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    match content_length(headers) {
        Some(len) if len > MAX_LEN => Err(invalid("content-length too large")),
        Some(len) => Ok(Framing::Length(len)),
        None if headers.contains_key(header::CONTENT_LENGTH) => {
            Err(invalid("invalid content-length"))
        }
        None => Ok(Framing::Close),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(method: &str, headers: &[(&str, &str)], body: Option<Option<u64>>) -> (String, Out) {
        let mut request = http::Request::builder().method(method);
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        let (mut parts, ()) = request.body(()).expect("request").into_parts();
        let mut dst = Vec::new();
        let target = http::uri::PathAndQuery::from_static("/a?b=c");
        let written = request_head(&mut parts, &target, body, &mut dst);
        (String::from_utf8(dst).expect("utf-8"), written.out)
    }

    fn request_head(
        parts: &mut http::request::Parts,
        target: &http::uri::PathAndQuery,
        body: Option<Option<u64>>,
        dst: &mut Vec<u8>,
    ) -> Written {
        request(parts, target, body, false, dst)
    }

    #[test]
    fn request_framing_follows_hyper() {
        let (text, out) = encode("POST", &[("host", "x")], Some(Some(3)));
        assert_eq!(
            text,
            "POST /a?b=c HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(out, Out::Length(3));
        let (text, out) = encode("POST", &[("content-length", "x")], Some(None));
        assert_eq!(
            text,
            "POST /a?b=c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(out, Out::Chunked);
        let (text, out) = encode("GET", &[], Some(None));
        assert_eq!(
            (text.as_str(), out),
            ("GET /a?b=c HTTP/1.1\r\n\r\n", Out::Length(0))
        );
        let (text, out) = encode("POST", &[("transfer-encoding", "gzip")], None);
        assert_eq!(
            (text.as_str(), out),
            ("POST /a?b=c HTTP/1.1\r\n\r\n", Out::Length(0))
        );
        let (text, out) = encode(
            "PUT",
            &[("transfer-encoding", "gzip"), ("content-length", "4")],
            Some(Some(4)),
        );
        assert_eq!(
            text,
            "PUT /a?b=c HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        );
        assert_eq!(out, Out::Chunked);
        let (_, out) = encode("POST", &[("content-length", "7")], Some(Some(3)));
        assert_eq!(
            out,
            Out::Length(7),
            "a valid header wins over the body's size"
        );
    }

    fn parse(text: &str, method: Method) -> io::Result<Option<Head>> {
        response(&mut BytesMut::from(text.as_bytes()), &method)
    }

    #[test]
    fn response_framing_follows_hyper() {
        let framing = |text: &str| parse(text, Method::GET).map(|h| h.map(|h| h.framing));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n").ok(),
            Some(Some(Framing::Length(5)))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 5\r\n\r\n").ok(),
            Some(Some(Framing::Close))
        );
        assert_eq!(
            framing("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n").ok(),
            Some(Some(Framing::Close))
        );
        assert!(matches!(framing("HTTP/1.1 100 Continue\r\n\r\n"), Ok(None)));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
        ] {
            assert!(framing(bad).is_err(), "{bad:?}");
        }
        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", Method::HEAD)
            .expect("ok")
            .expect("head");
        assert_eq!(head.framing, Framing::Length(0));
        let head = parse(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n",
            Method::GET,
        )
        .expect("ok")
        .expect("head");
        assert!(head.keep_alive);
        let head = parse("HTTP/1.1 101 Switching\r\n\r\n", Method::GET)
            .expect("ok")
            .expect("head");
        assert!(!head.keep_alive);
    }
}
