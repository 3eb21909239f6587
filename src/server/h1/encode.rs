//! Response heads, written as hyper's HTTP/1.1 server writes them: lower-case names, one
//! `date`, `Content-Length` from the body when it knows its size, chunked otherwise (or
//! close-delimited for an HTTP/1.0 client), no body for `HEAD`, 204 and 304, and
//! `Connection: keep-alive` / `close` added where the connection's fate needs saying.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};

/// How the response body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// What the head promised.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) out: Out,
    /// The connection closes after this response.
    pub(crate) last: bool,
    /// The response has no body on the wire whatever its body holds (`HEAD`, 204, 304).
    pub(crate) bodiless: bool,
}

/// What the request said that shapes its response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked<'a> {
    pub(crate) method: &'a Method,
    pub(crate) http10: bool,
    pub(crate) keep_alive: bool,
}

fn can_chunked(method: &Method, status: StatusCode) -> bool {
    if method == Method::HEAD
        || (method == Method::CONNECT && status.is_success())
        || status.is_informational()
    {
        false
    } else {
        !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
    }
}

fn can_have_content_length(method: &Method, status: StatusCode) -> bool {
    if status.is_informational() || (method == Method::CONNECT && status.is_success()) {
        false
    } else {
        !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
    }
}

fn has_token(value: &HeaderValue, needle: &str) -> bool {
    value.to_str().is_ok_and(|s| {
        s.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(needle))
    })
}

fn digits(bytes: &[u8]) -> Option<u64> {
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

/// Writes the head of `parts` into `dst`. `body` is `None` for a body that is already at its
/// end, else its exact length when known.
pub(crate) fn head(
    parts: &mut http::response::Parts,
    asked: Asked<'_>,
    body: Option<Option<u64>>,
    dst: &mut Vec<u8>,
) -> Plan {
    let method = asked.method;
    let status = parts.status;
    let headers = &mut parts.headers;
    // The connection's fate, said where the client needs to hear it.
    if asked.http10 {
        let said = headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "keep-alive"));
        if !said && asked.keep_alive {
            headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
    } else if !asked.keep_alive
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "close"))
    {
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut last = !asked.keep_alive;

    dst.extend_from_slice(if asked.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\n");

    let chunkable = !asked.http10 && can_chunked(method, status);
    let mut out = None;
    let mut wrote_date = false;
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        match *name {
            header::CONTENT_LENGTH => {
                if out.is_some() {
                    continue;
                }
                let Some(first) = values.next() else { continue };
                match body {
                    Some(Some(known)) => out = Some(Out::Length(known)),
                    Some(None) => match digits(first.as_bytes()) {
                        Some(n) => out = Some(Out::Length(n)),
                        None => continue,
                    },
                    None if method == Method::HEAD => out = Some(Out::Length(0)),
                    None => continue,
                }
                line(dst, b"content-length", first.as_bytes());
            }
            header::TRANSFER_ENCODING => {
                if !chunkable || out.is_some() {
                    continue;
                }
                out = Some(Out::Chunked);
                dst.extend_from_slice(b"transfer-encoding: ");
                let mut chunked = false;
                for (i, v) in headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        dst.extend_from_slice(b", ");
                    }
                    dst.extend_from_slice(v.as_bytes());
                    chunked = has_token(v, "chunked")
                        && v.to_str().is_ok_and(|s| {
                            s.rsplit(',')
                                .next()
                                .is_some_and(|l| l.trim().eq_ignore_ascii_case("chunked"))
                        });
                }
                if !chunked {
                    dst.extend_from_slice(b", chunked");
                }
                dst.extend_from_slice(b"\r\n");
            }
            header::CONNECTION => {
                dst.extend_from_slice(b"connection: ");
                for (i, v) in headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        dst.extend_from_slice(b", ");
                    }
                    last |= has_token(v, "close");
                    dst.extend_from_slice(v.as_bytes());
                }
                dst.extend_from_slice(b"\r\n");
            }
            header::TRAILER if !chunkable => {}
            _ => {
                wrote_date |= name == header::DATE;
                for v in values {
                    line(dst, name.as_str().as_bytes(), v.as_bytes());
                }
            }
        }
    }
    let out = match out {
        Some(out) => out,
        None => match body {
            Some(None) if chunkable => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Out::Chunked
            }
            Some(None) if can_chunked(method, status) || asked.http10 => Out::Close,
            Some(None) => Out::Length(0),
            None | Some(Some(0)) => {
                if can_have_content_length(method, status) && method != Method::HEAD {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Out::Length(0)
            }
            Some(Some(n)) => {
                if can_have_content_length(method, status) {
                    line(dst, b"content-length", itoa(n).as_bytes());
                    Out::Length(n)
                } else {
                    Out::Length(0)
                }
            }
        },
    };
    let bodiless = !can_chunked(method, status);
    let out = if bodiless { Out::Length(0) } else { out };
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    Plan {
        out,
        last: last || out == Out::Close,
        bodiless,
    }
}

fn line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

fn itoa(n: u64) -> String {
    n.to_string()
}

/// The bare answer to a head refused before it reached the request path (hyper's).
pub(crate) fn refusal(status: StatusCode, dst: &mut Vec<u8>) {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\ndate: ");
    date(dst);
    dst.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    /// The current second's `date` value, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                dst.extend_from_slice(text.as_bytes());
                return;
            }
        }
        dst.extend_from_slice(&cached.1);
    });
}
