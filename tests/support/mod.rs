//! Shared test support: a recording upstream on 127.0.0.1:0, gateway and simulator spawning, an
//! HTTP client, raw-socket helpers and a bounded `assert_eventually`.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use modegate::config::{Config, UpstreamTarget};
use modegate::simulator::{Seed, Simulator};
use modegate::{App, RunningApp};

/// What the recording upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    /// Up to the first MiB of the body.
    pub body: Bytes,
    pub body_len: u64,
}

pub type Responder =
    Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>> + Send + Sync>;

/// An upstream that records every request and answers with a responder.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of request body received so far across all requests (updated while streaming).
    pub body_progress: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Answers 200 with a fixed JSON body and an `x-upstream: yes` header.
    pub async fn ok() -> Upstream {
        Upstream::start(Arc::new(|_seen| {
            Box::pin(async {
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header("x-upstream", "yes")
                    .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                    .expect("response")
            })
        }))
        .await
    }

    pub async fn start(responder: Responder) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let progress: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let task = {
            let seen = seen.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        break;
                    };
                    let seen = seen.clone();
                    let progress = progress.clone();
                    let responder = responder.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let seen = seen.clone();
                            let progress = progress.clone();
                            let responder = responder.clone();
                            async move {
                                let (parts, mut body) = req.into_parts();
                                let mut kept = Vec::new();
                                let mut len = 0u64;
                                while let Some(frame) = body.frame().await {
                                    let Ok(frame) = frame else { break };
                                    if let Some(data) = frame.data_ref() {
                                        len += data.len() as u64;
                                        progress.fetch_add(
                                            data.len() as u64,
                                            std::sync::atomic::Ordering::SeqCst,
                                        );
                                        if kept.len() < 1 << 20 {
                                            kept.extend_from_slice(data);
                                        }
                                    }
                                }
                                let record = Seen {
                                    method: parts.method,
                                    uri: parts.uri,
                                    headers: parts.headers,
                                    body: Bytes::from(kept),
                                    body_len: len,
                                };
                                seen.lock().expect("lock").push(record.clone());
                                Ok::<_, Infallible>(responder(record).await)
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Upstream {
            addr,
            seen,
            body_progress: progress,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A config for tests: ephemeral loopback listeners and the given upstream.
pub fn config_for(base_url: &str) -> Config {
    let target = if base_url == "embedded" {
        UpstreamTarget::Embedded { seed: None }
    } else {
        UpstreamTarget::Url(base_url.parse().expect("url"))
    };
    let mut c = Config::with_upstream(target);
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.server.admin_listen = "127.0.0.1:0".parse().expect("addr");
    c.server.shutdown_grace = Duration::from_secs(5);
    with_engine_from_env(c)
}

/// The HTTP/1.1 engine the socket suites run on: `MODEGATE_TEST_HTTP1_ENGINE=native` runs
/// them on the native engine (CI runs them once per engine).
pub fn with_engine_from_env(mut c: Config) -> Config {
    if engine_from_env() == modegate::config::Http1Engine::Native {
        c.server.http1_engine = modegate::config::Http1Engine::Native;
    }
    c
}

/// The HTTP/1.1 engine `MODEGATE_TEST_HTTP1_ENGINE` names (hyper unless `native`), for the
/// listeners and the upstream pool alike.
pub fn engine_from_env() -> modegate::config::Http1Engine {
    if std::env::var("MODEGATE_TEST_HTTP1_ENGINE").as_deref() == Ok("native") {
        modegate::config::Http1Engine::Native
    } else {
        modegate::config::Http1Engine::Hyper
    }
}

/// Parses TOML config text (with ephemeral listeners unless the text sets them).
pub fn config_toml(text: &str) -> Config {
    let text = if text.contains("[server]") {
        text.to_string()
    } else {
        format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{text}")
    };
    with_engine_from_env(
        Config::parse(&text, std::path::Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Logs of in-process gateways (warn and above, or `RUST_LOG`) go through the test harness's
/// output capture: a passing test prints none of them, a failing one shows its own.
pub fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// A gateway in front of `upstream` (a base URL), with `extra` TOML for the other sections.
pub async fn spawn_before(upstream: &str, extra: &str) -> RunningApp {
    spawn(config_toml(&format!(
        "[upstream]\nbase_url = \"{upstream}\"\n{extra}"
    )))
    .await
}

pub async fn spawn(config: Config) -> RunningApp {
    quiet_logs();
    let config = with_engine_from_env(config);
    App::bind(config).await.expect("bind").spawn()
}

/// The demo seed (projects, apps, contacts, credentials).
pub fn demo_seed() -> Seed {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-seed.toml");
    Seed::load(&path).expect("seed")
}

/// A simulator with `seed`, served on 127.0.0.1:0.
pub struct RunningSimulator {
    pub addr: SocketAddr,
    pub simulator: Arc<Simulator>,
    trigger: modegate::server::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSimulator {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}

pub async fn spawn_simulator(seed: Seed) -> RunningSimulator {
    let (simulator, listener) =
        modegate::bind_simulator(seed, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind simulator");
    let addr = listener.local_addr().expect("addr");
    let (trigger, shutdown) = modegate::server::shutdown_channel();
    let task = tokio::spawn(modegate::serve_simulator(
        simulator.clone(),
        listener,
        shutdown,
    ));
    RunningSimulator {
        addr,
        simulator,
        trigger,
        task,
    }
}

/// A plain response for assertions.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the API error shape and returns (status name, message, detail values).
    pub fn api_error(&self) -> (String, String, Vec<String>) {
        let v = self.json();
        let e = &v["error"];
        assert_eq!(
            e["code"].as_u64(),
            Some(u64::from(self.status.as_u16())),
            "{v}"
        );
        let details = e["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|x| x["value"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (
            e["status"].as_str().expect("status").to_string(),
            e["message"].as_str().expect("message").to_string(),
            details,
        )
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub const DEMO_AUTH: &str = "Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ="; // demo-key:demo-secret

/// Sends one request; `body` is sent as is (JSON content type when non-empty).
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header("content-type", "application/json");
    }
    let req = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("response within 20s")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET with the demo credentials.
pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[("authorization", DEMO_AUTH)], "").await
}

/// POST JSON with the demo credentials.
pub async fn post(url: &str, body: &str) -> Reply {
    send(Method::POST, url, &[("authorization", DEMO_AUTH)], body).await
}

/// Writes raw bytes and reads until the peer closes or `wait` passes; returns what was read.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `check` until it is true or `within` passes.
pub async fn assert_eventually<F: FnMut() -> bool>(mut check: F, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not true within {within:?}: {what}");
}

/// Reads the admin /metrics text.
pub async fn metrics(admin: SocketAddr) -> String {
    let r = send(Method::GET, &format!("http://{admin}/metrics"), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8(r.body.to_vec()).expect("utf8")
}

pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    modegate::metrics::sample(text, name, labels).unwrap_or(0.0)
}

/// A simulator with the demo seed and a gateway in front of it, configured by `extra` TOML
/// (sections other than `[upstream]`).
pub struct Stack {
    pub sim: RunningSimulator,
    pub gw: RunningApp,
}

impl Stack {
    pub async fn start(extra: &str) -> Stack {
        Stack::with_seed(demo_seed(), extra).await
    }

    pub async fn with_seed(seed: Seed, extra: &str) -> Stack {
        let sim = spawn_simulator(seed).await;
        let config = config_toml(&format!(
            "[upstream]\nbase_url = \"{}\"\nrequest_timeout_ms = 5000\n{extra}",
            sim.url()
        ));
        let gw = spawn(config).await;
        Stack { sim, gw }
    }

    /// `http://gateway/v1/projects/demo-project{path}`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}/v1/projects/demo-project{path}",
            self.gw.proxy_addr
        )
    }

    pub fn calls(&self, op: modegate::proxy::classify::Operation) -> u64 {
        self.sim.simulator.calls(op)
    }

    pub async fn metrics(&self) -> String {
        metrics(self.gw.admin_addr).await
    }

    pub async fn stop(self) {
        self.gw.shutdown().await;
        self.sim.stop().await;
    }
}

pub const SEND_TO_ALICE: &str = r#"{"app_id":"new-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#;

pub fn send_identified(app: &str) -> String {
    format!(
        r#"{{"app_id":"{app}","recipient":{{"identified_by":{{"channel_identities":[{{"channel":"SMS","identity":"+15550100"}}]}}}},"message":{{"text_message":{{"text":"hi"}}}}}}"#
    )
}

/// Asserts a gateway rejection: 400, API shape, the rule in details and headers.
pub fn assert_rejected(r: &Reply, rule: &str) {
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let (status, message, details) = r.api_error();
    assert_eq!(status, "INVALID_ARGUMENT");
    assert!(!message.is_empty());
    assert_eq!(details, [rule]);
    assert_eq!(r.header("x-modegate-decision"), Some("rejected"));
    assert_eq!(r.header("x-modegate-rule"), Some(rule));
}

/// `modegate_mode_cache_lookups_total{result}`.
pub fn lookups(m: &str, result: &str) -> f64 {
    sample(
        m,
        "modegate_mode_cache_lookups_total",
        &[("result", result)],
    )
}

pub fn decisions(m: &str, rule: &str, action: &str) -> f64 {
    sample(
        m,
        "modegate_policy_decisions_total",
        &[("rule", rule), ("action", action)],
    )
}
pub mod h2raw;
pub mod inproc;
pub mod lenient;
pub mod redis;
pub mod tls;
