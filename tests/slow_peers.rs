//! Slow and silent peers, through real sockets with short timeouts: a connection that sends
//! nothing is closed after the header read timeout and frees its slot; a request body, an
//! upstream response body, an HTTP/1.1 client that stops reading and an HTTP/2 stream that stops
//! reading are each abandoned within the body idle timeout and counted.

mod support;

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
                        let _ = req.into_body().collect().await;
                        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
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
            Answer::StallAfterOneChunk => 1,
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
    // Reading again reopens the window: the stream then fails, never ends as if complete.
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
