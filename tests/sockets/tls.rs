//! The production path through real sockets: https upstreams over ALPN h2 and http/1.1 with a
//! private CA made at test time, trust failures (unknown CA, expired, wrong host name) as 502
//! with `kind="tls"`, a CONNECT egress proxy, and TLS on the proxy listener with certificate
//! rotation.

use crate::support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use modegate::RunningApp;
use support::tls::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];

/// The demo simulator behind TLS presenting `leaf`.
async fn tls_simulator(leaf: &Leaf, alpn: &[&[u8]]) -> TlsUpstream {
    let simulator = modegate::simulator::Simulator::new(demo_seed());
    TlsUpstream::start(server_config(leaf, alpn), simulator.service()).await
}

/// A gateway in front of `upstream`, trusting `ca_file` when given.
async fn gateway(upstream: &str, ca_file: Option<&std::path::Path>, extra: &str) -> RunningApp {
    let ca = ca_file.map_or_else(String::new, |p| format!("ca_file = {:?}\n", p.display()));
    spawn_before(
        upstream,
        &format!("request_timeout_ms = 10000\n{ca}{extra}"),
    )
    .await
}

fn proxied(gw: &RunningApp, path: &str) -> String {
    format!("http://{}/v1/projects/demo-project{path}", gw.proxy_addr)
}

#[tokio::test]
async fn https_upstream_over_h2_serves_passthrough_and_policy_routes() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = tls_simulator(&ca.localhost(), H2_H1).await;
    let gw = gateway(
        &upstream.url(),
        Some(&ca_file),
        "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n",
    )
    .await;

    let r = get(&proxied(&gw, "/apps")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The policy route: a mode lookup, a contact lookup and the rewritten send, all over TLS.
    let r = post(&proxied(&gw, "/messages:send"), SEND_TO_ALICE).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));

    let seen = upstream.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/projects/demo-project/apps",
            "/v1/projects/demo-project/contacts/alice",
            "/v1/projects/demo-project/messages:send"
        ],
        "the app list taught the mode; the rewrite looked the contact up"
    );
    for s in &seen {
        assert_eq!(s.version, Version::HTTP_2, "{s:?}");
        let authority = format!("localhost:{}", upstream.addr.port());
        assert_eq!(s.authority.as_deref(), Some(authority.as_str()), "{s:?}");
        // No stray Host beside :authority.
        assert_eq!(s.host, None, "{s:?}");
    }
    // Forwarded calls report the client's plain-HTTP hop; the gateway's own lookup does not.
    assert_eq!(seen[0].forwarded_proto.as_deref(), Some("http"));
    assert_eq!(seen[2].forwarded_proto.as_deref(), Some("http"));
    assert_eq!(upstream.connections(), 1, "one multiplexed h2 connection");
    gw.shutdown().await;
}

#[tokio::test]
async fn two_hundred_concurrent_requests_share_few_h2_connections() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = tls_simulator(&ca.localhost(), H2_H1).await;
    let gw = gateway(&upstream.url(), Some(&ca_file), "").await;
    // Warm: the first request negotiates h2.
    assert_eq!(get(&proxied(&gw, "/apps")).await.status, StatusCode::OK);
    let url = proxied(&gw, "/apps");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(upstream.seen().len(), 201);
    assert_eq!(
        upstream.connections(),
        1,
        "h2 multiplexes every request over one upstream connection"
    );
    gw.shutdown().await;
}

type StreamedBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An upstream answer: `GET …/download` streams `size` bytes, anything else counts its body.
async fn stream_answer(
    req: Request<Incoming>,
    size: usize,
) -> Result<Response<StreamedBody>, Infallible> {
    let body = if req.uri().path().ends_with("/download") {
        streamed(size, b'x').boxed()
    } else {
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.data_ref().map_or(0, |d| d.len());
        }
        Full::new(Bytes::from(format!("{{\"received\":{n}}}"))).boxed()
    };
    Ok::<_, Infallible>(
        Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .expect("response"),
    )
}

/// A body of `size` bytes sent in 64 KiB chunks by a task, at the pace the reader takes them.
fn streamed(size: usize, byte: u8) -> http_body_util::channel::Channel<Bytes, Infallible> {
    let (mut tx, body) = http_body_util::channel::Channel::new(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![byte; 64 * 1024]);
        for _ in 0..size / chunk.len() {
            if tx.send_data(chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    body
}

const FIFTY_MB: usize = 50 * 1024 * 1024;

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_over_h2_and_http1() {
    for alpn in [H2_H1, H1] {
        let (ca, dir) = (Ca::new("test CA"), TempDir::new());
        let ca_file = dir.write("ca.pem", &ca.pem);
        let upstream = TlsUpstream::start(
            server_config(&ca.localhost(), alpn),
            tower::service_fn(|req| stream_answer(req, FIFTY_MB)),
        )
        .await;
        let gw = gateway(&upstream.url(), Some(&ca_file), "").await;

        let upload = Request::post(proxied(&gw, "/blobs"))
            .header("authorization", DEMO_AUTH)
            .body(streamed(FIFTY_MB, b'y'))
            .expect("request");
        let uploader = Client::builder(TokioExecutor::new()).build_http();
        let r = tokio::time::timeout(Duration::from_secs(60), uploader.request(upload))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, format!("{{\"received\":{FIFTY_MB}}}").as_bytes());

        let download = Request::get(proxied(&gw, "/download"))
            .header("authorization", DEMO_AUTH)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let r = tokio::time::timeout(Duration::from_secs(60), client().request(download))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = r.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            n += frame.expect("frame").data_ref().map_or(0, |d| d.len());
        }
        assert_eq!(n, FIFTY_MB);
        let version = if alpn == H1 {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
        assert!(upstream.seen().iter().all(|s| s.version == version));
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn an_http1_only_upstream_gets_http1_with_its_host() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = tls_simulator(&ca.localhost(), H1).await;
    let gw = gateway(&upstream.url(), Some(&ca_file), "").await;
    // An h2 client in front: the upstream still gets HTTP/1.1.
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::get(proxied(&gw, "/apps"))
        .header("authorization", DEMO_AUTH)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = h2.request(request).await.expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_11);
    let host = format!("localhost:{}", upstream.addr.port());
    assert_eq!(seen[0].host.as_deref(), Some(host.as_str()));
    gw.shutdown().await;
}

/// A request through `gw` fails with 502 `UNAVAILABLE`, tells nothing of TLS, certificates or
/// addresses, and counts one `kind="tls"` error.
async fn assert_tls_refused(gw: &RunningApp, port: u16) {
    let r = get(&proxied(gw, "/apps")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let (status, message, _) = r.api_error();
    assert_eq!(status, "UNAVAILABLE");
    let body = String::from_utf8_lossy(&r.body).to_lowercase();
    for secret in [
        "certificate",
        "tls",
        "localhost",
        "127.0.0.1",
        &port.to_string(),
        "expired",
        "authority",
    ] {
        assert!(!body.contains(secret), "{secret:?} leaked: {body}");
    }
    assert!(!message.is_empty());
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(&m, "modegate_upstream_errors_total", &[("kind", "tls")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "modegate_upstream_errors_total", &[("kind", "connect")]),
        0.0
    );
}

/// What the production client reports for a request to `url` (the log line's reason).
async fn failure_detail(url: &str, ca_file: Option<&std::path::Path>) -> (String, String) {
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"{url}\"\n{}",
        ca_file.map_or_else(String::new, |p| format!("ca_file = {:?}\n", p.display()))
    ));
    let upstream =
        modegate::upstream::HyperUpstream::new(&config.upstream, config.server.http1_engine)
            .expect("client")
            .into_upstream();
    let request = Request::get(format!("{url}/v1/projects/p/apps"))
        .body(modegate::upstream::full(Bytes::new()))
        .expect("request");
    use tower::ServiceExt;
    let failure = upstream.oneshot(request).await.expect_err("refused");
    (failure.kind.as_str().to_string(), failure.detail)
}

#[tokio::test]
async fn trust_failures_are_502_counted_as_tls_and_logged_with_their_reason() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);

    // Unknown CA: the bundled roots do not know the test CA.
    let upstream = tls_simulator(&ca.localhost(), H2_H1).await;
    let gw = gateway(&upstream.url(), None, "").await;
    assert_tls_refused(&gw, upstream.addr.port()).await;
    gw.shutdown().await;
    let (kind, detail) = failure_detail(&upstream.url(), None).await;
    assert_eq!(kind, "tls");
    assert!(
        detail.contains("certificate signed by unknown authority"),
        "{detail}"
    );

    // Expired, though signed by a trusted CA.
    let upstream = tls_simulator(&ca.issue(&["localhost"], true), H2_H1).await;
    let gw = gateway(&upstream.url(), Some(&ca_file), "").await;
    assert_tls_refused(&gw, upstream.addr.port()).await;
    gw.shutdown().await;
    let (kind, detail) = failure_detail(&upstream.url(), Some(&ca_file)).await;
    assert_eq!(kind, "tls");
    assert!(detail.contains("certificate expired"), "{detail}");

    // Valid, trusted, but for another host.
    let upstream = tls_simulator(&ca.issue(&["api.other.example"], false), H2_H1).await;
    let gw = gateway(&upstream.url(), Some(&ca_file), "").await;
    assert_tls_refused(&gw, upstream.addr.port()).await;
    gw.shutdown().await;
    let (kind, detail) = failure_detail(&upstream.url(), Some(&ca_file)).await;
    assert_eq!(kind, "tls");
    assert!(
        detail.contains("not valid for the upstream's host name"),
        "{detail}"
    );

    // A plain-HTTP server where TLS was expected is a TLS failure too, not a reset.
    let plain = Upstream::ok().await;
    let url = format!("https://localhost:{}", plain.addr.port());
    let (kind, detail) = failure_detail(&url, Some(&ca_file)).await;
    assert_eq!(kind, "tls", "{detail}");
}

#[tokio::test]
async fn the_egress_proxy_tunnels_https_and_http_upstreams() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = tls_simulator(&ca.localhost(), H2_H1).await;
    let proxy = ConnectProxy::start(None).await;
    let gw = gateway(
        &upstream.url(),
        Some(&ca_file),
        &format!("proxy_url = \"{}\"\n", proxy.url()),
    )
    .await;
    let r = get(&proxied(&gw, "/apps")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let tunnels = proxy.tunnels();
    assert_eq!(
        tunnels,
        vec![(format!("localhost:{}", upstream.addr.port()), None)],
        "one tunnel to the upstream, no credentials from the file"
    );
    // TLS ran inside the tunnel, end to end with the upstream.
    assert_eq!(upstream.seen()[0].version, Version::HTTP_2);
    gw.shutdown().await;

    // A plain-http upstream through the configured proxy: port 80 is never assumed wrongly.
    let sim = spawn_simulator(demo_seed()).await;
    let gw = spawn_before(&sim.url(), &format!("proxy_url = \"{}\"\n", proxy.url())).await;
    assert_eq!(get(&proxied(&gw, "/apps")).await.status, StatusCode::OK);
    assert_eq!(proxy.tunnels()[1].0, sim.addr.to_string());
    gw.shutdown().await;

    // A proxy that refuses the tunnel: 502 counted as a connect failure.
    let strict = ConnectProxy::start(Some("Basic dTpw")).await;
    let gw = gateway(
        &upstream.url(),
        Some(&ca_file),
        &format!("proxy_url = \"{}\"\n", strict.url()),
    )
    .await;
    let r = get(&proxied(&gw, "/apps")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(&m, "modegate_upstream_errors_total", &[("kind", "connect")]),
        1.0
    );
    gw.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn proxy_credentials_and_no_proxy_come_from_the_environment() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = tls_simulator(&ca.localhost(), H2_H1).await;
    // "u:p" as Basic credentials.
    let proxy = ConnectProxy::start(Some("Basic dTpw")).await;
    let settings = |extra: &str| {
        config_toml(&format!(
            "[upstream]\nbase_url = \"{}\"\nca_file = {:?}\n{extra}",
            upstream.url(),
            ca_file.display()
        ))
        .upstream
    };
    let env_with = |vars: Vec<(&'static str, String)>| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    };
    let send = |client: modegate::upstream::Upstream| {
        let url = format!("{}/v1/projects/demo-project/apps", upstream.url());
        async move {
            use tower::ServiceExt;
            let request = Request::get(url)
                .header("authorization", DEMO_AUTH)
                .body(modegate::upstream::full(Bytes::new()))
                .expect("request");
            client.oneshot(request).await.map(|r| r.status())
        }
    };
    let with_credentials = format!("http://u:p@{}", proxy.addr);
    let client = modegate::upstream::HyperUpstream::with_env(
        &settings(""),
        engine_from_env(),
        &env_with(vec![("HTTPS_PROXY", with_credentials.clone())]),
    )
    .expect("client")
    .into_upstream();
    assert_eq!(send(client).await.ok(), Some(StatusCode::OK));
    assert_eq!(
        proxy.tunnels(),
        vec![(
            format!("localhost:{}", upstream.addr.port()),
            Some("Basic dTpw".to_string())
        )]
    );

    // NO_PROXY naming the upstream host: direct.
    let client = modegate::upstream::HyperUpstream::with_env(
        &settings(""),
        engine_from_env(),
        &env_with(vec![
            ("https_proxy", with_credentials.clone()),
            ("NO_PROXY", "example.org, localhost".to_string()),
        ]),
    )
    .expect("client")
    .into_upstream();
    assert_eq!(send(client).await.ok(), Some(StatusCode::OK));
    assert_eq!(proxy.tunnels().len(), 1, "NO_PROXY bypassed the proxy");

    // proxy_url = "none": the environment is ignored.
    let client = modegate::upstream::HyperUpstream::with_env(
        &settings("proxy_url = \"none\"\n"),
        engine_from_env(),
        &env_with(vec![("HTTPS_PROXY", with_credentials)]),
    )
    .expect("client")
    .into_upstream();
    assert_eq!(send(client).await.ok(), Some(StatusCode::OK));
    assert_eq!(proxy.tunnels().len(), 1);
}

/// One HTTP/1.1 request on an open TLS stream; returns the head and body text.
async fn h1_over(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: {DEMO_AUTH}\r\nx-forwarded-proto: http\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text.into_owned();
            }
        }
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
    }
}

#[tokio::test]
async fn the_listener_serves_tls_to_h1_and_h2_clients_and_rotates_its_certificate() {
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    let first = ca.localhost();
    let (cert_file, _) = first.write(&dir, "listener");
    let upstream = Upstream::ok().await;
    let config_file = dir.write(
        "modegate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntls_cert_file = \"listener.crt\"\ntls_key_file = \"listener.key\"\n[upstream]\nbase_url = \"{}\"\n",
            upstream.url()
        ),
    );
    let config = modegate::Config::load(&config_file).expect("config");
    assert_eq!(
        config.server.tls.as_ref().map(|t| t.cert_file.clone()),
        Some(cert_file.clone())
    );
    let mut app = modegate::App::bind(config).await.expect("bind");
    let reloader = app.enable_reload(config_file.clone());
    let gw = app.spawn();

    // HTTP/1.1 over TLS; the upstream is told the client's hop was https, whatever it claimed.
    let (mut old, presented) = tls_connect(&ca, gw.proxy_addr, H1).await;
    assert_eq!(presented, first.cert_der.to_vec());
    let answer = h1_over(&mut old, "/v1/projects/p/apps").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.seen()[0].headers["x-forwarded-proto"], "https");

    // HTTP/2 over TLS (ALPN h2).
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(&ca, &[]))
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build::<_, Full<Bytes>>(https);
    let url = format!(
        "https://localhost:{}/v1/projects/p/apps",
        gw.proxy_addr.port()
    );
    let request = Request::get(url.as_str())
        .header("authorization", DEMO_AUTH)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = h2.request(request).await.expect("h2 over TLS");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(upstream.seen()[1].headers["x-forwarded-proto"], "https");

    // Plain HTTP on the TLS port is not served.
    let plain = raw_exchange(
        gw.proxy_addr,
        b"GET /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(!plain.contains("200"), "{plain}");

    // Rotation: new files, a reload; new connections get the new certificate and the open
    // connection keeps working.
    let second = ca.localhost();
    second.write(&dir, "listener");
    let report = reloader.reload().expect("reload");
    assert!(report.certificate_reloaded);
    assert!(
        report.needs_restart.is_empty(),
        "{:?}",
        report.needs_restart
    );
    let (_new, presented) = tls_connect(&ca, gw.proxy_addr, H1).await;
    assert_eq!(presented, second.cert_der.to_vec());
    let answer = h1_over(&mut old, "/v1/projects/p/apps").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A broken file on reload (POST /reload) is refused with the reason; the certificate in
    // use stays.
    dir.write("listener.key", "not a key");
    let r = send(
        Method::POST,
        &format!("http://{}/reload", gw.admin_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let (_, message, _) = r.api_error();
    assert!(message.contains("server.tls_key_file"), "{message}");
    assert!(message.contains("is not a PEM file"), "{message}");
    let (_, presented) = tls_connect(&ca, gw.proxy_addr, H1).await;
    assert_eq!(presented, second.cert_der.to_vec());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed_in_time() {
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    let (cert, key) = ca.localhost().write(&dir, "listener");
    let upstream = Upstream::ok().await;
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\ntls_cert_file = {:?}\ntls_key_file = {:?}\n[upstream]\nbase_url = \"{}\"\n",
        cert.display(),
        key.display(),
        upstream.url()
    )))
    .await;
    // Half a ClientHello, then silence.
    let mut stream = tokio::net::TcpStream::connect(gw.proxy_addr)
        .await
        .expect("connect");
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed within the header read timeout"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn check_config_catches_every_tls_and_proxy_mistake() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let leaf = ca.localhost();
    let other = ca.localhost();
    let (cert, key) = leaf.write(&dir, "a");
    let (_, other_key) = other.write(&dir, "b");
    let garbage = dir.write("garbage.pem", "hello");
    let key_only = dir.write("key-only.pem", &leaf.key_pem);
    let parse = |text: &str| {
        modegate::Config::parse(text, &dir.path().join("modegate.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "[upstream]\nca_file = \"missing.pem\"\n".to_string(),
            "upstream.ca_file",
            "cannot read",
        ),
        (
            format!("[upstream]\nca_file = {:?}\n", garbage.display()),
            "upstream.ca_file",
            "is not a PEM file",
        ),
        (
            format!("[upstream]\nca_file = {:?}\n", key_only.display()),
            "upstream.ca_file",
            "holds no certificates",
        ),
        (
            "[upstream]\ntls_roots = \"mozilla\"\n".into(),
            "upstream.tls_roots",
            "not one of",
        ),
        (
            "[upstream]\nproxy_url = \"http://user:hunter2@proxy:3128\"\n".into(),
            "upstream.proxy_url",
            "holds credentials",
        ),
        (
            "[upstream]\nproxy_url = \"https://proxy:443\"\n".into(),
            "upstream.proxy_url",
            "http:// proxy",
        ),
        (
            "[upstream]\nproxy_url = \"http://proxy\"\n".into(),
            "upstream.proxy_url",
            "host and port",
        ),
        (
            format!("[server]\ntls_cert_file = {:?}\n", cert.display()),
            "server.tls_key_file",
            "missing",
        ),
        (
            format!("[server]\ntls_key_file = {:?}\n", key.display()),
            "server.tls_cert_file",
            "missing",
        ),
        (
            format!(
                "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
                cert.display(),
                other_key.display()
            ),
            "server.tls_key_file",
            "does not belong",
        ),
        (
            format!(
                "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
                garbage.display(),
                key.display()
            ),
            "server.tls_cert_file",
            "is not a PEM file",
        ),
        (
            format!(
                "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
                cert.display(),
                cert.display()
            ),
            "server.tls_key_file",
            "holds no private key",
        ),
    ];
    for (text, key, needle) in cases {
        let err = parse(&text);
        assert!(
            err.lines().any(|l| l.contains(key) && l.contains(needle)),
            "{text}: expected {key}: …{needle}…, got:\n{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    // The good ones pass, relative to the config file's directory.
    assert_eq!(
        parse("[server]\ntls_cert_file = \"a.crt\"\ntls_key_file = \"a.key\"\n[upstream]\ntls_roots = \"system\"\nproxy_url = \"none\"\n"),
        ""
    );
}

#[tokio::test]
async fn certificate_files_rotated_on_disk_are_picked_up_without_a_signal() {
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    let first = ca.localhost();
    let (cert, key) = first.write(&dir, "listener");
    let tls = modegate::tls::ServerTls::load(&cert, &key).expect("load");
    let watcher = tokio::spawn(tls.clone().watch(
        cert.clone(),
        key.clone(),
        Duration::from_millis(20),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tls.acceptor();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(stream).await {
                    let _ = s.read(&mut [0u8; 1]).await;
                }
            });
        }
    });
    assert_eq!(tls_connect(&ca, addr, H1).await.1, first.cert_der.to_vec());
    let second = ca.localhost();
    second.write(&dir, "listener");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tls_connect(&ca, addr, H1).await.1 == second.cert_der.to_vec() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not picked up within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    server.abort();
}

#[tokio::test]
async fn the_batch_listener_serves_tls_with_the_same_files_to_its_own_origin() {
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    ca.localhost().write(&dir, "listener");
    let (api, batch) = (Upstream::ok().await, Upstream::ok().await);
    let config_file = dir.write(
        "modegate.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nbatch_listen = \"127.0.0.1:0\"\ntls_cert_file = \"listener.crt\"\ntls_key_file = \"listener.key\"\n[upstream]\nbase_url = \"{}\"\nbatch_base_url = \"{}\"\n",
            api.url(),
            batch.url()
        ),
    );
    let config = modegate::Config::load(&config_file).expect("config");
    let gw = modegate::App::bind(config).await.expect("bind").spawn();
    let (mut stream, _) = tls_connect(&ca, gw.batch_addr.expect("batch listener"), H1).await;
    let answer = h1_over(&mut stream, "/v1/projects/p/messages/01BATCH").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-modegate-decision: forwarded"),
        "{answer}"
    );
    let seen = batch.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/v1/projects/p/messages/01BATCH");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert!(
        api.seen().is_empty(),
        "the Conversation origin saw a batch call"
    );
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(&m, "modegate_requests_total", &[("operation", "batch_get")]),
        1.0
    );
    gw.shutdown().await;
}
