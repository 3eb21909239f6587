//! The callback listener over real sockets: signed callbacks verified and re-signed for the
//! bytes forwarded; forged, stale and replayed ones refused 401 before the target; a failed
//! delivery frees its nonce; replays refused across two gateways sharing a real Redis; unsigned
//! webhooks and CONVERSATION callbacks byte for byte; pseudo ids only in DISPATCH callbacks'
//! empty ids; 502 / 504 / 404 / 405 / 413 in the API error shape.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use modegate::callbacks::signature::{self, Secrets};
use modegate::pseudo_ids::{PseudoIds, PseudoKind};
use modegate::{App, Deps, RunningApp};
use support::redis::RedisServer;
use support::*;

const SECRET: &str = "whsec-test-1";
const ID_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// A CONVERSATION delivery report with deliberately odd spacing: byte for byte or not at all.
const CONVERSATION_DR: &str = "{\"app_id\":\"01HAPP00000000000000000000\", \"project_id\":\"p1\",\"message_delivery_report\":{\"message_id\":\"01HMSG\",\"conversation_id\":\"01HCONV\",\"contact_id\":\"01HCONTACT\",\"channel_identity\":{\"channel\":\"SMS\",\"identity\":\"46700000001\",\"app_id\":\"01HAPP00000000000000000000\"},\"status\":\"DELIVERED\",\"processing_mode\":\"CONVERSATION\"},\"message_metadata\":\"caf\\u00e9\"}";

fn dispatch_mo(identity: &str) -> String {
    format!(
        "{{\"app_id\":\"01HAPP00000000000000000000\",\"project_id\":\"p1\",\"message\":{{\"id\":\"01HMSG\",\"direction\":\"TO_APP\",\"contact_message\":{{\"text_message\":{{\"text\":\"hi\"}}}},\"channel_identity\":{{\"channel\":\"SMS\",\"identity\":\"{identity}\",\"app_id\":\"01HAPP00000000000000000000\"}},\"conversation_id\":\"\",\"contact_id\":\"\",\"processing_mode\":\"DISPATCH\"}},\"message_metadata\":\"\"}}"
    )
}

/// A unique environment variable holding `value`.
fn env_var(value: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "MODEGATE_CB_TEST_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    std::env::set_var(&name, value);
    name
}

/// A webhook section for `target`, with `extra` keys.
fn webhook(target: &str, extra: &str) -> String {
    format!(
        "[callbacks]\nlisten = \"127.0.0.1:0\"\nid_key_env = \"{}\"\n[[callbacks.webhook]]\npath = \"/sinch/events\"\ntarget = \"{target}/consumer\"\n{extra}\n",
        env_var(ID_KEY)
    )
}

fn signed(secret: &str) -> String {
    format!("secret_env = \"{}\"", env_var(secret))
}

async fn gateway(callbacks: &str) -> RunningApp {
    spawn(config_toml(&format!(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n{callbacks}"
    )))
    .await
}

fn url(gw: &RunningApp) -> String {
    format!(
        "http://{}/sinch/events",
        gw.callbacks_addr.expect("callback listener")
    )
}

/// Headers of a callback signed now with `secret` (or with the given nonce and timestamp).
fn sign_with(secret: &str, body: &str, nonce: &str, timestamp: i64) -> Vec<(String, String)> {
    let ts = timestamp.to_string();
    vec![
        (
            "x-sinch-webhook-signature".into(),
            signature::sign(secret.as_bytes(), body.as_bytes(), nonce, &ts),
        ),
        ("x-sinch-webhook-signature-nonce".into(), nonce.into()),
        ("x-sinch-webhook-signature-timestamp".into(), ts),
        (
            "x-sinch-webhook-signature-algorithm".into(),
            "HmacSHA256".into(),
        ),
    ]
}

async fn deliver(gw: &RunningApp, headers: &[(String, String)], body: &str) -> Reply {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    send(Method::POST, &url(gw), &h, body).await
}

fn outcome(gw: &RunningApp, outcome: &str) -> f64 {
    sample(
        &gw.metrics.render(),
        "modegate_callbacks_total",
        &[("outcome", outcome)],
    )
}

fn assert_unauthenticated(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.api_error().0, "UNAUTHENTICATED");
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Whether what the target received verifies under `secret`.
fn verifies(seen: &Seen, secret: &str) -> bool {
    let secrets = Secrets::parse(secret).expect("secret");
    secrets
        .check(&seen.headers, &seen.body, signature::unix_now(), 300)
        .is_ok()
}

#[tokio::test]
async fn a_signed_callback_is_verified_and_forwarded_re_signed_byte_for_byte() {
    let target = Upstream::ok().await;
    let gw = gateway(&webhook(&target.url(), &signed(SECRET))).await;
    let nonce = "01FJA8B4A7BM43YGWSG9GBV067";
    let r = deliver(
        &gw,
        &sign_with(SECRET, CONVERSATION_DR, nonce, signature::unix_now()),
        CONVERSATION_DR,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"{\"ok\":true}", "the target's answer");
    let seen = target.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/consumer");
    assert_eq!(&seen[0].body[..], CONVERSATION_DR.as_bytes());
    assert!(
        verifies(&seen[0], SECRET),
        "re-signed for the bytes forwarded"
    );
    assert_ne!(header(&seen[0], "x-sinch-webhook-signature-nonce"), nonce);
    assert_eq!(outcome(&gw, "forwarded"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn forged_stale_and_unsigned_callbacks_never_reach_the_target() {
    let target = Upstream::ok().await;
    let gw = gateway(&webhook(&target.url(), &signed(SECRET))).await;
    let now = signature::unix_now();
    let forged = sign_with("not-the-secret", CONVERSATION_DR, "n-forged", now);
    assert_unauthenticated(&deliver(&gw, &forged, CONVERSATION_DR).await);
    let mut tampered = sign_with(SECRET, CONVERSATION_DR, "n-tampered", now);
    tampered[0].1 = signature::sign(SECRET.as_bytes(), b"{}", "n-tampered", &now.to_string());
    assert_unauthenticated(&deliver(&gw, &tampered, CONVERSATION_DR).await);
    assert_unauthenticated(&deliver(&gw, &[], CONVERSATION_DR).await);
    let stale = sign_with(SECRET, CONVERSATION_DR, "n-stale", now - 301);
    assert_unauthenticated(&deliver(&gw, &stale, CONVERSATION_DR).await);
    let future = sign_with(SECRET, CONVERSATION_DR, "n-future", now + 301);
    assert_unauthenticated(&deliver(&gw, &future, CONVERSATION_DR).await);
    assert!(target.seen().is_empty());
    assert_eq!(outcome(&gw, "bad_signature"), 3.0);
    assert_eq!(outcome(&gw, "stale"), 2.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_replayed_nonce_is_refused_but_a_failed_delivery_frees_it() {
    let answers = Arc::new(AtomicUsize::new(0));
    let target = {
        let answers = answers.clone();
        Upstream::start(Arc::new(move |_| {
            // The first delivery fails; later ones succeed.
            let status = if answers.fetch_add(1, Ordering::SeqCst) == 0 {
                503
            } else {
                200
            };
            Box::pin(async move {
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .expect("response")
            })
        }))
        .await
    };
    let gw = gateway(&webhook(&target.url(), &signed(SECRET))).await;
    let headers = sign_with(SECRET, CONVERSATION_DR, "n-retry", signature::unix_now());
    let first = deliver(&gw, &headers, CONVERSATION_DR).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the target's answer"
    );
    let retry = deliver(&gw, &headers, CONVERSATION_DR).await;
    assert_eq!(retry.status, StatusCode::OK, "Sinch's retry gets through");
    assert_unauthenticated(&deliver(&gw, &headers, CONVERSATION_DR).await);
    assert_eq!(target.seen().len(), 2);
    assert_eq!(outcome(&gw, "target_error"), 1.0);
    assert_eq!(outcome(&gw, "replayed"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn unsigned_webhooks_pass_byte_for_byte() {
    let target = Upstream::ok().await;
    let gw = gateway(&webhook(&target.url(), "")).await;
    let headers = vec![("x-custom".to_string(), "kept".to_string())];
    for body in [CONVERSATION_DR.to_string(), dispatch_mo("46700000001")] {
        let r = deliver(&gw, &headers, &body).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let seen = target.seen();
    assert_eq!(&seen[0].body[..], CONVERSATION_DR.as_bytes());
    assert_eq!(&seen[1].body[..], dispatch_mo("46700000001").as_bytes());
    assert_eq!(header(&seen[0], "x-custom"), "kept");
    assert!(seen[0].headers.get("x-sinch-webhook-signature").is_none());
    assert_eq!(outcome(&gw, "unsigned"), 2.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn pseudo_ids_fill_only_empty_ids_of_dispatch_callbacks_and_are_signed() {
    let target = Upstream::ok().await;
    let gw = gateway(&webhook(
        &target.url(),
        &format!("{}\nfill_ids = \"pseudo\"", signed(SECRET)),
    ))
    .await;
    let now = signature::unix_now();
    let mo = dispatch_mo("46700000001");
    for (nonce, body) in [("n1", mo.as_str()), ("n2", CONVERSATION_DR)] {
        let r = deliver(&gw, &sign_with(SECRET, body, nonce, now), body).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let again = deliver(&gw, &sign_with(SECRET, &mo, "n3", now), &mo).await;
    assert_eq!(again.status, StatusCode::OK);
    let seen = target.seen();
    let filled: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("json");
    let contact = filled["message"]["contact_id"]
        .as_str()
        .expect("contact_id");
    let conversation = filled["message"]["conversation_id"]
        .as_str()
        .expect("conversation_id");
    let ids = PseudoIds::from_keys(ID_KEY).expect("keys");
    let (kind, who) = ids
        .open(contact)
        .expect("a pseudo id the gateway can resolve");
    assert_eq!(kind, PseudoKind::Contact);
    assert_eq!(
        (
            who.project.as_str(),
            who.app.as_str(),
            who.identity.as_str()
        ),
        ("p1", "01HAPP00000000000000000000", "46700000001")
    );
    assert_eq!(
        ids.open(conversation).expect("opens").0,
        PseudoKind::Conversation
    );
    assert!(verifies(&seen[0], SECRET), "signed for the filled bytes");
    assert_eq!(&seen[1].body[..], CONVERSATION_DR.as_bytes(), "untouched");
    assert_eq!(seen[2].body, seen[0].body, "deterministic");
    assert_eq!(outcome(&gw, "filled"), 2.0);
    assert_eq!(outcome(&gw, "forwarded"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn target_down_is_502_and_slow_is_504() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let gw = gateway(&webhook(&closed, &signed(SECRET))).await;
    let headers = sign_with(SECRET, CONVERSATION_DR, "n-down", signature::unix_now());
    let r = deliver(&gw, &headers, CONVERSATION_DR).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.api_error().0, "UNAVAILABLE");
    gw.shutdown().await;

    let slow = Upstream::start(Arc::new(|_| Box::pin(std::future::pending()))).await;
    let gw = gateway(&webhook(&slow.url(), "timeout_ms = 200")).await;
    let r = deliver(&gw, &[], CONVERSATION_DR).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.api_error().0, "DEADLINE_EXCEEDED");
    assert_eq!(outcome(&gw, "target_error"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn other_paths_methods_and_large_bodies_get_the_api_error_shape() {
    let target = Upstream::ok().await;
    let gw = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_policy_body_bytes = 1024\n{}",
        webhook(&target.url(), &signed(SECRET))
    ))
    .await;
    let base = format!("http://{}", gw.callbacks_addr.expect("listener"));
    let r = send(Method::POST, &format!("{base}/elsewhere"), &[], "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.api_error().0, "NOT_FOUND");
    let r = send(Method::GET, &url(&gw), &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("POST"));
    r.api_error();
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(2048));
    let r = deliver(
        &gw,
        &sign_with(SECRET, &big, "n-big", signature::unix_now()),
        &big,
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    r.api_error();
    assert!(target.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn callbacks_over_h2c_are_served_too() {
    let target = Upstream::ok().await;
    let gw = gateway(&webhook(&target.url(), "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(url(&gw))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CONVERSATION_DR.as_bytes())))
        .expect("request");
    let response = client.request(request).await.expect("response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(&target.seen()[0].body[..], CONVERSATION_DR.as_bytes());
    gw.shutdown().await;
}

async fn replica(target: &str, secret_env: &str, redis: &RedisServer) -> RunningApp {
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n{}",
        webhook(target, &format!("secret_env = \"{secret_env}\""))
    ));
    let deps = Deps {
        shared_cache: Some(
            modegate::shared_cache::RedisTarget::parse(&redis.url()).expect("redis url"),
        ),
        ..Deps::default()
    };
    App::bind_with(config, deps).await.expect("bind").spawn()
}

#[tokio::test]
async fn a_replay_is_refused_by_another_replica_sharing_redis() {
    let redis = RedisServer::start(None).await;
    let target = Upstream::ok().await;
    let secret_env = env_var(SECRET);
    let a = replica(&target.url(), &secret_env, &redis).await;
    let b = replica(&target.url(), &secret_env, &redis).await;
    let headers = sign_with(SECRET, CONVERSATION_DR, "n-shared", signature::unix_now());
    assert_eq!(
        deliver(&a, &headers, CONVERSATION_DR).await.status,
        StatusCode::OK
    );
    assert_unauthenticated(&deliver(&b, &headers, CONVERSATION_DR).await);
    assert_unauthenticated(&deliver(&a, &headers, CONVERSATION_DR).await);
    assert_eq!(target.seen().len(), 1);
    assert_eq!(outcome(&b, "replayed"), 1.0);

    // Redis gone: no replica can tell what the others saw, so callbacks wait (503, retried).
    let mut redis = redis;
    redis.kill();
    let fresh = sign_with(
        SECRET,
        CONVERSATION_DR,
        "n-during-outage",
        signature::unix_now(),
    );
    let r = deliver(&b, &fresh, CONVERSATION_DR).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header("retry-after").is_some());
    assert_eq!(target.seen().len(), 1);
    redis.restart().await;
    let mut delivered = false;
    for _ in 0..100 {
        if deliver(&b, &fresh, CONVERSATION_DR).await.status == StatusCode::OK {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "delivered once Redis is back");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn the_dotnet_test_vector_verifies() {
    let body = r#"{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z","project_id":"e2df3a34-a71b-4448-9db5-a8d2baad28e4","contact_create_notification":{"contact":{"id":"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":[{"channel":"SMS","identity":"48123456789","app_id":""}],"display_name":"New Test Contact","email":"new.contact@email.com","external_id":"","metadata":"","language":"EN_US"}},"message_metadata":""}"#;
    assert_eq!(
        signature::sign(
            b"foo_secret1234",
            body.as_bytes(),
            "01FJA8B4A7BM43YGWSG9GBV067",
            "1634579353"
        ),
        "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="
    );
}

#[tokio::test]
async fn a_stalled_callback_body_is_abandoned_with_408() {
    let target = Upstream::ok().await;
    let gw = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nbody_idle_timeout_secs = 1\n{}",
        webhook(&target.url(), &signed(SECRET))
    ))
    .await;
    let answer = raw_exchange(
        gw.callbacks_addr.expect("listener"),
        b"POST /sinch/events HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n{\"a\":",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(target.seen().is_empty());
    assert_eq!(
        sample(
            &gw.metrics.render(),
            "modegate_body_idle_timeouts_total",
            &[("direction", "request")]
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_callback_listener_serves_tls_with_the_server_certificate() {
    use support::tls::{tls_connect, Ca, TempDir};
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    let (cert, key) = ca.localhost().write(&dir, "listener");
    let target = Upstream::ok().await;
    let gw = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n{}",
        cert.display(),
        key.display(),
        webhook(&target.url(), &signed(SECRET))
    ))
    .await;
    let (stream, _) = tls_connect(&ca, gw.callbacks_addr.expect("listener"), &[b"http/1.1"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut request = http::Request::post("/sinch/events")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(CONVERSATION_DR.as_bytes())))
        .expect("request");
    for (k, v) in sign_with(SECRET, CONVERSATION_DR, "n-tls", signature::unix_now()) {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(verifies(&target.seen()[0], SECRET));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_nonce_in_flight_is_reserved() {
    let release = Arc::new(tokio::sync::Notify::new());
    let target = {
        let release = release.clone();
        Upstream::start(Arc::new(move |_| {
            let release = release.clone();
            Box::pin(async move {
                release.notified().await;
                Response::builder()
                    .status(200)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .expect("response")
            })
        }))
        .await
    };
    let gw = gateway(&webhook(&target.url(), &signed(SECRET))).await;
    let headers = sign_with(
        SECRET,
        CONVERSATION_DR,
        "n-in-flight",
        signature::unix_now(),
    );
    let first = {
        let (url, headers) = (url(&gw), headers.clone());
        tokio::spawn(async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            send(Method::POST, &url, &h, CONVERSATION_DR).await
        })
    };
    assert_eventually(
        || target.seen().len() == 1,
        Duration::from_secs(10),
        "the first delivery reached the target",
    )
    .await;
    assert_unauthenticated(&deliver(&gw, &headers, CONVERSATION_DR).await);
    release.notify_one();
    assert_eq!(first.await.expect("first").status, StatusCode::OK);
    assert_eq!(target.seen().len(), 1);
    gw.shutdown().await;
}
