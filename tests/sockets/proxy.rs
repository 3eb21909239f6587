//! End-to-end forwarding through real sockets: exact round trips, streaming, header hygiene,
//! upstream failures, and the no-open-proxy guarantees.

use crate::support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const OTHER_PATH: &str = "/v1/projects/p1/somewhere/new?x=1&y=two";

#[tokio::test]
async fn forwarded_request_and_response_round_trip_exactly() {
    let upstream = Upstream::start(Arc::new(|_| {
        Box::pin(async {
            Response::builder()
                .status(201)
                .header("content-type", "application/vnd.test")
                .header("x-custom", "a")
                .header("x-custom", "b")
                .header("keep-alive", "timeout=5")
                .body(Full::new(Bytes::from_static(b"\x00binary\xffbody")))
                .expect("response")
        })
    }))
    .await;
    let gw = spawn(config_for(&upstream.url())).await;
    let reply = send(
        Method::PUT,
        &format!("http://{}{OTHER_PATH}", gw.proxy_addr),
        &[
            ("authorization", "Bearer secret-token"),
            ("x-client", "kept"),
            ("connection", "x-hop"),
            ("x-hop", "dropped"),
            ("content-type", "text/plain"),
        ],
        "raw body bytes",
    )
    .await;

    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(&reply.body[..], b"\x00binary\xffbody");
    assert_eq!(reply.header("content-type"), Some("application/vnd.test"));
    let custom: Vec<_> = reply.headers.get_all("x-custom").iter().collect();
    assert_eq!(custom, ["a", "b"]);
    assert_eq!(
        reply.header("keep-alive"),
        None,
        "hop-by-hop response header leaked"
    );
    assert_eq!(reply.header("x-modegate-decision"), Some("forwarded"));
    assert!(reply.header("x-modegate-rule").is_none());
    let request_id = reply
        .header("x-request-id")
        .expect("request id")
        .to_string();
    assert_eq!(request_id.len(), 32);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, Method::PUT);
    assert_eq!(s.uri.to_string(), OTHER_PATH);
    assert_eq!(&s.body[..], b"raw body bytes");
    assert_eq!(s.headers["authorization"], "Bearer secret-token");
    assert_eq!(s.headers["x-client"], "kept");
    assert_eq!(s.headers["content-type"], "text/plain");
    assert_eq!(s.headers["host"], upstream.addr.to_string());
    assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-request-id"], request_id.as_str());
    assert!(
        !s.headers.contains_key("x-hop"),
        "Connection-listed header forwarded"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn caller_request_id_is_kept_and_junk_is_replaced() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let url = format!("http://{}/v1/projects/p/apps", gw.proxy_addr);
    let r = send(Method::GET, &url, &[("x-request-id", "caller-id-1")], "").await;
    assert_eq!(r.header("x-request-id"), Some("caller-id-1"));
    let r = send(
        Method::GET,
        &url,
        &[("x-request-id", "has spaces in it")],
        "",
    )
    .await;
    assert_ne!(r.header("x-request-id"), Some("has spaces in it"));
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-request-id"], "caller-id-1");
    assert_eq!(
        seen[1].headers["x-request-id"],
        r.header("x-request-id").expect("id")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn fifty_megabyte_request_body_streams_through() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/v1/projects/p/bulk/upload",
            gw.proxy_addr
        ))
        .body(body)
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::channel::Channel<Bytes, std::convert::Infallible>>();
    let response = tokio::spawn(async move { client.request(req).await });

    const CHUNK: usize = 1 << 20;
    const TOTAL: usize = 50;
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    tx.send_data(chunk.clone()).await.expect("send");
    // The upstream must see bytes while 49 MB are still unsent: nothing buffers the body.
    let progress = upstream.body_progress.clone();
    assert_eventually(
        || progress.load(Ordering::SeqCst) > 0,
        Duration::from_secs(10),
        "upstream received the first chunk before the client finished",
    )
    .await;
    for _ in 1..TOTAL {
        tx.send_data(chunk.clone()).await.expect("send");
    }
    drop(tx);
    let resp = response.await.expect("join").expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.seen()[0].body_len, (CHUNK * TOTAL) as u64);
    gw.shutdown().await;
}

#[tokio::test]
async fn large_response_body_streams_to_the_client() {
    // A dedicated server, since the recording upstream answers with whole bodies.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let service = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
            let mut release = release_rx.clone();
            async move {
                let (mut tx, body) =
                    http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(2);
                tokio::spawn(async move {
                    let _ = tx.send_data(Bytes::from(vec![1u8; 1 << 20])).await;
                    let _ = release.wait_for(|r| *r).await;
                    for _ in 1..50 {
                        if tx.send_data(Bytes::from(vec![1u8; 1 << 20])).await.is_err() {
                            break;
                        }
                    }
                });
                Ok::<_, std::convert::Infallible>(Response::new(body))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });

    let gw = spawn(config_for(&format!("http://{addr}"))).await;
    let resp = client()
        .request(
            Request::get(format!(
                "http://{}/v1/projects/p/big/download",
                gw.proxy_addr
            ))
            .body(Full::new(Bytes::new()))
            .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // The first megabyte arrives while the upstream is still holding back the other 49.
    let mut received = 0usize;
    while received < 1 << 20 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("first megabyte arrives before the upstream finished")
            .expect("frame")
            .expect("data");
        received += frame.data_ref().map_or(0, |d| d.len());
    }
    release_tx.send(true).expect("release");
    while let Some(frame) = body.frame().await {
        received += frame.expect("frame").data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, 50 << 20);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_down_is_502_in_the_api_shape() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let gw = spawn(config_for(&format!("http://{closed}"))).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/p/apps", gw.proxy_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let (status, message, _) = r.api_error();
    assert_eq!(status, "UNAVAILABLE");
    assert!(
        !message.contains("127.0.0.1"),
        "internal address leaked: {message}"
    );
    assert!(!message.contains(&closed.port().to_string()), "{message}");
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    assert!(r.header("x-request-id").is_some());
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(&m, "modegate_upstream_errors_total", &[("kind", "connect")]),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "modegate_requests_total",
            &[("operation", "list_apps"), ("decision", "error")]
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_504_in_the_api_shape() {
    let upstream = Upstream::start(Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(Full::new(Bytes::new()))
        })
    }))
    .await;
    let mut config = config_for(&upstream.url());
    config.upstream.request_timeout = Duration::from_millis(200);
    let gw = spawn(config).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/p/apps", gw.proxy_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.api_error().0, "DEADLINE_EXCEEDED");
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(&m, "modegate_upstream_errors_total", &[("kind", "timeout")]),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_5xx_passes_through_and_is_counted() {
    let upstream = Upstream::start(Arc::new(|_| {
        Box::pin(async {
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::from_static(b"{\"error\":{}}")))
                .expect("response")
        })
    }))
    .await;
    let gw = spawn(config_for(&upstream.url())).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/p/apps", gw.proxy_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(&r.body[..], b"{\"error\":{}}");
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            "modegate_upstream_errors_total",
            &[("kind", "status_5xx")]
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn connect_is_refused() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let out = raw_exchange(
        gw.proxy_addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(out.contains("\"status\":\"UNIMPLEMENTED\""), "{out}");
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn absolute_form_to_a_foreign_host_is_refused() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let out = raw_exchange(
        gw.proxy_addr,
        b"GET http://example.com/v1/projects/p/apps HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("INVALID_ARGUMENT"), "{out}");
    assert!(
        upstream.seen().is_empty(),
        "foreign target reached the upstream"
    );

    // Absolute-form naming the upstream itself is an ordinary request.
    let request = format!(
        "GET http://{}/v1/projects/p/apps HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        upstream.addr, upstream.addr
    );
    let out = raw_exchange(gw.proxy_addr, request.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(upstream.seen()[0].uri.to_string(), "/v1/projects/p/apps");
    gw.shutdown().await;
}

#[tokio::test]
async fn host_header_never_chooses_the_upstream() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/p/apps", gw.proxy_addr),
        &[("host", "evil.example:80")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        upstream.seen()[0].headers["host"],
        upstream.addr.to_string()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let smuggled = b"POST /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/projects/p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = raw_exchange(gw.proxy_addr, smuggled, Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(out.contains("INVALID_ARGUMENT"), "{out}");
    assert_eq!(
        out.matches("HTTP/1.1").count(),
        1,
        "a second response was sent: {out}"
    );
    assert!(
        upstream.seen().is_empty(),
        "smuggled request reached the upstream"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(
            Request::get(format!("http://{}/v1/projects/p/apps", gw.proxy_addr))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("h2c response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-modegate-decision"], "forwarded");
    assert_eq!(upstream.seen()[0].uri.path(), "/v1/projects/p/apps");
    gw.shutdown().await;
}

#[tokio::test]
async fn token_requests_go_to_the_configured_token_url() {
    let api = Upstream::ok().await;
    let auth = Upstream::ok().await;
    let mut config = config_for(&api.url());
    config.auth.token_url = Some(format!("{}/oauth2/token", auth.url()).parse().expect("url"));
    let gw = spawn(config).await;
    let r = send(
        Method::POST,
        &format!("http://{}/oauth2/token", gw.proxy_addr),
        &[
            ("authorization", "Basic a2V5OnNlY3JldA=="),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(api.seen().is_empty());
    let seen = auth.seen();
    assert_eq!(seen[0].uri.path(), "/oauth2/token");
    assert_eq!(&seen[0].body[..], b"grant_type=client_credentials");
    assert_eq!(seen[0].headers["authorization"], "Basic a2V5OnNlY3JldA==");
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_are_counted_by_operation_and_decision() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    for path in ["/v1/projects/p/apps", "/v1/projects/p/apps", "/elsewhere"] {
        send(
            Method::GET,
            &format!("http://{}{path}", gw.proxy_addr),
            &[],
            "",
        )
        .await;
    }
    let m = metrics(gw.admin_addr).await;
    let count = |op| {
        sample(
            &m,
            "modegate_requests_total",
            &[("operation", op), ("decision", "forwarded")],
        )
    };
    assert_eq!(count("list_apps"), 2.0);
    assert_eq!(count("other"), 1.0);
    assert_eq!(
        sample(
            &m,
            "modegate_request_duration_seconds_count",
            &[("operation", "list_apps")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "modegate_upstream_duration_seconds_count",
            &[("operation", "list_apps")]
        ),
        2.0
    );
    assert!(
        !m.contains("/v1/projects"),
        "raw paths must never be labels"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn w3c_trace_context_passes_through_untouched() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/p/apps", gw.proxy_addr),
        &[("traceparent", traceparent), ("tracestate", tracestate)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["traceparent"], traceparent);
    assert_eq!(seen.headers["tracestate"], tracestate);
    gw.shutdown().await;
}
