//! The upstream connection pool through real sockets: HTTP/1.1 keep-alive reuse, the idle
//! timeout, h2 multiplexing, an upstream that closes idle connections, a connection that dies
//! mid-response or whose body is abandoned, `Connection: close`, and the per-origin cap; the
//! HTTP/1.1 connections run on the engine `MODEGATE_TEST_HTTP1_ENGINE` names.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use modegate::upstream::pool::PoolSettings;
use modegate::upstream::{full, HyperUpstream};
use support::tls::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A client for `base_url` trusting `ca_file`, with the pool's settings given.
fn pooled_client(
    base_url: &str,
    ca_file: Option<&std::path::Path>,
    pooling: PoolSettings,
) -> HyperUpstream {
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"{base_url}\"\n{}",
        ca_file.map_or_else(String::new, |p| format!("ca_file = {:?}\n", p.display()))
    ));
    HyperUpstream::with_pool(&config.upstream, &|_| None, pooling).expect("client")
}

fn pooling(idle_ms: u64, max_idle: usize) -> PoolSettings {
    PoolSettings {
        idle_timeout: Duration::from_millis(idle_ms),
        max_idle_per_host: max_idle,
        http1_engine: engine_from_env(),
    }
}

/// GET `url` through `client`, reading the whole body; the status and body.
async fn fetch(client: &HyperUpstream, url: &str) -> Result<(StatusCode, Bytes), String> {
    let response = client
        .pool()
        .send(
            Request::get(url)
                .header("authorization", DEMO_AUTH)
                .body(full(Bytes::new()))
                .expect("request"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// `n` concurrent GETs of `url` through `client`, each answered 200.
async fn fetch_all_ok(client: &Arc<HyperUpstream>, url: &str, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move { fetch(&client, &url).await.expect("ok").0 })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
}

async fn h1_upstream(ca: &Ca) -> TlsUpstream {
    let simulator = modegate::simulator::Simulator::new(demo_seed());
    TlsUpstream::start(
        server_config(&ca.localhost(), &[b"http/1.1"]),
        simulator.service(),
    )
    .await
}

#[tokio::test]
async fn http1_connections_are_kept_alive_reused_and_closed_when_idle() {
    let (ca, dir) = (Ca::new("pool CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = h1_upstream(&ca).await;
    let client = pooled_client(&upstream.url(), Some(&ca_file), pooling(300, 8));
    let url = format!("{}/v1/projects/demo-project/apps", upstream.url());
    for _ in 0..20 {
        assert_eq!(fetch(&client, &url).await.expect("ok").0, StatusCode::OK);
    }
    assert_eq!(
        upstream.connections(),
        1,
        "one keep-alive connection served all 20"
    );
    assert!(upstream
        .seen()
        .iter()
        .all(|s| s.version == Version::HTTP_11));
    let uri: http::Uri = url.parse().expect("uri");
    assert_eq!(client.pool().pooled(&uri), (0, 1));
    // Past the idle timeout the connection is closed even with no further traffic.
    assert_eventually(
        || client.pool().pooled(&uri) == (0, 0),
        Duration::from_secs(5),
        "the idle connection is reaped",
    )
    .await;
    assert_eq!(fetch(&client, &url).await.expect("ok").0, StatusCode::OK);
    assert_eq!(
        upstream.connections(),
        2,
        "a fresh connection after the idle timeout"
    );
}

#[tokio::test]
async fn concurrent_requests_open_connections_and_the_cap_keeps_a_few() {
    let (ca, dir) = (Ca::new("pool CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = h1_upstream(&ca).await;
    let client = Arc::new(pooled_client(
        &upstream.url(),
        Some(&ca_file),
        pooling(60_000, 2),
    ));
    let url = format!("{}/v1/projects/demo-project/apps", upstream.url());
    fetch_all_ok(&client, &url, 16).await;
    let uri: http::Uri = url.parse().expect("uri");
    assert!(
        client.pool().pooled(&uri).1 <= 2,
        "{:?}",
        client.pool().pooled(&uri)
    );
    // max_idle_per_host = 0: nothing is kept.
    let unpooled = pooled_client(&upstream.url(), Some(&ca_file), pooling(60_000, 0));
    let before = upstream.connections();
    for _ in 0..3 {
        assert_eq!(fetch(&unpooled, &url).await.expect("ok").0, StatusCode::OK);
    }
    assert_eq!(upstream.connections() - before, 3);
    assert_eq!(unpooled.pool().pooled(&uri), (0, 0));
}

#[tokio::test]
async fn h2_multiplexes_every_request_over_one_connection() {
    let (ca, dir) = (Ca::new("pool CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let simulator = modegate::simulator::Simulator::new(demo_seed());
    let upstream = TlsUpstream::start(
        server_config(&ca.localhost(), &[b"h2", b"http/1.1"]),
        simulator.service(),
    )
    .await;
    let client = Arc::new(pooled_client(
        &upstream.url(),
        Some(&ca_file),
        pooling(60_000, 8),
    ));
    let url = format!("{}/v1/projects/demo-project/apps", upstream.url());
    assert_eq!(fetch(&client, &url).await.expect("ok").0, StatusCode::OK);
    fetch_all_ok(&client, &url, 100).await;
    assert_eq!(upstream.connections(), 1);
    assert!(upstream.seen().iter().all(|s| s.version == Version::HTTP_2));
    let uri: http::Uri = url.parse().expect("uri");
    assert_eq!(client.pool().pooled(&uri), (1, 0));
}

/// A raw HTTP/1.1 upstream: answers each request with `respond(connection number, request
/// number on it)`'s bytes, then closes the socket if it returns `close`.
async fn raw_upstream(
    respond: impl Fn(usize, usize) -> (Vec<u8>, bool) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let respond = Arc::new(respond);
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for i in 0.. {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    buf.clear();
                    let (bytes, close) = respond(n, i);
                    if stream.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_costs_no_failed_request() {
    // Every connection answers one request with keep-alive, then the upstream closes it.
    let (url, accepted) = raw_upstream(|_, _| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            true,
        )
    })
    .await;
    let client = pooled_client(&url, None, pooling(60_000, 8));
    for _ in 0..10 {
        let (status, body) = fetch(&client, &format!("{url}/x")).await.expect("ok");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_connection_that_dies_mid_response_is_never_reused() {
    // The first connection promises 100 bytes, sends 5 and closes; later ones answer in full.
    let (url, accepted) = raw_upstream(|conn, _| {
        if conn == 0 {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello".to_vec(),
                true,
            )
        } else {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                false,
            )
        }
    })
    .await;
    let client = pooled_client(&url, None, pooling(60_000, 8));
    let broken = fetch(&client, &format!("{url}/x")).await;
    assert!(broken.is_err(), "{broken:?}");
    for _ in 0..5 {
        let (status, body) = fetch(&client, &format!("{url}/x")).await.expect("ok");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the broken connection was dropped; one healthy one served the rest"
    );
}

#[tokio::test]
async fn failures_keep_their_classification() {
    /// The failure kind of a GET to `url` through a fresh pooled client.
    async fn kind(url: &str) -> &'static str {
        use tower::ServiceExt;
        let request = Request::get(format!("{url}/x"))
            .body(full(Bytes::new()))
            .expect("request");
        pooled_client(url, None, pooling(60_000, 8))
            .into_upstream()
            .oneshot(request)
            .await
            .expect_err("a failure")
            .kind
            .as_str()
    }
    // Nothing listens: connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    assert_eq!(kind(&closed).await, "connect");
    // Closed before answering: reset.
    let (url, _) = raw_upstream(|_, _| (Vec::new(), true)).await;
    assert_eq!(kind(&url).await, "reset");
}

#[tokio::test]
async fn an_abandoned_body_closes_its_connection_and_close_is_never_reused() {
    // The first connection's answer promises more than it sends and is dropped unread; later
    // ones answer in full, the second of them with `Connection: close`.
    let (url, accepted) = raw_upstream(|conn, _| match conn {
        0 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nhello".to_vec(),
            false,
        ),
        1 => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec(),
            false,
        ),
        _ => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
    })
    .await;
    let client = pooled_client(&url, None, pooling(60_000, 8));
    let abandoned = client
        .pool()
        .send(
            Request::get(format!("{url}/x"))
                .body(full(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("head");
    assert_eq!(abandoned.status(), StatusCode::OK);
    drop(abandoned);
    // A fresh connection, which says close: the one after it is fresh again, and kept.
    for _ in 0..3 {
        let (status, body) = fetch(&client, &format!("{url}/x")).await.expect("ok");
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
