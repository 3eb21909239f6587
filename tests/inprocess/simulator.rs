//! The built-in simulator's own behaviour: auth, default modes, retention validation, and the
//! DISPATCH-mode errors the gateway's rules anticipate.

use crate::support;

use base64::Engine as _;
use http::{Method, StatusCode};
use modegate::policy::ProcessingMode;
use modegate::simulator::Seed;
use support::*;

fn seed() -> Seed {
    let mut seed = demo_seed();
    seed.credentials
        .push(modegate::simulator::seed::SeedCredential {
            key_id: "other-key".into(),
            key_secret: "other-secret".into(),
            projects: vec!["other-project".into()],
        });
    seed
}

const P: &str = "/v1/projects/demo-project";

async fn token(sim: &RunningSimulator) -> String {
    let r = send(
        Method::POST,
        &format!("{}/oauth2/token", sim.url()),
        &[
            ("authorization", DEMO_AUTH),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

#[tokio::test]
async fn token_endpoint_issues_jwt_shaped_tokens_with_all_fields() {
    let sim = spawn_simulator(seed()).await;
    let r = send(
        Method::POST,
        &format!("{}/oauth2/token", sim.url()),
        &[
            ("authorization", DEMO_AUTH),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    let v = r.json();
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["scope"], "");
    assert_eq!(v["token_type"], "bearer");
    let token = v["access_token"].as_str().expect("token");
    let parts: Vec<_> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&payload).expect("claims");
    let (exp, iat) = (
        claims["exp"].as_u64().expect("exp"),
        claims["iat"].as_u64().expect("iat"),
    );
    assert_eq!(exp - iat, 3600);

    let bad = send(
        Method::POST,
        &format!("{}/oauth2/token", sim.url()),
        &[
            ("authorization", "Basic ZGVtby1rZXk6d3Jvbmc="),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    sim.stop().await;
}

#[tokio::test]
async fn bearer_and_basic_auth_and_expiry() {
    let sim = spawn_simulator(seed()).await;
    let url = format!("{}{P}/apps", sim.url());
    let t = token(&sim).await;
    let bearer = format!("Bearer {t}");
    let r = send(Method::GET, &url, &[("authorization", &bearer)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(Method::GET, &url, &[("authorization", DEMO_AUTH)], "").await;
    assert_eq!(r.status, StatusCode::OK);

    let r = send(Method::GET, &url, &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.api_error().0, "UNAUTHENTICATED");
    let r = send(
        Method::GET,
        &url,
        &[("authorization", "Bearer forged.token.here")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("expired"));

    sim.simulator.expire_tokens();
    let r = send(Method::GET, &url, &[("authorization", &bearer)], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let challenge = r.header("www-authenticate").expect("challenge");
    assert!(challenge.contains("expired"), "{challenge}");
    assert_eq!(r.api_error().1, "Request had invalid credentials.");

    // A key limited to another project cannot see this one.
    let other = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("other-key:other-secret")
    );
    let r = send(Method::GET, &url, &[("authorization", &other)], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    sim.stop().await;
}

#[tokio::test]
async fn new_apps_default_to_dispatch_and_seeded_old_apps_to_conversation() {
    let sim = spawn_simulator(seed()).await;
    let base = format!("{}{P}", sim.url());
    assert_eq!(
        get(&format!("{base}/apps/legacy-app")).await.json()["processing_mode"],
        "CONVERSATION"
    );
    assert_eq!(
        get(&format!("{base}/apps/new-app")).await.json()["processing_mode"],
        "DISPATCH"
    );

    let created = post(&format!("{base}/apps"), r#"{"display_name":"fresh"}"#).await;
    assert_eq!(created.status, StatusCode::OK);
    let app = created.json();
    assert_eq!(app["processing_mode"], "DISPATCH");
    assert_eq!(
        app["retention_policy"]["retention_type"],
        "MESSAGE_EXPIRE_POLICY"
    );
    assert_eq!(app["retention_policy"]["ttl_days"], 180);
    assert_eq!(app["dispatch_retention_policy"]["ttl_days"], 0);

    let pinned = post(
        &format!("{base}/apps"),
        r#"{"display_name":"x","processing_mode":"CONVERSATION"}"#,
    )
    .await;
    assert_eq!(pinned.json()["processing_mode"], "CONVERSATION");

    let r = get(&format!("{base}/apps/does-not-exist")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.api_error().1.contains("app_id"));
    sim.stop().await;
}

#[tokio::test]
async fn retention_is_validated_per_object() {
    let sim = spawn_simulator(seed()).await;
    let base = format!("{}{P}", sim.url());
    for (body, field) in [
        (
            r#"{"display_name":"x","retention_policy":{"ttl_days":0}}"#,
            "retention_policy.ttl_days",
        ),
        (
            r#"{"display_name":"x","retention_policy":{"ttl_days":3651}}"#,
            "retention_policy.ttl_days",
        ),
        (
            r#"{"display_name":"x","dispatch_retention_policy":{"ttl_days":8}}"#,
            "dispatch_retention_policy.ttl_days",
        ),
        (
            r#"{"display_name":"x","dispatch_retention_policy":{"retention_type":"PERSIST_RETENTION_POLICY"}}"#,
            "dispatch_retention_policy.retention_type",
        ),
    ] {
        let r = post(&format!("{base}/apps"), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let (status, message, details) = r.api_error();
        assert_eq!(status, "INVALID_ARGUMENT");
        assert!(message.starts_with(field), "{message}");
        assert!(details.is_empty());
    }
    let ok = post(
        &format!("{base}/apps"),
        r#"{"display_name":"x","retention_policy":{"ttl_days":3650},"dispatch_retention_policy":{"ttl_days":7}}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = send(
        Method::PATCH,
        &format!("{base}/apps/legacy-app"),
        &[("authorization", DEMO_AUTH)],
        r#"{"retention_policy":{"ttl_days":0}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    sim.stop().await;
}

#[tokio::test]
async fn dispatch_apps_refuse_contact_addressing_and_contact_filters() {
    let sim = spawn_simulator(seed()).await;
    let base = format!("{}{P}", sim.url());
    let r = post(
        &format!("{base}/messages:send"),
        r#"{"app_id":"new-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.api_error().1.starts_with("recipient.contact_id"));

    let sent = post(
        &format!("{base}/messages:send"),
        r#"{"app_id":"new-app","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"message":{"text_message":{"text":"hi"}}}"#,
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK);
    let v = sent.json();
    let id = v["message_id"].as_str().expect("id").to_string();
    assert!(v["accepted_time"].is_string());

    let r = get(&format!("{base}/messages?app_id=new-app&contact_id=alice")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.api_error().1.starts_with("contact_id"));
    let r = get(&format!(
        "{base}/messages?app_id=new-app&conversation_id=c1"
    ))
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The message lives in DISPATCH_SOURCE only.
    let r = get(&format!("{base}/messages?app_id=new-app")).await;
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(0));
    let r = get(&format!(
        "{base}/messages?app_id=new-app&messages_source=DISPATCH_SOURCE"
    ))
    .await;
    let msgs = r.json()["messages"].clone();
    assert_eq!(msgs[0]["id"], id.as_str());
    assert_eq!(msgs[0]["processing_mode"], "DISPATCH");
    assert_eq!(msgs[0]["contact_id"], "");
    let r = get(&format!("{base}/messages/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&format!(
        "{base}/messages/{id}?messages_source=DISPATCH_SOURCE"
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Conversations are not available for a DISPATCH app.
    let r = get(&format!("{base}/conversations?app_id=new-app")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&format!("{base}/conversations:recent?app_id=new-app")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(
        &format!("{base}/conversations"),
        r#"{"app_id":"new-app","contact_id":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // fetch-last-message defaults to DISPATCH_SOURCE, where contact_ids are unsupported.
    let r = post(
        &format!("{base}/messages:fetch-last-message"),
        r#"{"app_id":"new-app","contact_ids":["alice"]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.api_error().1.starts_with("contact_ids"));
    sim.stop().await;
}

#[tokio::test]
async fn conversation_apps_keep_contacts_and_conversations() {
    let sim = spawn_simulator(seed()).await;
    let base = format!("{}{P}", sim.url());
    let r = post(
        &format!("{base}/messages:send"),
        r#"{"app_id":"legacy-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["message_id"].as_str().expect("id").to_string();
    let m = get(&format!("{base}/messages/{id}")).await.json();
    assert_eq!(m["contact_id"], "alice");
    assert_eq!(m["processing_mode"], "CONVERSATION");
    let list = get(&format!(
        "{base}/messages?app_id=legacy-app&contact_id=alice"
    ))
    .await
    .json();
    assert_eq!(list["messages"].as_array().map(Vec::len), Some(1));
    let convs = get(&format!("{base}/conversations?app_id=legacy-app"))
        .await
        .json();
    assert_eq!(convs["conversations"].as_array().map(Vec::len), Some(1));

    // DISPATCH_ONLY on a CONVERSATION app: no conversation_metadata / correlation_id.
    let r = post(
        &format!("{base}/messages:send"),
        r#"{"app_id":"legacy-app","processing_strategy":"DISPATCH_ONLY","correlation_id":"c","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"message":{"text_message":{"text":"hi"}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.api_error().1.starts_with("correlation_id"));
    let r = post(
        &format!("{base}/messages:send"),
        r#"{"app_id":"legacy-app","processing_strategy":"DISPATCH_ONLY","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"message":{"text_message":{"text":"hi"}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["message_id"].as_str().expect("id").to_string();
    let r = get(&format!(
        "{base}/messages/{id}?messages_source=DISPATCH_SOURCE"
    ))
    .await;
    assert_eq!(r.json()["processing_mode"], "DISPATCH");
    sim.stop().await;
}

#[tokio::test]
async fn mode_switch_takes_effect_on_the_next_request() {
    let sim = spawn_simulator(seed()).await;
    let base = format!("{}{P}", sim.url());
    let r = send(
        Method::PATCH,
        &format!("{base}/apps/legacy-app?update_mask=processing_mode"),
        &[("authorization", DEMO_AUTH)],
        r#"{"processing_mode":"DISPATCH","display_name":"ignored by mask"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["display_name"], "Legacy app");
    assert_eq!(
        sim.simulator.app_mode("demo-project", "legacy-app"),
        Some(ProcessingMode::Dispatch)
    );
    let r = post(
        &format!("{base}/messages:send"),
        r#"{"app_id":"legacy-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    sim.stop().await;
}

#[tokio::test]
async fn fault_knobs_fail_the_chosen_share_of_an_operation() {
    let mut seed = seed();
    seed.faults.operations.insert(
        "get_app".into(),
        modegate::simulator::seed::FaultKnobs {
            failure_ratio: 0.5,
            ..Default::default()
        },
    );
    let sim = spawn_simulator(seed).await;
    let url = format!("{}{P}/apps/new-app", sim.url());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&url).await.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503]);
    // Other operations are untouched.
    assert_eq!(
        get(&format!("{}{P}/apps", sim.url())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        sim.simulator
            .calls(modegate::proxy::classify::Operation::GetApp),
        4
    );
    sim.stop().await;
}

#[test]
fn seeds_with_bad_values_are_refused() {
    let e = Seed::parse("[faults]\nfailure_ratio = 2.0\n").expect_err("ratio");
    assert!(e.contains("failure_ratio"), "{e}");
    let e = Seed::parse("[faults.operations.nope]\nlatency_ms = 1\n").expect_err("op");
    assert!(e.contains("unknown operation"), "{e}");
    let e = Seed::parse(
        "[[projects]]\nid = \"p\"\n[[projects.apps]]\nid = \"a\"\ncreated = \"yesterday\"\n",
    )
    .expect_err("date");
    assert!(e.contains("RFC 3339"), "{e}");
    let e = Seed::parse("unknown = 1\n").expect_err("key");
    assert!(e.contains("unknown field"), "{e}");
}

/// The simulator answers the shapes the SDKs send, the way the API does.
mod fidelity {
    use super::support::inproc::InProc;
    use http::{Method, StatusCode};

    #[tokio::test]
    async fn fetch_last_message_takes_identities_as_plain_strings() {
        let g = InProc::start("");
        let send = super::support::send_identified("new-app");
        assert_eq!(
            g.upstream_send(Method::POST, "/messages:send", &send)
                .await
                .status,
            StatusCode::OK
        );
        // Both SDKs: identity strings, the channel a separate filter.
        let r = g
            .upstream_send(
                Method::POST,
                "/messages:fetch-last-message",
                r#"{"app_id":"new-app","channel_identities":["+15550100"],"channel":"SMS"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json()["messages"].as_array().map(Vec::len),
            Some(1),
            "{}",
            r.json()
        );
        let r = g
            .upstream_send(
                Method::POST,
                "/messages:fetch-last-message",
                r#"{"app_id":"new-app","channel_identities":["+15550199"]}"#,
            )
            .await;
        assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(0));
    }

    #[tokio::test]
    async fn contact_and_event_lists_honour_their_filters() {
        let g = InProc::start("");
        let all = g.upstream_get("/contacts").await.json()["contacts"]
            .as_array()
            .map(Vec::len);
        assert!(all > Some(1));
        let by_identity = g
            .upstream_get("/contacts?channel=SMS&identity=%2B15550100")
            .await
            .json();
        let ids: Vec<&str> = by_identity["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        assert_eq!(ids, ["alice"], "{by_identity}");
        let none = g.upstream_get("/contacts?external_id=nobody").await.json();
        assert_eq!(none["contacts"].as_array().map(Vec::len), Some(0));

        let event = r#"{"app_id":"legacy-app","recipient":{"contact_id":"alice"},"event":{"composing_event":{}}}"#;
        assert_eq!(
            g.upstream_send(Method::POST, "/events:send", event)
                .await
                .status,
            StatusCode::OK
        );
        let alice = g.upstream_get("/events?contact_id=alice").await.json();
        assert_eq!(alice["events"].as_array().map(Vec::len), Some(1), "{alice}");
        let bob = g.upstream_get("/events?contact_id=bob").await.json();
        assert_eq!(bob["events"].as_array().map(Vec::len), Some(0));
    }

    #[tokio::test]
    async fn conversations_keep_their_active_channel_and_inject_event_answers_an_event() {
        let g = InProc::start("");
        let c = g
            .upstream_send(
                Method::POST,
                "/conversations",
                r#"{"app_id":"legacy-app","contact_id":"alice","active_channel":"SMS"}"#,
            )
            .await;
        assert_eq!(c.status, StatusCode::OK);
        assert_eq!(c.json()["active_channel"], "SMS");
        let id = c.json()["id"].as_str().expect("id").to_string();
        let r = g
            .upstream_send(
                Method::POST,
                &format!("/conversations/{id}:inject-event"),
                r#"{"app_event":{"composing_event":{}},"accept_time":"2026-01-01T00:00:00Z"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert!(v["event_id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        assert!(v["accepted_time"].is_string(), "{v}");
    }

    #[tokio::test]
    async fn consent_audit_records_and_settings_have_their_own_shapes() {
        let g = InProc::start("");
        let audit = g
            .upstream_get("/apps/new-app/consents/audit-records/%2B15550100")
            .await
            .json();
        assert!(audit.get("audit_records").is_some(), "{audit}");
        assert!(audit.get("identities").is_none(), "{audit}");
        let lists = g
            .upstream_get("/apps/new-app/consents/identities/%2B15550100")
            .await
            .json();
        assert!(lists.get("lists").is_some(), "{lists}");
        let r = g
            .upstream_send(Method::PATCH, "/settings", r#"{"webhook_retry":"ON"}"#)
            .await;
        assert_eq!(r.json()["webhook_retry"], "ON");
        assert_eq!(
            g.upstream_get("/settings").await.json()["webhook_retry"],
            "ON"
        );
    }
}
