//! Request heads: httparse over the connection's read buffer, then the framing rules hyper's
//! HTTP/1.1 server applies (RFC 9112 §6), so that a head is accepted, refused or framed
//! exactly as hyper would:
//!
//! - `Transfer-Encoding` on HTTP/1.0, or whose final coding is not `chunked` → 400;
//! - `Content-Length` that is not all digits, or differing values → 400; equal repeats are
//!   kept once; a length over hyper's maximum → 431;
//! - `Content-Length` together with `Transfer-Encoding`: framed by the chunked coding, the
//!   length dropped, keep-alive off, and the head marked ambiguous (the request path refuses
//!   it);
//! - too many header fields → 431, a target over 65,534 bytes → 414, anything else httparse
//!   or `http` refuse → 400.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

/// Header fields httparse reads per head (hyper's default; the request path refuses more than
/// [`crate::server::MAX_HEADERS`] of them in the API's error shape).
const MAX_FIELDS: usize = 100;
/// Longest request target (hyper's).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// Largest `Content-Length` (hyper's).
const MAX_LEN: u64 = u64::MAX - 2;

/// How a request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes (0: no body).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only: the upstream side, see
    /// `crate::upstream::h1`).
    Close,
}

/// A complete request head.
#[derive(Debug)]
pub(crate) struct Head {
    /// The request, without its body.
    pub(crate) request: Request<()>,
    /// How its body is delimited.
    pub(crate) framing: Framing,
    /// Whether the connection may carry a further request afterwards.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub(crate) expect_continue: bool,
    /// Both `Content-Length` and `Transfer-Encoding` were present.
    pub(crate) ambiguous: bool,
}

/// What a parse of the buffer found.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A head, taken off the front of the buffer.
    Head(Box<Head>),
    /// A head refused with this status (the connection is closed after it).
    Refused(StatusCode),
}

/// Whether a comma-separated header value lists `needle` (case-insensitive).
pub(crate) fn connection_has(value: &HeaderValue, needle: &str) -> bool {
    value.to_str().is_ok_and(|s| {
        s.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(needle))
    })
}

/// Whether a `Transfer-Encoding` value's final coding is `chunked`.
pub(crate) fn is_chunked(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|s| {
        s.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// A non-empty run of ASCII digits as a number (`None` on anything else or overflow).
pub(crate) fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Header fields the request path may add to a request (forwarding headers, a request id):
/// room is made for them up front so the map does not grow on the way.
const ADDED_FIELDS: usize = 6;

/// Where a field's name and value lie in the head.
pub(crate) type Spans = Vec<(Span, Span)>;

/// Parses the head at the front of `buf`; a complete head is split off it. `spans` is the
/// connection's scratch space.
pub(crate) fn parse(buf: &mut BytesMut, spans: &mut Spans) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Err(_) => return Parsed::Refused(StatusCode::BAD_REQUEST),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refused(StatusCode::BAD_REQUEST);
    };
    if path.len() > MAX_URI_LEN {
        return Parsed::Refused(StatusCode::URI_TOO_LONG);
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Refused(StatusCode::BAD_REQUEST);
    };
    if req.headers.iter().any(|h| h.name.len() >= 1 << 16) {
        return Parsed::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    // Offsets into the buffer, so the fields can be taken from the frozen head without copies.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = offset(path.as_bytes());
    spans.clear();
    spans.extend(
        req.headers
            .iter()
            .map(|h| (offset(h.name.as_bytes()), offset(h.value))),
    );
    let http11 = version == 1;
    let head = buf.split_to(len).freeze();
    let slice = |(at, n): (usize, usize)| head.slice(at..at + n);
    let Ok(uri) = Uri::from_maybe_shared(slice(target)) else {
        return Parsed::Refused(StatusCode::BAD_REQUEST);
    };
    match fields_of(&head, spans, http11, &slice) {
        Ok(fields) => {
            let mut request = Request::new(());
            *request.headers_mut() = fields.headers;
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.version_mut() = if http11 {
                Version::HTTP_11
            } else {
                Version::HTTP_10
            };
            Parsed::Head(Box::new(Head {
                request,
                framing: fields.framing,
                keep_alive: fields.keep_alive,
                expect_continue: fields.expect_continue && http11,
                ambiguous: fields.ambiguous,
            }))
        }
        Err(status) => Parsed::Refused(status),
    }
}

/// The header fields' part of a head.
struct Fields {
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    ambiguous: bool,
}

/// An offset and a length in the head.
pub(crate) type Span = (usize, usize);

fn fields_of(
    head: &Bytes,
    spans: &[(Span, Span)],
    http11: bool,
    slice: &dyn Fn(Span) -> Bytes,
) -> Result<Fields, StatusCode> {
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_FIELDS);
    let mut framing = Framing::Length(0);
    let mut keep_alive = http11;
    let mut saw_close = false;
    let mut expect_continue = false;
    let mut content_length: Option<u64> = None;
    let (mut is_cl, mut is_te, mut te_chunked) = (false, false, false);
    for &((name_at, name_len), value) in spans {
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        let value =
            HeaderValue::from_maybe_shared(slice(value)).map_err(|_| StatusCode::BAD_REQUEST)?;
        match name {
            header::TRANSFER_ENCODING => {
                if !http11 {
                    return Err(StatusCode::BAD_REQUEST);
                }
                is_te = true;
                if is_cl && content_length.take().is_some() {
                    headers.remove(header::CONTENT_LENGTH);
                }
                te_chunked = is_chunked(&value);
                if te_chunked {
                    framing = Framing::Chunked;
                }
            }
            header::CONTENT_LENGTH => {
                is_cl = true;
                if is_te {
                    continue;
                }
                let len = digits(value.as_bytes()).ok_or(StatusCode::BAD_REQUEST)?;
                if let Some(previous) = content_length {
                    if previous != len {
                        return Err(StatusCode::BAD_REQUEST);
                    }
                    continue;
                }
                if len > MAX_LEN {
                    return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                }
                framing = Framing::Length(len);
                content_length = Some(len);
            }
            header::CONNECTION => {
                if saw_close || connection_has(&value, "close") {
                    saw_close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = connection_has(&value, "keep-alive");
                }
            }
            header::EXPECT => {
                expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        headers.append(name, value);
    }
    if is_te && !te_chunked {
        return Err(StatusCode::BAD_REQUEST);
    }
    let ambiguous = is_te && is_cl;
    if ambiguous {
        keep_alive = false;
    }
    Ok(Fields {
        headers,
        framing,
        keep_alive,
        expect_continue,
        ambiguous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, StatusCode> {
        let mut buf = BytesMut::from(text.as_bytes());
        match parse(&mut buf, &mut Vec::new()) {
            Parsed::Head(h) => Ok(*h),
            Parsed::Refused(status) => Err(status),
            Parsed::Partial => Err(StatusCode::CONTINUE),
        }
    }

    #[test]
    fn framing_follows_hyper() {
        let h = head("POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n")
            .expect("head");
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(
            h.request.headers().get_all("content-length").iter().count(),
            1
        );
        let h = head("POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n")
            .expect("head");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.ambiguous && !h.keep_alive);
        assert!(!h.request.headers().contains_key("content-length"));
        for refused in [
            "POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 5,5\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nx: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nx : a\r\n\r\n",
        ] {
            assert_eq!(
                head(refused).err(),
                Some(StatusCode::BAD_REQUEST),
                "{refused:?}"
            );
        }
        assert_eq!(
            head("POST / HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n").err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn keep_alive_and_expect_follow_the_version() {
        let h = head("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").expect("head");
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").expect("head");
        assert!(!h.keep_alive && !h.expect_continue);
        let h = head("GET / HTTP/1.1\r\nconnection: close\r\nconnection: keep-alive\r\n\r\n")
            .expect("head");
        assert!(!h.keep_alive);
        let h = head("\r\n\nGET / HTTP/1.1\nexpect: 100-Continue\n\n").expect("bare LF");
        assert!(h.keep_alive && h.expect_continue);
    }

    #[test]
    fn a_head_split_anywhere_parses_once_complete() {
        let text = b"POST /a?b=c HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok";
        for cut in 0..text.len() - 2 {
            let mut buf = BytesMut::from(&text[..cut]);
            let spans = &mut Vec::new();
            assert!(
                matches!(parse(&mut buf, spans), Parsed::Partial),
                "cut at {cut}"
            );
            buf.extend_from_slice(&text[cut..]);
            let Parsed::Head(h) = parse(&mut buf, spans) else {
                panic!("cut at {cut}")
            };
            assert_eq!(h.request.uri(), "/a?b=c");
            assert_eq!(&buf[..], b"ok");
        }
    }
}
