//! `[auth] mode = "inject"`: the gateway's own OAuth2 tokens on every upstream request,
//! refresh and retry on expiry, inbound admission, and no secret in any output.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use http::{Method, StatusCode};
use modegate::proxy::classify::Operation as Op;
use support::*;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Sets the key variables under names unique to this test (tests run in parallel) and returns
/// the `[auth]` section naming them.
fn auth_section(key_id: &str, key_secret: &str, inbound: Option<&str>) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let id_var = format!("MODEGATE_TEST_KEY_ID_{n}");
    let secret_var = format!("MODEGATE_TEST_KEY_SECRET_{n}");
    std::env::set_var(&id_var, key_id);
    std::env::set_var(&secret_var, key_secret);
    let mut section = format!(
        "[auth]\nmode = \"inject\"\nkey_id_env = \"{id_var}\"\nkey_secret_env = \"{secret_var}\"\n"
    );
    if let Some(secret) = inbound {
        let inbound_var = format!("MODEGATE_TEST_INBOUND_{n}");
        std::env::set_var(&inbound_var, secret);
        section.push_str(&format!("inbound_token_env = \"{inbound_var}\"\n"));
    }
    section
}

async fn inject_stack(inbound: Option<&str>) -> Stack {
    let sim = spawn_simulator(demo_seed()).await;
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"{url}\"\n{auth}token_url = \"{url}/oauth2/token\"\n",
        url = sim.url(),
        auth = auth_section("demo-key", "demo-secret", inbound),
    ));
    let gw = spawn(config).await;
    Stack { sim, gw }
}

#[tokio::test]
async fn every_upstream_request_carries_the_gateways_token() {
    let s = inject_stack(None).await;
    // No credentials at all, and a bogus one: both replaced by the gateway's token.
    let r = send(Method::GET, &s.url("/apps/new-app"), &[], "").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = send(
        Method::GET,
        &s.url("/apps"),
        &[("authorization", "Bearer bogus")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Policy still applies, and lookups use the gateway's token too.
    let r = send(
        Method::GET,
        &s.url("/messages?app_id=new-app&contact_id=alice"),
        &[],
        "",
    )
    .await;
    assert_rejected(&r, "dispatch.list_messages.contact_filter");
    // One token for all of it.
    assert_eq!(s.calls(Op::OauthToken), 1);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let s = inject_stack(None).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = s.url("/apps");
        tasks.push(tokio::spawn(async move {
            send(Method::GET, &url, &[], "").await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), StatusCode::OK);
    }
    assert_eq!(s.calls(Op::OauthToken), 1);
    s.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_request_retried_once() {
    let s = inject_stack(None).await;
    assert_eq!(
        send(Method::GET, &s.url("/apps"), &[], "").await.status,
        StatusCode::OK
    );
    s.sim.simulator.expire_tokens();
    let r = post(&s.url("/messages:send"), &send_identified("new-app")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(s.calls(Op::OauthToken), 2);
    assert_eq!(
        s.calls(Op::SendMessage),
        2,
        "the first attempt and one retry"
    );
    s.stop().await;
}

#[tokio::test]
async fn token_endpoint_failures_are_502_in_the_api_shape() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let sim = spawn_simulator(demo_seed()).await;
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"{}\"\n{}token_url = \"http://{closed}/oauth2/token\"\n",
        sim.url(),
        auth_section("demo-key", "demo-secret", None),
    ));
    let gw = spawn(config).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/demo-project/apps", gw.proxy_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let (status, message, _) = r.api_error();
    assert_eq!(status, "UNAVAILABLE");
    assert!(message.contains("access token"), "{message}");
    assert!(!message.contains(&closed.to_string()));
    assert_eq!(sim.simulator.calls(Op::ListApps), 0);
    gw.shutdown().await;

    // Wrong key: the token endpoint refuses it, and the client still gets a clean 502.
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"{url}\"\n{auth}token_url = \"{url}/oauth2/token\"\n",
        url = sim.url(),
        auth = auth_section("demo-key", "wrong-secret", None),
    ));
    let gw = spawn(config).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/projects/demo-project/apps", gw.proxy_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(!String::from_utf8_lossy(&r.body).contains("wrong-secret"));
    gw.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn inbound_callers_must_present_the_shared_secret() {
    let s = inject_stack(Some("inbound-s3cret")).await;
    let r = send(Method::GET, &s.url("/apps"), &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.api_error().0, "UNAUTHENTICATED");
    assert!(r.header("www-authenticate").is_some());
    let r = send(
        Method::GET,
        &s.url("/apps"),
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.calls(Op::ListApps),
        0,
        "refused callers never reach the upstream"
    );
    let r = send(
        Method::GET,
        &s.url("/apps"),
        &[("authorization", "Bearer inbound-s3cret")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // An SDK configured with the shared secret as its key secret gets a local token and uses it.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("any-key-id:inbound-s3cret")
    );
    let token_url = format!("http://{}/oauth2/token", s.gw.proxy_addr);
    let form = [
        ("authorization", basic.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let t = send(
        Method::POST,
        &token_url,
        &form,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(t.status, StatusCode::OK);
    let v = t.json();
    for field in ["access_token", "expires_in", "scope", "token_type"] {
        assert!(v.get(field).is_some(), "{field}");
    }
    let bearer = format!("Bearer {}", v["access_token"].as_str().expect("token"));
    let r = send(
        Method::GET,
        &s.url("/apps"),
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.calls(Op::OauthToken),
        1,
        "only the gateway's own token was fetched upstream"
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("k:nope")
    );
    let t = send(
        Method::POST,
        &token_url,
        &[("authorization", wrong.as_str())],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(t.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn missing_key_variables_stop_start_up_with_a_config_error() {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let config = config_toml(&format!(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n[auth]\nmode = \"inject\"\nkey_id_env = \"MODEGATE_UNSET_{n}\"\n"
    ));
    let err = modegate::App::bind(config).await.err().expect("refused");
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains(&format!("MODEGATE_UNSET_{n}")),
        "{err}"
    );
}
