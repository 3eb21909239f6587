//! The two HTTP/1.1 clients give the same answers: generated *response* byte streams (valid,
//! malformed framing — CL with TE, repeated, conflicting or signed lengths, bad chunk sizes,
//! chunk extensions, bare LF, obs-fold, 1xx before the answer, 204/304/HEAD with stray bytes,
//! close-delimited bodies, pipelined extra bytes, oversized heads — each split at a generated
//! offset) go from a raw TCP upstream to hyper's `client::conn::http1` (built as the pool
//! builds it) and to the native client, which must agree on error vs (status, headers, body),
//! and on whether the connection carries a second request; and generated *requests*
//! (methods, headers, bodies of known, unknown or zero size) must put the same bytes on the
//! wire.
//!
//! `MODEGATE_DIFFERENTIAL_CASES` sets the number of cases of each property (CI runs the
//! default); a longer run's count is logged in `bench/differential.md`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use modegate::upstream::h1::{Connection, Home};
use modegate::upstream::{boxed, full, GatewayBody, UPSTREAM_READ_BUF};

/// A case that does not finish within this is a failure (a client waiting for bytes that
/// never come), not an outcome.
const BOUND: Duration = Duration::from_secs(10);
/// How long the upstream waits for more of a request body than has come.
const SHORT_BODY: Duration = Duration::from_millis(100);
const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Reads one request (head, then a body by its framing) off `stream`; its bytes.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    };
    let chunked = field("transfer-encoding").is_some_and(|v| v.ends_with("chunked"));
    let length = field("content-length").and_then(|v| v.parse::<usize>().ok());
    loop {
        let done = if chunked {
            buf[head_end..].ends_with(b"0\r\n\r\n")
        } else {
            buf.len() >= head_end + length.unwrap_or(0)
        };
        if done {
            return Some(buf);
        }
        // A client that sends less than its head promised (both clients do, for some
        // generated requests) is recorded as far as it got.
        match tokio::time::timeout(SHORT_BODY, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return Some(buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream for one case: reads the request, writes `pieces` (then closes if `close`),
/// says so, and answers any further request with [`SECOND`]. Yields the first request's
/// bytes (as text, its own address replaced by `upstream`).
async fn upstream(
    pieces: Vec<Vec<u8>>,
    close: bool,
) -> (
    SocketAddr,
    oneshot::Receiver<Vec<u8>>,
    oneshot::Receiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, seen_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let first = read_request(&mut stream).await.unwrap_or_default();
        // Each client has its own upstream: its address is not part of the comparison.
        let first = String::from_utf8_lossy(&first).replace(&addr.to_string(), "upstream");
        let _ = seen_tx.send(first.into_bytes());
        for piece in pieces {
            if stream.write_all(&piece).await.is_err() {
                break;
            }
        }
        if close {
            let _ = stream.shutdown().await;
        }
        let _ = done_tx.send(());
        while read_request(&mut stream).await.is_some() {
            if stream.write_all(SECOND).await.is_err() {
                break;
            }
        }
    });
    (addr, seen_rx, done_rx)
}

/// What a client made of a response.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// No response head.
    Failed,
    Answered {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        /// The body, or `None` when it failed.
        body: Option<Vec<u8>>,
        /// The connection carried a second request (checked when the upstream kept it open).
        reused: Option<bool>,
    },
}

fn headers_of(map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

async fn collect<B>(body: B) -> Option<Vec<u8>>
where
    B: http_body::Body<Data = Bytes>,
{
    body.collect().await.ok().map(|c| c.to_bytes().to_vec())
}

/// What a client made of `response`; unless the upstream closed after it (`close`) or its
/// body failed, whether `second` (run once the upstream wrote all it had) got [`SECOND`]'s
/// body on the same connection.
async fn answered<B, F>(
    response: http::Response<B>,
    close: bool,
    done: oneshot::Receiver<()>,
    second: impl FnOnce() -> F,
) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    F: std::future::Future<Output = Option<Vec<u8>>>,
{
    let status = response.status().as_u16();
    let headers = headers_of(response.headers());
    let body = collect(response.into_body()).await;
    let reused = if close || body.is_none() {
        None
    } else {
        let _ = done.await;
        Some(second().await.as_deref() == Some(&b"second"[..]))
    };
    Outcome::Answered {
        status,
        headers,
        body,
        reused,
    }
}

/// A body of unknown size, frame by frame.
struct Frames(VecDeque<Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A request as the pool hands it to a connection.
#[derive(Clone, Debug)]
struct Asked {
    method: Method,
    headers: Vec<(String, String)>,
    body: BodyKind,
}

#[derive(Clone, Debug)]
enum BodyKind {
    Empty,
    Known(Vec<u8>),
    Unknown(Vec<Vec<u8>>),
}

impl Asked {
    fn get(method: Method) -> Asked {
        Asked {
            method,
            headers: Vec::new(),
            body: BodyKind::Empty,
        }
    }

    /// The request to `addr`, absolute; `origin_form` turns it into what hyper's client gets
    /// from the pool (origin form, `Host` added).
    fn build(&self, addr: SocketAddr, origin_form: bool) -> Request<GatewayBody> {
        let body = match &self.body {
            BodyKind::Empty => full(Bytes::new()),
            BodyKind::Known(b) => full(b.clone()),
            BodyKind::Unknown(frames) => boxed(Frames(
                frames.iter().map(|f| Bytes::from(f.clone())).collect(),
            )),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.version_mut() = http::Version::HTTP_11;
        for (n, v) in &self.headers {
            request.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        *request.uri_mut() = format!("http://{addr}/a/b?c=d").parse().expect("uri");
        if origin_form {
            if !request.headers().contains_key(http::header::HOST) {
                let host = HeaderValue::from_str(&addr.to_string()).expect("host");
                request.headers_mut().insert(http::header::HOST, host);
            }
            *request.uri_mut() = "/a/b?c=d".parse().expect("uri");
        }
        request
    }
}

/// Whether a response's body ends only with the connection (then the upstream closes).
fn reads_to_close(asked: &Method, status: u16, headers: &[(String, Vec<u8>)]) -> bool {
    let value = |name: &str| headers.iter().rev().find(|(n, _)| n == name);
    if *asked == Method::HEAD || matches!(status, 101 | 204 | 304) {
        return false;
    }
    match value("transfer-encoding") {
        Some((_, v)) => !String::from_utf8_lossy(v)
            .rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked")),
        None => value("content-length").is_none(),
    }
}

async fn via_hyper(asked: &Asked, pieces: Vec<Vec<u8>>, close: bool) -> (Outcome, Vec<u8>) {
    let (addr, seen, done) = upstream(pieces, close).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(UPSTREAM_READ_BUF)
        .handshake::<_, GatewayBody>(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let outcome = match sender.send_request(asked.build(addr, true)).await {
        Err(_) => Outcome::Failed,
        Ok(response) => {
            answered(response, close, done, move || async move {
                sender.ready().await.ok()?;
                let response = sender
                    .send_request(Asked::get(Method::GET).build(addr, true))
                    .await
                    .ok()?;
                collect(response.into_body()).await
            })
            .await
        }
    };
    (outcome, seen.await.unwrap_or_default())
}

/// Where the native client's connection comes back to in a test.
#[derive(Default)]
struct Slot(Mutex<Option<Box<Connection>>>);

impl Home for Slot {
    fn check_in(&self, connection: Box<Connection>) {
        *self.0.lock().expect("lock") = Some(connection);
    }
}

async fn via_native(asked: &Asked, pieces: Vec<Vec<u8>>, close: bool) -> (Outcome, Vec<u8>) {
    let (addr, seen, done) = upstream(pieces, close).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let connection = Connection::new(MaybeHttpsStream::Http(TokioIo::new(stream)));
    let slot = Arc::new(Slot::default());
    let outcome = match connection
        .send(asked.build(addr, false), Some(slot.clone()))
        .await
    {
        Err(_) => Outcome::Failed,
        Ok(response) => {
            answered(response, close, done, move || async move {
                let mut connection = slot.0.lock().expect("lock").take()?;
                if !connection.is_reusable() {
                    return None;
                }
                let response = connection
                    .send(Asked::get(Method::GET).build(addr, false), None)
                    .await
                    .ok()?;
                collect(response.into_body()).await
            })
            .await
        }
    };
    (outcome, seen.await.unwrap_or_default())
}

/// Both clients on one response stream, cut at `split`; the upstream keeps the connection
/// open unless the body reads to the close or `close` says otherwise.
async fn both(method: Method, stream: &[u8], split: usize, close: bool) -> (Outcome, Outcome) {
    let split = split.min(stream.len());
    let pieces = vec![stream[..split].to_vec(), stream[split..].to_vec()];
    let asked = Asked::get(method);
    // First with the upstream closing after the stream, so that no client waits for bytes
    // that never come; then, when the body does not read to the close, with the connection
    // left open, for reuse.
    let (hyper, _) = via_hyper(&asked, pieces.clone(), true).await;
    let (native, _) = via_native(&asked, pieces.clone(), true).await;
    if close || hyper != native {
        return (hyper, native);
    }
    let Outcome::Answered {
        status,
        headers,
        body: Some(_),
        ..
    } = &hyper
    else {
        return (hyper, native);
    };
    if reads_to_close(&asked.method, *status, headers) {
        return (hyper, native);
    }
    let (hyper, _) = via_hyper(&asked, pieces.clone(), false).await;
    let (native, _) = via_native(&asked, pieces, false).await;
    (hyper, native)
}

/// One generated header line of a response.
fn response_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("content-length: 5".to_string()),
        Just("content-length: 0".to_string()),
        Just("content-length: 3".to_string()),
        Just("content-length: 50".to_string()),
        Just("content-length: +5".to_string()),
        Just("content-length: -1".to_string()),
        Just("content-length: 5, 5".to_string()),
        Just("content-length: 5,6".to_string()),
        Just("content-length: 99999999999999999999".to_string()),
        Just("content-length:".to_string()),
        Just("transfer-encoding: chunked".to_string()),
        Just("transfer-encoding: gzip".to_string()),
        Just("transfer-encoding: gzip, chunked".to_string()),
        Just("transfer-encoding: chunked, gzip".to_string()),
        Just("Transfer-Encoding: CHUNKED".to_string()),
        Just("connection: close".to_string()),
        Just("connection: keep-alive".to_string()),
        Just("connection: upgrade".to_string()),
        Just("x-a: 1".to_string()),
        Just("x-fold: a\r\n b".to_string()),
        Just("x-sp : a".to_string()),
        Just("x-empty:".to_string()),
        Just("x-tab:\tv\t".to_string()),
        Just("bad\u{7f}name: v".to_string()),
        Just(format!("x-big: {}", "v".repeat(4_000))),
        Just(format!("x-huge: {}", "v".repeat(40_000))),
        Just("trailer: x-t".to_string()),
    ]
}

/// One generated response body (as the bytes after the head).
fn response_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"hello".to_vec()),
        Just(Vec::new()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"5;ext=1\r\nhello\r\n3 \r\nabc\r\n0\r\n\r\n".to_vec()),
        Just(b"5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n".to_vec()),
        Just(b"zz\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"5\r\nhelloXX0\r\n\r\n".to_vec()),
        Just(b"5\nhello\n0\n\n".to_vec()),
        Just(b"-5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"fffffffffffffffff\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"helloHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()),
        proptest::collection::vec(b'a'..=b'z', 0..40),
    ]
}

/// A generated response stream.
fn response_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(
            prop_oneof![
                Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                Just(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".to_vec()),
            ],
            0..2,
        ),
        prop_oneof![
            Just("HTTP/1.1"),
            Just("HTTP/1.0"),
            Just("HTTP/2.0"),
            Just("http/1.1")
        ],
        prop_oneof![
            Just("200 OK"),
            Just("201 Created"),
            Just("204 No Content"),
            Just("304 Not Modified"),
            Just("404 Not Found"),
            Just("101 Switching Protocols"),
            Just("599 Custom"),
            Just("099 Low"),
            Just("200"),
            Just("20 Short"),
        ],
        proptest::collection::vec(response_field(), 0..5),
        any::<bool>(),
        response_body(),
        prop_oneof![
            4 => Just(Vec::new()),
            1 => Just(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()),
            1 => Just(b"\r\n".to_vec()),
        ],
    )
        .prop_map(
            |(informational, version, status, fields, bare_lf, body, extra)| {
                let eol = if bare_lf { "\n" } else { "\r\n" };
                let mut out: Vec<u8> = informational.concat();
                out.extend_from_slice(format!("{version} {status}{eol}").as_bytes());
                for field in fields {
                    out.extend_from_slice(field.as_bytes());
                    out.extend_from_slice(eol.as_bytes());
                }
                out.extend_from_slice(eol.as_bytes());
                out.extend_from_slice(&body);
                out.extend_from_slice(&extra);
                out
            },
        )
}

fn cases() -> u32 {
    std::env::var("MODEGATE_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn bounded<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(async {
        tokio::time::timeout(BOUND, future)
            .await
            .expect("a client waited for bytes that never came")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn both_clients_read_every_response_alike(
        stream in response_stream(),
        split in 0usize..200,
        head in prop_oneof![5 => Just(false), 1 => Just(true)],
    ) {
        let method = if head { Method::HEAD } else { Method::GET };
        let (hyper, native) = bounded(both(method, &stream, split, false));
        prop_assert_eq!(hyper, native, "stream {:?}", String::from_utf8_lossy(&stream));
    }

    #[test]
    fn both_clients_write_every_request_alike(
        method in prop_oneof![
            Just(Method::GET), Just(Method::POST), Just(Method::PUT), Just(Method::DELETE),
            Just(Method::HEAD), Just(Method::PATCH), Just(Method::OPTIONS),
        ],
        fields in proptest::collection::vec(prop_oneof![
            // (A valid `Content-Length` that the body does not match is a request the gateway
            // never sends; on it, how much reaches the wire before the error depends on when
            // hyper flushes.)
            Just(("content-length", "x")),
            Just(("transfer-encoding", "chunked")),
            Just(("transfer-encoding", "gzip")),
            Just(("connection", "close")),
            Just(("connection", "x-a")),
            Just(("host", "api.example")),
            Just(("x-a", "1")),
            Just(("x-a", "2")),
            Just(("x-b", "")),
            Just(("trailer", "x-t")),
        ], 0..5),
        body in prop_oneof![
            Just(BodyKind::Empty),
            proptest::collection::vec(b'a'..=b'z', 1..40).prop_map(BodyKind::Known),
            proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..20), 0..4)
                .prop_map(BodyKind::Unknown),
        ],
    ) {
        let asked = Asked {
            method,
            headers: fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body,
        };
        let answer = || vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()];
        let (hyper, native) = bounded(async {
            let (_, hyper) = via_hyper(&asked, answer(), true).await;
            let (_, native) = via_native(&asked, answer(), true).await;
            (hyper, native)
        });
        prop_assert_eq!(
            String::from_utf8_lossy(&hyper),
            String::from_utf8_lossy(&native),
            "{:?}", asked
        );
    }
}

#[test]
fn a_response_split_at_every_offset_reads_alike() {
    let stream = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n5;e=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n";
    for split in 0..=stream.len() {
        let (hyper, native) = bounded(both(Method::GET, stream, split, false));
        assert_eq!(hyper, native, "split at {split}");
        assert!(
            matches!(
                hyper,
                Outcome::Answered {
                    reused: Some(true),
                    ..
                }
            ),
            "{hyper:?}"
        );
    }
}
