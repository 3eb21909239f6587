//! Every rule end to end through the whole stack, in-process with the simulator as upstream:
//! enforce rejects without the upstream seeing the request; shadow forwards it unchanged and
//! counts; rewrite forwards the rewritten request and the upstream accepts it; off forwards
//! untouched. The tests that read the admin endpoints run through real sockets.

use crate::support;

use http::{Method, StatusCode};
use modegate::proxy::classify::Operation as Op;
use support::inproc::InProc;
use support::*;

fn rules(rule: &str, action: &str) -> String {
    format!("[policy.rules]\n\"{rule}\" = \"{action}\"\n")
}

#[tokio::test]
async fn send_contact_recipient_enforce_shadow_off_rewrite() {
    let rule = "dispatch.send.contact_recipient";
    // enforce (default): rejected, the upstream never sees the send.
    let s = InProc::start("");
    let r = s.post("/messages:send", SEND_TO_ALICE).await;
    assert_rejected(&r, rule);
    assert_eq!(s.calls(Op::SendMessage), 0);
    assert_eq!(decisions(&s.metrics(), rule, "enforce"), 1.0);

    // shadow: forwarded unchanged (the simulator refuses it itself), recorded.
    let s = InProc::start(&rules(rule, "shadow"));
    let r = s.post("/messages:send", SEND_TO_ALICE).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.api_error().2,
        Vec::<String>::new(),
        "the upstream's answer, not the gateway's"
    );
    assert_eq!(r.header("x-modegate-decision"), Some("shadow"));
    assert_eq!(s.calls(Op::SendMessage), 1);
    assert_eq!(decisions(&s.metrics(), rule, "shadow"), 1.0);

    // off: forwarded untouched, nothing recorded.
    let s = InProc::start(&rules(rule, "off"));
    let r = s.post("/messages:send", SEND_TO_ALICE).await;
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    assert_eq!(s.calls(Op::SendMessage), 1);
    assert_eq!(decisions(&s.metrics(), rule, "shadow"), 0.0);

    // rewrite: the contact becomes identified_by and the upstream accepts the send.
    let s = InProc::start(&rules(rule, "rewrite"));
    let r = s.post("/messages:send", SEND_TO_ALICE).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
    assert_eq!(r.header("x-modegate-rule"), Some(rule));
    let id = r.json()["message_id"].as_str().expect("id").to_string();
    let m = s
        .upstream_get(&format!("/messages/{id}?messages_source=DISPATCH_SOURCE"))
        .await;
    assert_eq!(m.json()["channel_identity"]["identity"], "+15550100");
}

#[tokio::test]
async fn contact_rewrite_respects_channel_priority_and_reports_missing_contacts() {
    let s = InProc::start(&rules("dispatch.send.contact_recipient", "rewrite"));
    // bob has SMS and WHATSAPP; the priority order keeps only WHATSAPP.
    let body = r#"{"app_id":"new-app","recipient":{"contact_id":"bob"},"channel_priority_order":["WHATSAPP"],"message":{"text_message":{"text":"hi"}}}"#;
    let r = s.post("/messages:send", body).await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["message_id"].as_str().expect("id").to_string();
    let m = s
        .upstream_get(&format!("/messages/{id}?messages_source=DISPATCH_SOURCE"))
        .await;
    assert_eq!(m.json()["channel_identity"]["channel"], "WHATSAPP");

    let body = r#"{"app_id":"new-app","recipient":{"contact_id":"alice"},"channel_priority_order":["VIBER"],"message":{"text_message":{"text":"hi"}}}"#;
    let r = s.post("/messages:send", body).await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    let (_, message, _) = r.api_error();
    assert!(
        message.contains("alice") && message.contains("VIBER"),
        "{message}"
    );
    assert!(!message.contains("+1555"), "phone number leaked: {message}");

    let body = r#"{"app_id":"new-app","recipient":{"contact_id":"nobody"},"message":{"text_message":{"text":"hi"}}}"#;
    let r = s.post("/messages:send", body).await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    assert!(r.api_error().1.contains("nobody"));

    // One contact lookup per contact, however many sends name it.
    for _ in 0..5 {
        assert_eq!(
            s.post("/messages:send", SEND_TO_ALICE).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        s.calls(Op::GetContact),
        3,
        "bob, alice, nobody: one lookup each"
    );
}

#[tokio::test]
async fn list_messages_contact_filter_enforce_shadow_off() {
    let rule = "dispatch.list_messages.contact_filter";
    let path = "/messages?app_id=new-app&contact_id=alice";
    let s = InProc::start("");
    let r = s.get(path).await;
    assert_rejected(&r, rule);
    assert_eq!(s.calls(Op::ListMessages), 0);
    // The same filter on a CONVERSATION app is fine.
    let r = s.get("/messages?app_id=legacy-app&contact_id=alice").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));

    // With the filter not enforcing, messages_source is still added (a rewrite), so the
    // request is rewritten either way; shadow is recorded in the metric.
    for (action, header) in [("shadow", "rewritten"), ("off", "rewritten")] {
        let s = InProc::start(&rules(rule, action));
        let r = s.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "the simulator answers");
        assert!(r.api_error().2.is_empty());
        assert_eq!(r.header("x-modegate-decision"), Some(header), "{action}");
        assert_eq!(s.calls(Op::ListMessages), 1);
        let shadowed = decisions(&s.metrics(), rule, "shadow");
        assert_eq!(shadowed, if action == "shadow" { 1.0 } else { 0.0 });
    }
}

#[tokio::test]
async fn messages_source_rewrite_shadow_off() {
    let rule = "dispatch.messages_source";
    for (action, expect_found) in [("rewrite", true), ("shadow", false), ("off", false)] {
        let s = InProc::start(&rules(rule, action));
        let sent = s.post("/messages:send", &send_identified("new-app")).await;
        assert_eq!(sent.status, StatusCode::OK);
        let id = sent.json()["message_id"].as_str().expect("id").to_string();
        // A list naming the app: its mode is looked up.
        let list = s.get("/messages?app_id=new-app").await;
        let n = list.json()["messages"].as_array().map(Vec::len);
        assert_eq!(n, Some(usize::from(expect_found)), "{action}");
        // Get by id names no app: the only app the gateway knows of in the project is the
        // DISPATCH one, so the project ties the read to DISPATCH.
        let by_id = s.get(&format!("/messages/{id}")).await;
        let (status, header) = match action {
            "rewrite" => (StatusCode::OK, "rewritten"),
            "shadow" => (StatusCode::NOT_FOUND, "shadow"),
            _ => (StatusCode::NOT_FOUND, "forwarded"),
        };
        assert_eq!(
            (by_id.status, by_id.header("x-modegate-decision")),
            (status, Some(header)),
            "{action}"
        );
        let m = s.metrics();
        let expected = if action == "off" { 0.0 } else { 2.0 };
        assert_eq!(decisions(&m, rule, action), expected, "{action}");
    }
}

#[tokio::test]
async fn conversation_only_endpoints_enforce_shadow_off() {
    let rule = "dispatch.conversation_only_endpoint";
    let s = InProc::start("");
    assert_rejected(&s.get("/conversations?app_id=new-app").await, rule);
    assert_rejected(&s.get("/conversations:recent?app_id=new-app").await, rule);
    assert_rejected(
        &s.post(
            "/conversations",
            r#"{"app_id":"new-app","contact_id":"alice"}"#,
        )
        .await,
        rule,
    );
    assert_eq!(
        s.calls(Op::ListConversations)
            + s.calls(Op::RecentConversations)
            + s.calls(Op::CreateConversation),
        0
    );
    assert_eq!(
        s.get("/conversations?app_id=legacy-app").await.status,
        StatusCode::OK
    );
    for action in ["shadow", "off"] {
        let s = InProc::start(&rules(rule, action));
        let r = s.get("/conversations?app_id=new-app").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.api_error().2.is_empty());
        assert_eq!(s.calls(Op::ListConversations), 1);
    }
}

#[tokio::test]
async fn fetch_last_message_contact_ids_enforce_and_shadow() {
    let rule = "dispatch.fetch_last_message.contact_ids";
    let body = r#"{"app_id":"legacy-app","contact_ids":["alice"]}"#;
    let s = InProc::start("");
    assert_rejected(&s.post("/messages:fetch-last-message", body).await, rule);
    assert_eq!(s.calls(Op::FetchLastMessage), 0);
    let ok = s.post("/messages:fetch-last-message",
        r#"{"app_id":"legacy-app","contact_ids":["alice"],"messages_source":"CONVERSATION_SOURCE"}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let s = InProc::start(&rules(rule, "shadow"));
    let r = s.post("/messages:fetch-last-message", body).await;
    assert_eq!(r.header("x-modegate-decision"), Some("shadow"));
    assert_eq!(s.calls(Op::FetchLastMessage), 1);
}

#[tokio::test]
async fn retention_range_enforce_and_shadow() {
    let rule = "app.retention.range";
    let body = r#"{"display_name":"x","dispatch_retention_policy":{"ttl_days":30}}"#;
    let s = InProc::start("");
    let r = s.post("/apps", body).await;
    assert_rejected(&r, rule);
    assert!(r
        .api_error()
        .1
        .starts_with("dispatch_retention_policy.ttl_days"));
    assert_eq!(s.calls(Op::CreateApp), 0);
    let r = s
        .patch("/apps/legacy-app", r#"{"retention_policy":{"ttl_days":0}}"#)
        .await;
    assert_rejected(&r, rule);
    assert_eq!(s.calls(Op::UpdateApp), 0);
    let s = InProc::start(&rules(rule, "shadow"));
    let r = s.post("/apps", body).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "the simulator refuses it too"
    );
    assert_eq!(r.header("x-modegate-decision"), Some("shadow"));
    assert_eq!(s.calls(Op::CreateApp), 1);
}

#[tokio::test]
async fn create_pin_mode_rewrite_and_shadow() {
    let s = InProc::start("[policy]\ncreate_app_default_mode = \"CONVERSATION\"\n");
    let r = s
        .post("/apps", r#"{"display_name":"legacy client app"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
    assert_eq!(r.header("x-modegate-rule"), Some("app.create.pin_mode"));
    assert_eq!(r.json()["processing_mode"], "CONVERSATION");
    // An explicit mode is kept.
    let r = s
        .post(
            "/apps",
            r#"{"display_name":"x","processing_mode":"DISPATCH"}"#,
        )
        .await;
    assert_eq!(r.json()["processing_mode"], "DISPATCH");
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    let s = InProc::start("[policy]\ncreate_app_default_mode = \"CONVERSATION\"\n[policy.rules]\n\"app.create.pin_mode\" = \"shadow\"\n");
    let r = s.post("/apps", r#"{"display_name":"x"}"#).await;
    assert_eq!(r.json()["processing_mode"], "DISPATCH");
    assert_eq!(r.header("x-modegate-decision"), Some("shadow"));
    // Inert while keep.
    let s = InProc::start("");
    let r = s.post("/apps", r#"{"display_name":"x"}"#).await;
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
}

#[tokio::test]
async fn dispatch_only_override_and_metadata() {
    let with_metadata = r#"{"app_id":"legacy-app","processing_strategy":"DISPATCH_ONLY","correlation_id":"c-1","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"message":{"text_message":{"text":"hi"}}}"#;
    let plain = with_metadata.replace(r#""correlation_id":"c-1","#, "");
    // Override off (default), metadata enforce (default).
    let s = InProc::start("");
    assert_rejected(
        &s.post("/messages:send", with_metadata).await,
        "send.dispatch_only_metadata",
    );
    assert_eq!(
        s.post("/messages:send", &plain).await.status,
        StatusCode::OK
    );
    // Metadata rewrite: dropped, and the upstream accepts it.
    let s = InProc::start(&rules("send.dispatch_only_metadata", "rewrite"));
    let r = s.post("/messages:send", with_metadata).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("x-modegate-rule"),
        Some("send.dispatch_only_metadata")
    );
    // Override enforce: refused unless the app allows it.
    let s = InProc::start("[policy.rules]\n\"send.dispatch_only_override\" = \"enforce\"\n\
         [[policy.app]]\nproject_id = \"demo-project\"\napp_id = \"new-app\"\nallow_dispatch_only = true\n");
    assert_rejected(
        &s.post("/messages:send", &plain).await,
        "send.dispatch_only_override",
    );
    let allowed = plain.replace("legacy-app", "new-app");
    assert_eq!(
        s.post("/messages:send", &allowed).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn max_ttl_days_enforce_and_rewrite() {
    let body = r#"{"display_name":"x","retention_policy":{"ttl_days":400}}"#;
    let s = InProc::start("[policy]\nmax_ttl_days = 30\n");
    assert_rejected(&s.post("/apps", body).await, "compliance.max_ttl_days");
    assert_eq!(s.calls(Op::CreateApp), 0);
    let s = InProc::start(
        "[policy]\nmax_ttl_days = 30\n[policy.rules]\n\"compliance.max_ttl_days\" = \"rewrite\"\n",
    );
    let r = s.post("/apps", body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["retention_policy"]["ttl_days"], 30);
    // The rewrite edits the field and keeps the rest of the body, fields rules never read too.
    assert_eq!(r.json()["display_name"], "x");
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
}

#[tokio::test]
async fn unknown_mode_forward_and_reject() {
    let mut seed = demo_seed();
    seed.faults.operations.insert(
        "get_app".into(),
        modegate::simulator::seed::FaultKnobs {
            failure_ratio: 1.0,
            ..Default::default()
        },
    );
    let s = InProc::with_seed(seed.clone(), "");
    let r = s.get("/messages?app_id=new-app&contact_id=alice").await;
    assert_eq!(
        r.header("x-modegate-decision"),
        Some("forwarded"),
        "fail open"
    );
    assert_eq!(s.calls(Op::ListMessages), 1);
    let m = s.metrics();
    assert!(lookups(&m, "error") >= 1.0);
    let s = InProc::with_seed(seed, "[policy]\nunknown_mode = \"reject\"\n");
    let r = s.get("/messages?app_id=new-app&contact_id=alice").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.api_error().0, "UNAVAILABLE");
    assert_eq!(s.calls(Op::ListMessages), 0);
}

#[tokio::test]
async fn a_bad_token_gets_the_upstreams_401_never_a_mode_based_400() {
    let s = InProc::start("");
    let url = "/messages?app_id=new-app&contact_id=alice";
    // A good caller makes the mode known…
    assert_rejected(&s.get(url).await, "dispatch.list_messages.contact_filter");
    // …and still a caller with a bad or missing token learns nothing from the gateway.
    for headers in [vec![("authorization", "Bearer not-a-token")], vec![]] {
        let r = s.send(Method::GET, url, &headers, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    }
    let r = s
        .send(
            Method::POST,
            "/messages:send",
            &[("authorization", "Bearer not-a-token")],
            SEND_TO_ALICE,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_key_without_access_to_the_project_learns_nothing() {
    let mut seed = demo_seed();
    seed.credentials
        .push(modegate::simulator::seed::SeedCredential {
            key_id: "outsider".into(),
            key_secret: "s".into(),
            projects: vec!["elsewhere".into()],
        });
    let s = InProc::with_seed(seed, "");
    let url = "/messages?app_id=new-app&contact_id=alice";
    assert_rejected(&s.get(url).await, "dispatch.list_messages.contact_filter");
    let outsider = "Basic b3V0c2lkZXI6cw==";
    let r = s
        .send(Method::GET, url, &[("authorization", outsider)], "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
}

#[tokio::test]
async fn what_if_dispatch_builds_the_migration_report() {
    let s = Stack::start("[policy]\nwhat_if_mode = \"DISPATCH\"\n").await;
    let send_legacy = SEND_TO_ALICE.replace("new-app", "legacy-app");
    for _ in 0..2 {
        let r = post(&s.url("/messages:send"), &send_legacy).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header("x-modegate-decision"),
            Some("forwarded"),
            "what-if never changes traffic"
        );
    }
    assert_eq!(
        get(&s.url("/conversations?app_id=legacy-app")).await.status,
        StatusCode::OK
    );
    // DISPATCH would rewrite this one (messages_source), and refuse the next one (contact_id)
    // as well as rewrite it: one request each.
    for query in ["app_id=legacy-app", "app_id=legacy-app&contact_id=alice"] {
        let r = get(&s.url(&format!("/messages?{query}"))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    }
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "modegate_migration_blockers_total",
            &[("rule", "dispatch.messages_source")]
        ),
        0.0,
        "a rewrite is no blocker"
    );
    assert_eq!(
        sample(
            &m,
            "modegate_migration_blockers_total",
            &[("rule", "dispatch.send.contact_recipient")]
        ),
        2.0
    );
    let report = send(
        Method::GET,
        &format!("http://{}/report/migration", s.gw.admin_addr),
        &[],
        "",
    )
    .await;
    let v = report.json();
    assert_eq!(v["what_if_mode"], "DISPATCH");
    let app = &v["apps"][0];
    assert_eq!(app["app_id"], "legacy-app");
    // Five requests, each counted once: four refused in DISPATCH mode, one rewritten.
    assert_eq!(app["requests"], 5, "{v}");
    assert_eq!(app["would_refuse"], 4, "{v}");
    assert_eq!(app["would_rewrite"], 1, "{v}");
    let rules: Vec<_> = app["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["count"].as_u64(),
            )
        })
        .collect();
    assert!(
        rules.contains(&("dispatch.send.contact_recipient".to_string(), Some(2))),
        "{rules:?}"
    );
    assert!(
        rules.contains(&("dispatch.conversation_only_endpoint".to_string(), Some(1))),
        "{rules:?}"
    );
    assert!(
        rules.contains(&("dispatch.messages_source".to_string(), Some(2))),
        "{rules:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn policy_bodies_are_bounded_and_must_be_json() {
    let s = InProc::start("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_policy_body_bytes = 2048\n");
    let big = format!(
        r#"{{"app_id":"new-app","message":{{"text_message":{{"text":"{}"}}}}}}"#,
        "x".repeat(4096)
    );
    let r = s.post("/messages:send", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.api_error().0, "INVALID_ARGUMENT");
    for bad in ["{not json", "[1,2]", "\"str\""] {
        let r = s.post("/messages:send", bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.api_error().1.starts_with("body:"), "{bad}");
    }
    let r = s
        .send(
            Method::POST,
            "/messages:send",
            &[("authorization", DEMO_AUTH), ("content-type", "text/plain")],
            SEND_TO_ALICE,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.calls(Op::SendMessage), 0);
    // Non-policy routes stream any body of any size.
    let r = s.post("/messages:transcode", &big).await;
    assert_ne!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn rewritten_bodies_carry_a_correct_content_length() {
    let upstream = Upstream::ok().await;
    let mut config = config_for(&upstream.url());
    config.policy.create_app_default_mode = Some(modegate::policy::ProcessingMode::Conversation);
    let gw = spawn(config).await;
    let body = r#"{"display_name":"x"}"#;
    let r = post(
        &format!("http://{}/v1/projects/p/apps", gw.proxy_addr),
        body,
    )
    .await;
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
    let seen = &upstream.seen()[0];
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).expect("json");
    assert_eq!(
        sent,
        serde_json::json!({"display_name": "x", "processing_mode": "CONVERSATION"})
    );
    assert_eq!(
        seen.headers["content-length"],
        seen.body.len().to_string().as_str()
    );
    assert!(!seen.headers.contains_key("transfer-encoding"));
    gw.shutdown().await;
}

#[tokio::test]
async fn app_responses_teach_the_cache_and_admin_can_forget() {
    let s = Stack::start("").await;
    assert_eq!(get(&s.url("/apps")).await.status, StatusCode::OK);
    let admin = s.gw.admin_addr;
    let apps = send(Method::GET, &format!("http://{admin}/apps"), &[], "")
        .await
        .json();
    let listed: Vec<_> = apps["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            (
                a["app_id"].as_str().unwrap_or_default().to_string(),
                a["source"].as_str().unwrap_or_default().to_string(),
                a["mode"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        listed.contains(&("legacy-app".into(), "learned".into(), "CONVERSATION".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("new-app".into(), "learned".into(), "DISPATCH".into())),
        "{listed:?}"
    );
    // Learned modes need no lookup.
    assert_rejected(
        &get(&s.url("/messages?app_id=new-app&contact_id=alice")).await,
        "dispatch.list_messages.contact_filter",
    );
    assert_eq!(s.calls(Op::GetApp), 0);
    let r = send(
        Method::DELETE,
        &format!("http://{admin}/apps/demo-project/new-app"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    s.gw.state.modes().sync().await;
    let apps = send(Method::GET, &format!("http://{admin}/apps"), &[], "")
        .await
        .json();
    assert_eq!(apps["apps"].as_array().map(Vec::len), Some(1));
    let m = s.metrics().await;
    assert_eq!(
        sample(&m, "modegate_mode_cache_apps", &[("mode", "DISPATCH")]),
        0.0
    );
    assert_eq!(
        sample(&m, "modegate_mode_cache_apps", &[("mode", "CONVERSATION")]),
        1.0
    );
    s.stop().await;
}
