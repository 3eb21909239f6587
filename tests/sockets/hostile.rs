//! Hostile clients: slow heads, oversized heads, connection floods, and hostile bodies on policy
//! routes get a clear 4xx (or a closed connection) and never reach the upstream.

use crate::support;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let upstream = Upstream::ok().await;
    let mut config = config_for(&upstream.url());
    config.server.header_read_timeout = Duration::from_secs(1);
    let gw = spawn(config).await;
    let mut s = TcpStream::connect(gw.proxy_addr).await.expect("connect");
    s.write_all(b"GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused_in_the_api_shape() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    // 99 fields: over the gateway's 96, within hyper's 100.
    let mut many = String::from("GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n");
    for i in 0..98 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let huge = format!(
        "GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    for request in [many, huge] {
        let out = raw_exchange(gw.proxy_addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert!(
            out.starts_with("HTTP/1.1 431"),
            "{}",
            &out[..out.len().min(300)]
        );
        assert!(out.contains("x-modegate-decision: rejected"), "{out}");
        assert!(out.contains("x-request-id: "), "{out}");
        assert!(out.contains("connection: close"), "{out}");
        assert!(out.contains(r#""status":"INVALID_ARGUMENT""#), "{out}");
        assert!(out.contains("request head too large"), "{out}");
    }
    // Past hyper's own backstop (100 fields; twice the gateway's head bytes) the answer is
    // hyper's.
    let mut beyond = String::from("GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        beyond.push_str(&format!("x-h{i}: v\r\n"));
    }
    beyond.push_str("\r\n");
    let out = raw_exchange(gw.proxy_addr, beyond.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_huge_query_string_on_a_policy_route_is_a_4xx() {
    let s = Stack::start("").await;
    let url = s.url(&format!(
        "/messages?app_id=new-app&channel_identity={}",
        "9".repeat(100 * 1024)
    ));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: {DEMO_AUTH}\r\nConnection: close\r\n\r\n",
        &url[url.find("/v1").expect("path")..]
    );
    let out = raw_exchange(s.gw.proxy_addr, request.as_bytes(), Duration::from_secs(3)).await;
    let status: u16 = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!(out.is_empty() || (400..500).contains(&status), "{out}");
    assert_eq!(
        s.calls(modegate::proxy::classify::Operation::ListMessages),
        0
    );
    s.stop().await;
}

#[tokio::test]
async fn hostile_policy_bodies_are_clear_400s() {
    let s = Stack::start("").await;
    let url = s.url("/messages:send");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let nested = format!(r#"{{"app_id":"new-app","x":{deep}}}"#);
    for body in [
        nested.as_bytes().to_vec(),
        b"{\"app_id\":\"new-app\",\"x\":\"\xff\xfe\"}".to_vec(),
    ] {
        let req = http::Request::post(&url)
            .header("authorization", DEMO_AUTH)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let resp = client().request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("API error shape");
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("body:"));
    }
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let r = send(
            Method::POST,
            &url,
            &[("authorization", DEMO_AUTH), ("content-type", ct)],
            SEND_TO_ALICE,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ct}");
    }
    // application/json with parameters and +json types are JSON.
    let r = send(
        Method::POST,
        &url,
        &[
            ("authorization", DEMO_AUTH),
            ("content-type", "application/json; charset=utf-8"),
        ],
        &send_identified("new-app"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.calls(modegate::proxy::classify::Operation::SendMessage),
        1
    );
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let upstream = Upstream::ok().await;
    let mut config = config_for(&upstream.url());
    config.server.max_connections = 2;
    let gw = spawn(config).await;
    let request = b"GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.proxy_addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // The third connection is accepted by the kernel but not served while two are open.
    let mut third = TcpStream::connect(gw.proxy_addr).await.expect("connect");
    third.write_all(request).await.expect("write");
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    gw.shutdown().await;
}
