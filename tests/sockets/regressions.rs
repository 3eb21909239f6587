//! Defects found by reading the request path, each pinned by a test that failed before its fix:
//! a failed contact rewrite is a rejection everywhere, a contact rewrite that cannot resolve
//! keeps the request's other edits, lookup answers are classified by what they are, token
//! fetches are observed, and the two retry kinds are bounded to one each.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use support::*;

/// A recording upstream whose answers come from `answer(seen) -> (status, extra header, body)`.
async fn scripted(
    answer: impl Fn(&Seen) -> (u16, Option<(&'static str, &'static str)>, String)
        + Send
        + Sync
        + 'static,
) -> Upstream {
    let answer = Arc::new(answer);
    Upstream::start(Arc::new(move |seen| {
        let (status, header, body) = answer(&seen);
        Box::pin(async move {
            let mut b = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if let Some((k, v)) = header {
                b = b.header(k, v);
            }
            b.body(Full::new(Bytes::from(body))).expect("response")
        })
    }))
    .await
}

/// Captures every log line (JSON) written while the guard lives, on this thread's tasks.
struct LogCapture {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn start() -> LogCapture {
        let lines: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = Sink(lines.clone());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || sink.clone())
            .finish();
        LogCapture {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn decisions(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.lines.lock().expect("lock").clone()).expect("utf8");
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "modegate::decision")
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_contact_rewrite_that_ends_in_400_is_rejected_in_response_log_and_metrics() {
    let logs = LogCapture::start();
    let s =
        Stack::start("[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n").await;
    let body = r#"{"app_id":"new-app","recipient":{"contact_id":"nobody"},"message":{"text_message":{"text":"hi"}}}"#;
    let r = post(&s.url("/messages:send"), body).await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "modegate_requests_total",
            &[("operation", "send_message"), ("decision", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        decisions(&m, "dispatch.send.contact_recipient", "rewrite"),
        0.0,
        "a rewrite that could not be made is not counted as one"
    );
    assert_eq!(
        decisions(&m, "dispatch.send.contact_recipient", "enforce"),
        1.0
    );
    let logged = logs.decisions();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["outcome"], "rejected", "{logged:?}");
    s.stop().await;
}

/// App lookups say CONVERSATION; contact lookups are refused (so the contact rewrite cannot run);
/// sends are accepted and recorded.
fn conversation_app_refused_contacts(
    seen: &Seen,
) -> (u16, Option<(&'static str, &'static str)>, String) {
    let path = seen.uri.path();
    if path.contains("/apps/") {
        (
            200,
            None,
            r#"{"id":"conv-app","processing_mode":"CONVERSATION"}"#.into(),
        )
    } else if path.contains("/contacts/") {
        (
            403,
            None,
            r#"{"error":{"code":403,"message":"no","status":"PERMISSION_DENIED"}}"#.into(),
        )
    } else {
        (
            200,
            None,
            r#"{"message_id":"m1","accepted_time":"2026-01-01T00:00:00Z"}"#.into(),
        )
    }
}

#[tokio::test]
async fn a_contact_whose_lookup_is_refused_is_not_sent_unrewritten() {
    let upstream = scripted(conversation_app_refused_contacts).await;
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"{}\"\n[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n\"send.dispatch_only_metadata\" = \"rewrite\"\n[[policy.app]]\nproject_id = \"p\"\napp_id = \"conv-app\"\nallow_dispatch_only = true\n",
        upstream.url()
    ));
    let gw = spawn(config).await;
    let body = r#"{"app_id":"conv-app","recipient":{"contact_id":"alice"},"processing_strategy":"DISPATCH_ONLY","correlation_id":"c-1","message":{"text_message":{"text":"hi"}}}"#;
    let r = post(
        &format!("http://{}/v1/projects/p/messages:send", gw.proxy_addr),
        body,
    )
    .await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    let (_, message, _) = r.api_error();
    assert!(message.contains("identified_by"), "{message}");
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| !s.uri.path().ends_with("messages:send")),
        "a rewrite that cannot be made is never forwarded with the contact_id"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn app_lookups_answered_429_or_400_are_not_counted_as_5xx() {
    for status in [429u16, 400] {
        let upstream = scripted(move |seen| {
            if seen.uri.path().contains("/apps/") {
                (
                    status,
                    None,
                    r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#
                        .into(),
                )
            } else {
                (200, None, "{}".into())
            }
        })
        .await;
        let gw = spawn_before(&upstream.url(), "").await;
        let r = get(&format!(
            "http://{}/v1/projects/p/messages?app_id=a1&contact_id=c1",
            gw.proxy_addr
        ))
        .await;
        assert_eq!(r.status, StatusCode::OK, "unknown_mode = forward");
        let m = metrics(gw.admin_addr).await;
        assert_eq!(
            sample(
                &m,
                "modegate_upstream_errors_total",
                &[("kind", "status_5xx")]
            ),
            0.0,
            "lookup answered {status}"
        );
        assert_eq!(lookups(&m, "error"), 1.0);
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_contact_lookup_answered_429_refuses_the_send_with_503_and_retry_after() {
    let upstream = scripted(|seen| {
        let path = seen.uri.path();
        if path.contains("/apps/") {
            (
                200,
                None,
                r#"{"id":"d-app","processing_mode":"DISPATCH"}"#.into(),
            )
        } else if path.contains("/contacts/") {
            (
                429,
                None,
                r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#
                    .into(),
            )
        } else {
            (200, None, "{}".into())
        }
    })
    .await;
    let gw = spawn_before(
        &upstream.url(),
        "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n",
    )
    .await;
    let body = r#"{"app_id":"d-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#;
    let r = post(
        &format!("http://{}/v1/projects/p/messages:send", gw.proxy_addr),
        body,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.api_error().0, "UNAVAILABLE");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-modegate-decision"), Some("rejected"));
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            "modegate_upstream_errors_total",
            &[("kind", "status_5xx")]
        ),
        0.0
    );
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| !s.uri.path().ends_with(":send")),
        "nothing is sent when the recipient cannot be resolved"
    );
    gw.shutdown().await;
}

static NEXT_VAR: AtomicUsize = AtomicUsize::new(0);

fn inject_section(token_url: &str) -> String {
    let n = NEXT_VAR.fetch_add(1, Ordering::SeqCst);
    let (id_var, secret_var) = (
        format!("MODEGATE_REGRESSION_KEY_ID_{n}"),
        format!("MODEGATE_REGRESSION_KEY_SECRET_{n}"),
    );
    std::env::set_var(&id_var, "demo-key");
    std::env::set_var(&secret_var, "demo-secret");
    format!("[auth]\nmode = \"inject\"\nkey_id_env = \"{id_var}\"\nkey_secret_env = \"{secret_var}\"\ntoken_url = \"{token_url}\"\n")
}

#[tokio::test]
async fn token_fetches_in_inject_mode_are_observed_as_upstream_calls() {
    let sim = spawn_simulator(demo_seed()).await;
    let gw = spawn(config_toml(&format!(
        "[upstream]\nbase_url = \"{url}\"\n{auth}",
        url = sim.url(),
        auth = inject_section(&format!("{}/oauth2/token", sim.url())),
    )))
    .await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/demo-project/apps", gw.proxy_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            "modegate_upstream_duration_seconds_count",
            &[("operation", "oauth_token")]
        ),
        1.0,
        "{m}"
    );
    gw.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn the_expired_token_retry_and_the_store_retry_happen_at_most_once_each() {
    // Message reads answer, in turn: expired token, 404, expired token, 200.
    let reads = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let reads = reads.clone();
        scripted(move |seen| {
            let path = seen.uri.path();
            if path == "/oauth2/token" {
                return (
                    200,
                    None,
                    r#"{"access_token":"t","expires_in":3600,"scope":"","token_type":"bearer"}"#
                        .into(),
                );
            }
            if path.contains("/apps/") {
                return (
                    200,
                    None,
                    r#"{"id":"d-app","processing_mode":"DISPATCH"}"#.into(),
                );
            }
            match reads.fetch_add(1, Ordering::SeqCst) {
                0 | 2 => (
                    401,
                    Some((
                        "www-authenticate",
                        "Bearer error=\"invalid_token\", error_description=\"token expired\"",
                    )),
                    r#"{"error":{"code":401,"message":"expired","status":"UNAUTHENTICATED"}}"#
                        .into(),
                ),
                1 => (
                    404,
                    None,
                    r#"{"error":{"code":404,"message":"no","status":"NOT_FOUND"}}"#.into(),
                ),
                _ => (200, None, r#"{"id":"m1"}"#.into()),
            }
        })
        .await
    };
    let gw = spawn(config_toml(&format!(
        "[upstream]\nbase_url = \"{url}\"\n{auth}[[policy.app]]\nproject_id = \"p\"\napp_id = \"d-app\"\nprocessing_mode = \"DISPATCH\"\n",
        url = upstream.url(),
        auth = inject_section(&format!("{}/oauth2/token", upstream.url())),
    )))
    .await;
    let r = send(
        Method::GET,
        &format!(
            "http://{}/v1/projects/p/messages/m1?messages_source=CONVERSATION_SOURCE",
            gw.proxy_addr
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(
        reads.load(Ordering::SeqCst),
        3,
        "one token retry and one store retry, never a retry of a retry"
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    gw.shutdown().await;
}
