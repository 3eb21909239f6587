//! Response heads, written as hyper's HTTP/1.1 server writes them: lower-case names, one
//! `date`, `Content-Length` from the body when it knows its size, chunked otherwise (or
//! close-delimited for an HTTP/1.0 client), no body for `HEAD`, 204 and 304, and
//! `Connection: keep-alive` / `close` added where the connection's fate needs saying.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::parse::digits;

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

/// A header field that is written as one line of comma-joined values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Joined {
    Connection,
    TransferEncoding,
}

/// Writes the head of `parts` into `dst`, in one pass over its fields. `body` is `None` for a
/// body that is already at its end, else its exact length when known.
pub(crate) fn head(
    parts: &http::response::Parts,
    asked: Asked<'_>,
    body: Option<Option<u64>>,
    dst: &mut Vec<u8>,
) -> Plan {
    let method = asked.method;
    let status = parts.status;
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
    let mut last = !asked.keep_alive;
    let mut out = None;
    let mut wrote_date = false;
    let mut said_connection = false;
    // The joined line being written, and what its values said.
    let mut open: Option<Joined> = None;
    let (mut close_said, mut keep_alive_said, mut te_chunked) = (false, false, false);
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in &parts.headers {
        let first = previous != Some(name);
        previous = Some(name);
        if first {
            if let Some(joined) = open.take() {
                end_joined(dst, joined, asked, close_said, keep_alive_said, te_chunked);
            }
        }
        match *name {
            header::CONTENT_LENGTH => {
                if !first || out.is_some() {
                    continue;
                }
                match body {
                    Some(Some(known)) => out = Some(Out::Length(known)),
                    Some(None) => match digits(value.as_bytes()) {
                        Some(n) => out = Some(Out::Length(n)),
                        None => continue,
                    },
                    None if method == Method::HEAD => out = Some(Out::Length(0)),
                    None => continue,
                }
                line(dst, b"content-length", value.as_bytes());
            }
            header::TRANSFER_ENCODING => {
                if !chunkable || (first && out.is_some()) || (!first && open.is_none()) {
                    continue;
                }
                if first {
                    out = Some(Out::Chunked);
                    dst.extend_from_slice(b"transfer-encoding: ");
                    open = Some(Joined::TransferEncoding);
                } else {
                    dst.extend_from_slice(b", ");
                }
                dst.extend_from_slice(value.as_bytes());
                te_chunked = last_token_is(value, "chunked");
            }
            header::CONNECTION => {
                if first {
                    said_connection = true;
                    dst.extend_from_slice(b"connection: ");
                    open = Some(Joined::Connection);
                } else {
                    dst.extend_from_slice(b", ");
                }
                dst.extend_from_slice(value.as_bytes());
                let (close, keep) = (has_token(value, "close"), has_token(value, "keep-alive"));
                close_said |= close;
                keep_alive_said |= keep;
                last |= close;
            }
            header::TRAILER if !chunkable => {}
            _ => {
                wrote_date |= name == header::DATE;
                line(dst, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    if let Some(joined) = open.take() {
        end_joined(dst, joined, asked, close_said, keep_alive_said, te_chunked);
    }
    if !said_connection {
        if asked.http10 && asked.keep_alive {
            dst.extend_from_slice(b"connection: keep-alive\r\n");
        } else if !asked.http10 && !asked.keep_alive {
            dst.extend_from_slice(b"connection: close\r\n");
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

/// Ends a joined line: `chunked` is added to a coding list that does not end with it, and the
/// connection's fate to a `Connection` line that does not say it (as hyper does).
fn end_joined(
    dst: &mut Vec<u8>,
    joined: Joined,
    asked: Asked<'_>,
    close_said: bool,
    keep_alive_said: bool,
    te_chunked: bool,
) {
    match joined {
        Joined::TransferEncoding if !te_chunked => dst.extend_from_slice(b", chunked"),
        Joined::Connection if asked.http10 && asked.keep_alive && !keep_alive_said => {
            dst.extend_from_slice(b", keep-alive")
        }
        Joined::Connection if !asked.http10 && !asked.keep_alive && !close_said => {
            dst.extend_from_slice(b", close")
        }
        _ => {}
    }
    dst.extend_from_slice(b"\r\n");
}

fn last_token_is(value: &HeaderValue, needle: &str) -> bool {
    value.to_str().is_ok_and(|s| {
        s.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case(needle))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        method: Method,
        http10: bool,
        keep_alive: bool,
        body: Option<Option<u64>>,
    ) -> (String, Plan) {
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        for (n, v) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let (parts, ()) = response.into_parts();
        let mut dst = Vec::new();
        let asked = Asked {
            method: &method,
            http10,
            keep_alive,
        };
        let plan = head(&parts, asked, body, &mut dst);
        let text = String::from_utf8(dst).expect("utf-8");
        let without_date: Vec<&str> = text.lines().filter(|l| !l.starts_with("date: ")).collect();
        assert!(text.contains("\r\ndate: "), "{text}");
        (without_date.join("\n"), plan)
    }

    #[test]
    fn lengths_follow_the_body_and_the_method() {
        let (text, plan) = encode(
            200,
            &[("x-a", "1")],
            Method::GET,
            false,
            true,
            Some(Some(2)),
        );
        assert_eq!(text, "HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 2\n");
        assert_eq!((plan.out, plan.last), (Out::Length(2), false));
        let (text, plan) = encode(200, &[], Method::GET, false, true, Some(None));
        assert_eq!(text, "HTTP/1.1 200 OK\ntransfer-encoding: chunked\n");
        assert_eq!(plan.out, Out::Chunked);
        let (_, plan) = encode(200, &[], Method::GET, true, true, Some(None));
        assert!(
            plan.last && plan.out == Out::Close,
            "an HTTP/1.0 client reads to the close"
        );
        let (text, plan) = encode(
            200,
            &[("content-length", "10")],
            Method::HEAD,
            false,
            true,
            None,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 10\n");
        assert!(plan.bodiless);
        let (text, plan) = encode(204, &[], Method::GET, false, true, Some(Some(3)));
        assert_eq!(text, "HTTP/1.1 204 No Content\n");
        assert!(plan.bodiless);
        let (text, _) = encode(200, &[], Method::GET, false, true, None);
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 0\n");
    }

    #[test]
    fn the_connection_fate_is_said_once() {
        let (text, plan) = encode(200, &[], Method::GET, false, false, Some(Some(0)));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 0\n"
        );
        assert!(plan.last);
        let (text, _) = encode(
            200,
            &[("connection", "x-a"), ("connection", "x-b")],
            Method::GET,
            false,
            false,
            Some(Some(0)),
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\nconnection: x-a, x-b, close\ncontent-length: 0\n"
        );
        let (text, plan) = encode(200, &[], Method::GET, true, true, Some(Some(1)));
        assert_eq!(
            text,
            "HTTP/1.0 200 OK\nconnection: keep-alive\ncontent-length: 1\n"
        );
        assert!(!plan.last);
        let (_, plan) = encode(
            400,
            &[("connection", "close")],
            Method::GET,
            false,
            true,
            Some(Some(1)),
        );
        assert!(plan.last, "a response that says close ends the connection");
        let (text, _) = encode(
            200,
            &[("transfer-encoding", "gzip")],
            Method::GET,
            false,
            true,
            Some(None),
        );
        assert_eq!(text, "HTTP/1.1 200 OK\ntransfer-encoding: gzip, chunked\n");
    }
}
