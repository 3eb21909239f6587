//! Slow and silent peers, through real sockets with short timeouts: a connection stuck anywhere
//! before its first request head (silent, inside the h2 preface, before SETTINGS or HEADERS, in
//! a TLS handshake) is closed after the header read timeout and frees its slot; a request body,
//! an upstream response body, an HTTP/1.1 client that stops reading and an HTTP/2 stream that
//! stops reading are each abandoned within the body idle timeout and counted, and the stalled
//! h2 stream is reset at once while its connection serves on.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::h2raw::{self, H2Raw};
use support::tls::{tls_connect, Ca, TempDir};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How an upstream test server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// A head and one chunk, then nothing, for ever.
    StallAfterOneChunk,
    /// `n` MiB as fast as the reader takes them.
    Big(usize),
    /// `{}` (what every path ending in `/small` gets).
    Small,
}

/// A streaming upstream; counts the body chunks it got written out.
async fn streaming_upstream(answer: Answer) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        // Read the request body fully first (the stalled-request test never
                        // completes it).
                        let answer = if req.uri().path().ends_with("/small") {
                            Answer::Small
                        } else {
                            answer
                        };
                        let _ = req.into_body().collect().await;
                        let chunk = match answer {
                            Answer::Small => Bytes::from_static(b"{}"),
                            _ => Bytes::from(vec![b'x'; 64 * 1024]),
                        };
                        let body = chunks(answer, chunk, counter);
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, sent)
}

/// The answer's body, fed by a task through a one-frame channel.
fn chunks(
    answer: Answer,
    chunk: Bytes,
    counter: Arc<AtomicU64>,
) -> http_body_util::channel::Channel<Bytes, Infallible> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        let count = match answer {
            Answer::StallAfterOneChunk | Answer::Small => 1,
            Answer::Big(mib) => mib * 16,
        };
        for _ in 0..count {
            if tx.send(Frame::data(chunk.clone())).await.is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(answer, Answer::StallAfterOneChunk) {
            // Never finish: keep the sender alive.
            std::future::pending::<()>().await;
        }
    });
    body
}

async fn gateway(upstream: SocketAddr, extra: &str) -> modegate::RunningApp {
    spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\nbody_idle_timeout_secs = 1\n{extra}[upstream]\nbase_url = \"http://{upstream}\"\n"
    )))
    .await
}

/// `modegate_connections_closed_total{reason}`.
async fn closed(gw: &modegate::RunningApp, reason: &str) -> f64 {
    sample(
        &metrics(gw.admin_addr).await,
        "modegate_connections_closed_total",
        &[("reason", reason)],
    )
}

/// Waits (bounded) until `modegate_connections_closed_total{reason}` is `want` (failing at
/// once if it passes it).
async fn assert_closed(gw: &modegate::RunningApp, reason: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = closed(gw, reason).await;
        if n == want {
            return;
        }
        assert!(
            n < want && Instant::now() < deadline,
            "connections closed for {reason}: {n}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ways a client can be stuck before its first request head is complete, as the bytes it
/// sends before going quiet.
fn stuck_phases() -> Vec<(&'static str, Vec<u8>)> {
    let headers = h2raw::frame(
        h2raw::HEADERS,
        h2raw::END_STREAM | h2raw::END_HEADERS,
        1,
        &h2raw::get_block("/v1/projects/p/apps"),
    );
    let no_end_headers = h2raw::frame(
        h2raw::HEADERS,
        h2raw::END_STREAM,
        1,
        &h2raw::get_block("/v1/projects/p/apps"),
    );
    vec![
        ("silent", Vec::new()),
        ("a partial h2c preface", b"PRI * HTTP".to_vec()),
        (
            "the preface without SETTINGS",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        ("the preface and SETTINGS, no HEADERS", h2raw::preface()),
        (
            "a partial first HEADERS frame",
            [h2raw::preface(), headers[..12].to_vec()].concat(),
        ),
        (
            "a header block without its end",
            [h2raw::preface(), no_end_headers].concat(),
        ),
        (
            "a partial HTTP/1.1 head",
            b"GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n".to_vec(),
        ),
    ]
}

/// Reads (and drops: an h2 server sends its SETTINGS first) until the gateway closes the
/// connection; fails after `within`. Returns what was read.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
    what: &str,
) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("{what}: not closed within {within:?}"),
        }
    }
}

async fn idle_timeouts(gw: &modegate::RunningApp, direction: &str) -> f64 {
    sample(
        &metrics(gw.admin_addr).await,
        "modegate_body_idle_timeouts_total",
        &[("direction", direction)],
    )
}

#[tokio::test]
async fn silent_connections_are_closed_and_free_their_slots() {
    let up = Upstream::ok().await;
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\nmax_connections = 50\n[upstream]\nbase_url = \"{}\"\n",
        up.url()
    )))
    .await;
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(gw.proxy_addr).await.expect("connect"));
    }
    let started = Instant::now();
    let r = get(&format!("http://{}/v1/projects/p/apps", gw.proxy_addr)).await;
    assert_eq!(r.status, 200);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "a legitimate request waited {waited:?} behind silent connections"
    );
    // Every silent connection is closed (EOF) by the gateway, none answered.
    for mut s in silent {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within the timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_stuck_anywhere_before_its_first_request_head_is_closed_and_counted() {
    let up = Upstream::ok().await;
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\n[upstream]\nbase_url = \"{}\"\n",
        up.url()
    )))
    .await;
    let phases = stuck_phases();
    let mut tasks = Vec::new();
    for (what, bytes) in phases.clone() {
        let addr = gw.proxy_addr;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(&bytes).await.expect("write");
            let read = read_until_closed(&mut s, Duration::from_secs(5), what).await;
            let waited = started.elapsed();
            assert!(
                waited < Duration::from_secs(2),
                "{what}: closed after {waited:?} (header read timeout 1 s)"
            );
            assert!(
                !String::from_utf8_lossy(&read).contains("HTTP/1.1"),
                "{what}: answered instead of closed"
            );
        }));
    }
    for t in tasks {
        t.await.expect("phase");
    }
    assert!(up.seen().is_empty());
    assert_closed(&gw, "header_timeout", phases.len() as f64).await;
    assert_eq!(closed(&gw, "write_stall").await, 0.0);
    assert_eq!(closed(&gw, "body_idle").await, 0.0);
    // A request that completes its head in time is served as before.
    let r = get(&format!("http://{}/v1/projects/p/apps", gw.proxy_addr)).await;
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn sixty_connections_stuck_before_a_request_head_free_fifty_slots() {
    let up = Upstream::ok().await;
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\nmax_connections = 50\n[upstream]\nbase_url = \"{}\"\n",
        up.url()
    )))
    .await;
    let phases = stuck_phases();
    let started = Instant::now();
    let mut stuck = Vec::new();
    for i in 0..60 {
        let (what, bytes) = phases[i % phases.len()].clone();
        let mut s = TcpStream::connect(gw.proxy_addr).await.expect("connect");
        s.write_all(&bytes).await.expect("write");
        stuck.push(tokio::spawn(async move {
            let _ = read_until_closed(&mut s, Duration::from_secs(6), what).await;
            (i, started.elapsed())
        }));
    }
    // A legitimate request waits only for the slots the stuck ones free.
    let r = get(&format!("http://{}/v1/projects/p/apps", gw.proxy_addr)).await;
    assert_eq!(r.status, 200);
    let served = started.elapsed();
    assert!(
        served < Duration::from_secs(2),
        "a legitimate request waited {served:?} behind 60 stuck connections"
    );
    for t in stuck {
        let (i, at) = t.await.expect("stuck connection");
        // The 50 that got a slot have the header read timeout from their connect; the 10 over
        // `max_connections` waited in the accept backlog for a slot first.
        let bound = if i < 50 { 2 } else { 3 };
        assert!(
            at < Duration::from_secs(bound),
            "connection {i} ({}) closed after {at:?}",
            phases[i % phases.len()].0
        );
    }
    assert_closed(&gw, "header_timeout", 60.0).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn after_a_first_request_an_idle_connection_and_a_dribbled_head_are_told_apart() {
    let up = Upstream::ok().await;
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\n[upstream]\nbase_url = \"{}\"\n",
        up.url()
    )))
    .await;
    let request = b"GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n\r\n";
    for (then, reason) in [(&b""[..], "idle"), (&b"GET /v1/pro"[..], "header_timeout")] {
        let mut s = TcpStream::connect(gw.proxy_addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.expect("answer");
        assert_eq!(&head, b"HTTP/1.1 200");
        s.write_all(then).await.expect("write");
        let started = Instant::now();
        let _ = read_until_closed(&mut s, Duration::from_secs(5), reason).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_closed(&gw, reason, 1.0).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_and_a_silent_tls_session_are_closed_and_counted() {
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    let (cert, key) = ca.localhost().write(&dir, "listener");
    let up = Upstream::ok().await;
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\ntls_cert_file = {:?}\ntls_key_file = {:?}\n[upstream]\nbase_url = \"{}\"\n",
        cert.display(),
        key.display(),
        up.url()
    )))
    .await;
    // Half a ClientHello, then silence.
    let started = Instant::now();
    let mut partial = TcpStream::connect(gw.proxy_addr).await.expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .expect("write");
    let read = read_until_closed(&mut partial, Duration::from_secs(5), "partial ClientHello").await;
    assert!(read.is_empty(), "nothing answers half a ClientHello");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A handshake completed (h2 offered), then no preface: the same deadline, from accept.
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let started = Instant::now();
        let (mut session, _) = tls_connect(&ca, gw.proxy_addr, &[alpn]).await;
        let _ = read_until_closed(&mut session, Duration::from_secs(5), "silent TLS session").await;
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
    }
    assert_closed(&gw, "header_timeout", 3.0).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_h2_stream_is_reset_at_once_while_its_connection_serves_on() {
    let (up, sent) = streaming_upstream(Answer::Big(64)).await;
    let gw = gateway(up, "").await;
    let mut raw = H2Raw::handshaken(gw.proxy_addr).await;
    // The client reads its socket and opens the connection's window wide, but never the
    // stream's: the first stream stalls at its 64 KiB default window.
    raw.send(&h2raw::frame(
        h2raw::WINDOW_UPDATE,
        0,
        0,
        &(8u32 << 20).to_be_bytes(),
    ))
    .await
    .expect("window update");
    let get = |id: u32, path: &str| {
        h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_STREAM | h2raw::END_HEADERS,
            id,
            &h2raw::get_block(path),
        )
    };
    let opened = Instant::now();
    raw.send(&get(1, "/v1/projects/p/big"))
        .await
        .expect("stream 1");
    let frames = raw
        .read_until(Duration::from_secs(5), |f| {
            f.kind == h2raw::DATA && f.stream == 1
        })
        .await;
    assert!(
        frames.iter().any(|f| f.kind == h2raw::DATA),
        "stream 1 started"
    );
    // Another stream on the same connection completes while the first one stalls.
    raw.send(&get(3, "/v1/projects/p/small"))
        .await
        .expect("stream 3");
    let frames = raw
        .read_until(Duration::from_secs(5), |f| {
            f.stream == 3 && f.flags & h2raw::END_STREAM != 0
        })
        .await;
    let ended = frames
        .iter()
        .any(|f| f.stream == 3 && f.flags & h2raw::END_STREAM != 0);
    assert!(ended, "stream 3 completed: {frames:?}");
    assert!(
        !frames.iter().any(|f| f.kind == h2raw::RST_STREAM),
        "stream 3 completed while stream 1 was stalled, before its reset"
    );
    // The stalled stream is reset (CANCEL) within the body idle timeout + 1 s, without the
    // client opening its window.
    let frames = raw
        .read_until(Duration::from_secs(5), |f| f.kind == h2raw::RST_STREAM)
        .await;
    let reset = frames
        .iter()
        .find(|f| f.kind == h2raw::RST_STREAM)
        .expect("stream 1 reset");
    let at = opened.elapsed();
    assert_eq!(reset.stream, 1);
    assert_eq!(reset.error_code(), Some(h2raw::CANCEL));
    assert!(at < Duration::from_secs(2), "reset after {at:?}");
    assert!(!frames.iter().any(|f| f.kind == h2raw::GOAWAY));
    let at_cut = sent.load(Ordering::SeqCst);
    assert!(at_cut < 64 * 16, "the upstream was released");
    // The connection goes on: a new stream is answered in full.
    raw.send(&get(5, "/v1/projects/p/small"))
        .await
        .expect("stream 5");
    let frames = raw
        .read_until(Duration::from_secs(5), |f| {
            f.stream == 5 && f.flags & h2raw::END_STREAM != 0
        })
        .await;
    assert!(
        frames
            .iter()
            .any(|f| f.stream == 5 && f.flags & h2raw::END_STREAM != 0),
        "stream 5 completed after the reset: {frames:?}"
    );
    assert!(!frames
        .iter()
        .any(|f| f.kind == h2raw::GOAWAY || f.stream == 1));
    assert_eventually_async(&gw, "response", 1.0).await;
    // A stream was reset; no connection was closed.
    for reason in ["header_timeout", "write_stall", "body_idle"] {
        assert_eq!(closed(&gw, reason).await, 0.0, "{reason}");
    }
    drop(raw);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_stops_mid_body_is_abandoned_over_h1_and_h2() {
    let (up, _) = streaming_upstream(Answer::StallAfterOneChunk).await;
    let gw = gateway(up, "").await;
    for h2 in [false, true] {
        let client = if h2 {
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http::<Full<Bytes>>()
        } else {
            client()
        };
        let started = Instant::now();
        let resp = client
            .get(
                format!("http://{}/v1/projects/p/big", gw.proxy_addr)
                    .parse()
                    .expect("uri"),
            )
            .await
            .expect("head");
        assert_eq!(resp.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .expect("the body ends within the idle timeout");
        assert!(
            body.is_err(),
            "an abandoned body is an error, never a clean end"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    assert_eventually_async(&gw, "response", 2.0).await;
    // The HTTP/1.1 connection is closed for it; over h2 only the stream is reset.
    assert_closed(&gw, "body_idle", 1.0).await;
    gw.shutdown().await;
}

/// Waits (bounded) for the idle-timeout counter to reach `at_least`.
async fn assert_eventually_async(gw: &modegate::RunningApp, direction: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = idle_timeouts(gw, direction).await;
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{direction} idle timeouts: {n}, wanted {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_body_that_stalls_is_answered_408_and_counted() {
    let (up, _) = streaming_upstream(Answer::Big(1)).await;
    let gw = gateway(up, "").await;
    for path in ["/v1/projects/p/notes", "/v1/projects/p/messages:send"] {
        let mut s = TcpStream::connect(gw.proxy_addr).await.expect("connect");
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"app_id\":"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(text.contains("DEADLINE_EXCEEDED"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    assert_eventually_async(&gw, "request", 2.0).await;
    assert_closed(&gw, "body_idle", 2.0).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h1_client_that_stops_reading_is_cut_off_and_the_upstream_released() {
    let (up, sent) = streaming_upstream(Answer::Big(64)).await;
    let gw = gateway(up, "").await;
    let mut s = TcpStream::connect(gw.proxy_addr).await.expect("connect");
    s.write_all(b"GET /v1/projects/p/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Read nothing; the gateway gives up on this reader.
    assert_eventually_async(&gw, "response", 1.0).await;
    let at_cut = sent.load(Ordering::SeqCst);
    assert!(
        at_cut < 64 * 16,
        "the upstream was not held to the end: {at_cut} chunks"
    );
    // What the client then reads ends early: the connection was closed.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total < 64 << 20, "read {total} bytes");
    assert_closed(&gw, "write_stall", 1.0).await;
    assert_eq!(closed(&gw, "body_idle").await, 0.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h2_stream_that_stops_reading_is_abandoned_and_the_upstream_released() {
    let (up, sent) = streaming_upstream(Answer::Big(64)).await;
    let gw = gateway(up, "").await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .get(
            format!("http://{}/v1/projects/p/big", gw.proxy_addr)
                .parse()
                .expect("uri"),
        )
        .await
        .expect("head");
    assert_eq!(resp.status(), 200);
    // Hold the body unread: the stream's window fills and stays full.
    assert_eventually_async(&gw, "response", 1.0).await;
    let at_cut = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sent.load(Ordering::SeqCst) <= at_cut + 2,
        "the upstream kept sending after the stream was abandoned"
    );
    assert!(at_cut < 64 * 16);
    // The stream was reset: what the client reads then ends in an error, never as if complete.
    let rest = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the stream ends");
    assert!(rest.is_err(), "an abandoned body must not end cleanly");
    gw.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::ok().await;
    let gw = spawn(config_for(&up.url())).await;
    let n = 10_000;
    let mut raw = String::new();
    for i in 0..n {
        raw.push_str(&format!(
            "GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\nx-request-id: req-{i}\r\n\r\n"
        ));
    }
    raw.push_str("GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = raw_exchange(gw.proxy_addr, raw.as_bytes(), Duration::from_secs(60)).await;
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("x-request-id: req-"))
        .collect();
    assert_eq!(ids.len(), n, "every pipelined request answered");
    assert!(
        ids.iter()
            .enumerate()
            .all(|(i, id)| id.trim() == i.to_string()),
        "answered in order"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h2_header_list_over_16_kib_never_reaches_the_upstream() {
    let up = Upstream::ok().await;
    let gw = spawn(config_for(&up.url())).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{}/v1/projects/p/apps", gw.proxy_addr))
        .header("x-big", "a".repeat(20 * 1024))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("an answer or a reset in time");
    if let Ok(resp) = answer {
        assert_ne!(resp.status(), 200);
    }
    assert!(up.seen().is_empty());
    gw.shutdown().await;
}
