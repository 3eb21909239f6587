//! Every rule × action through the whole stack, in-process: one table row per behaviour, each
//! driving `modegate::build`'s stack with `oneshot` against the simulator as an in-process
//! upstream, and asserting the answer, the decision headers and what the upstream received.
//! Plus the mode cache's timing behaviour on a manual clock and a scripted lookup: no sockets,
//! no sleeps.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use modegate::clock::Clock;
use modegate::domain::{LookupFailure, Operation as Op, ProcessingMode, UpstreamErrorKind};
use modegate::mode_cache::{BoxFuture, LookupOutcome, ModeLookup};
use modegate::schema::Api;
use modegate::simulator::Simulator;
use modegate::Deps;
use support::inproc::{verdict, InProc};
use support::*;

struct Case {
    name: &'static str,
    config: &'static str,
    method: Method,
    path: &'static str,
    body: &'static str,
    status: u16,
    decision: &'static str,
    rule: Option<&'static str>,
    shadow: Option<&'static str>,
    /// The operation the upstream must (or must not) have seen, and how often.
    upstream: (Op, u64),
}

const SEND_LEGACY_DISPATCH_ONLY_META: &str = r#"{"app_id":"legacy-app","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"processing_strategy":"DISPATCH_ONLY","correlation_id":"c-1","message":{"text_message":{"text":"hi"}}}"#;
const SEND_LEGACY_DISPATCH_ONLY: &str = r#"{"app_id":"legacy-app","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"processing_strategy":"DISPATCH_ONLY","message":{"text_message":{"text":"hi"}}}"#;
const SEND_LEGACY_TO_ALICE: &str = r#"{"app_id":"legacy-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#;
const CREATE_LONG_TTL: &str = r#"{"display_name":"x","retention_policy":{"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":100}}"#;
const CREATE_OUT_OF_RANGE: &str = r#"{"display_name":"x","retention_policy":{"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":5000}}"#;

const BATCH_CONTACTS: &str = r#"{"app_id":"new-app","message":{"text_message":{"text":"hi"}},"recipient_and_params":[{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}}},{"recipient":{"contact_id":"alice"}}]}"#;
const BATCH_EMPTY: &str =
    r#"{"app_id":"new-app","message":{"text_message":{"text":"hi"}},"recipient_and_params":[]}"#;
const BATCH_LATE: &str = r#"{"app_id":"new-app","message":{"text_message":{"text":"hi"}},"send_after":"2999-01-01T00:00:00Z","recipient_and_params":[{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}}}]}"#;
const BATCH_RESERVED: &str = r#"{"app_id":"new-app","message":{"text_message":{"text":"hi"}},"message_metadata":{"_batch_id":"mine"},"recipient_and_params":[{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}}}]}"#;
const BATCH_LEGACY_DISPATCH_ONLY_META: &str = r#"{"app_id":"legacy-app","processing_strategy":"DISPATCH_ONLY","message":{"text_message":{"text":"hi"}},"recipient_and_params":[{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"conversation_metadata":{"k":"v"}}]}"#;

fn cases() -> Vec<Case> {
    use Method as M;
    let c = |name,
             config,
             method,
             path,
             body,
             status,
             decision,
             rule: Option<&'static str>,
             shadow: Option<&'static str>,
             upstream| Case {
        name,
        config,
        method,
        path,
        body,
        status,
        decision,
        rule,
        shadow,
        upstream,
    };
    let scr = Some("dispatch.send.contact_recipient");
    let lcf = Some("dispatch.list_messages.contact_filter");
    let ms = Some("dispatch.messages_source");
    let coe = Some("dispatch.conversation_only_endpoint");
    vec![
        c("contact recipient: enforce rejects before the upstream", "", M::POST, "/messages:send", SEND_TO_ALICE, 400, "rejected", scr, None, (Op::SendMessage, 0)),
        c("contact recipient: shadow forwards unchanged and says so", "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"shadow\"\n", M::POST, "/messages:send", SEND_TO_ALICE, 400, "shadow", None, scr, (Op::SendMessage, 1)),
        c("contact recipient: off forwards untouched", "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"off\"\n", M::POST, "/messages:send", SEND_TO_ALICE, 400, "forwarded", None, None, (Op::SendMessage, 1)),
        c("contact recipient: rewrite resolves the contact", "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n", M::POST, "/messages:send", SEND_TO_ALICE, 200, "rewritten", scr, None, (Op::SendMessage, 1)),
        c("contact recipient: a CONVERSATION app keeps contact_id", "", M::POST, "/messages:send", SEND_LEGACY_TO_ALICE, 200, "forwarded", None, None, (Op::SendMessage, 1)),
        c("list filter: enforce on a DISPATCH app", "", M::GET, "/messages?app_id=new-app&contact_id=alice", "", 400, "rejected", lcf, None, (Op::ListMessages, 0)),
        c("list filter: a CONVERSATION app may filter by contact", "", M::GET, "/messages?app_id=legacy-app&contact_id=alice", "", 200, "forwarded", None, None, (Op::ListMessages, 1)),
        c("list filter in shadow while messages_source rewrites", "[policy.rules]\n\"dispatch.list_messages.contact_filter\" = \"shadow\"\n", M::GET, "/messages?app_id=new-app&contact_id=alice", "", 400, "rewritten", ms, lcf, (Op::ListMessages, 1)),
        c("messages_source: rewrite adds DISPATCH_SOURCE", "", M::GET, "/messages?app_id=new-app", "", 200, "rewritten", ms, None, (Op::ListMessages, 1)),
        c("messages_source: shadow", "[policy.rules]\n\"dispatch.messages_source\" = \"shadow\"\n", M::GET, "/messages?app_id=new-app", "", 200, "shadow", None, ms, (Op::ListMessages, 1)),
        c("messages_source: an explicit source is left alone", "", M::GET, "/messages?app_id=new-app&messages_source=DISPATCH_SOURCE", "", 200, "forwarded", None, None, (Op::ListMessages, 1)),
        c("conversation-only endpoint: enforce", "", M::GET, "/conversations?app_id=new-app", "", 400, "rejected", coe, None, (Op::ListConversations, 0)),
        c("conversation-only endpoint: shadow", "[policy.rules]\n\"dispatch.conversation_only_endpoint\" = \"shadow\"\n", M::GET, "/conversations?app_id=new-app", "", 400, "shadow", None, coe, (Op::ListConversations, 1)),
        c("conversation-only endpoint: a CONVERSATION app", "", M::GET, "/conversations?app_id=legacy-app", "", 200, "forwarded", None, None, (Op::ListConversations, 1)),
        c("conversation-only endpoint: create with a DISPATCH app in the body", "", M::POST, "/conversations", r#"{"app_id":"new-app","contact_id":"alice"}"#, 400, "rejected", coe, None, (Op::CreateConversation, 0)),
        c("fetch-last-message: contact_ids with the DISPATCH_SOURCE default", "", M::POST, "/messages:fetch-last-message", r#"{"app_id":"legacy-app","contact_ids":["alice"]}"#, 400, "rejected", Some("dispatch.fetch_last_message.contact_ids"), None, (Op::FetchLastMessage, 0)),
        c("fetch-last-message: contact_ids from CONVERSATION_SOURCE on a CONVERSATION app", "", M::POST, "/messages:fetch-last-message", r#"{"app_id":"legacy-app","contact_ids":["alice"],"messages_source":"CONVERSATION_SOURCE"}"#, 200, "forwarded", None, None, (Op::FetchLastMessage, 1)),
        c("fetch-last-message: camelCase CONVERSATION_SOURCE on a CONVERSATION app", "", M::POST, "/messages:fetch-last-message", r#"{"appId":"legacy-app","contactIds":["alice"],"messagesSource":"CONVERSATION_SOURCE"}"#, 200, "forwarded", None, None, (Op::FetchLastMessage, 1)),
        c("messages_source: an empty value is replaced, not doubled", "", M::GET, "/messages?app_id=new-app&messages_source=", "", 200, "rewritten", ms, None, (Op::ListMessages, 1)),
        c("messages_source: a camelCase source is a source", "", M::GET, "/messages?appId=new-app&messagesSource=DISPATCH_SOURCE", "", 200, "forwarded", None, None, (Op::ListMessages, 1)),
        c("camelCase query names are read as the API reads them", "", M::GET, "/messages?appId=new-app&contactId=alice", "", 400, "rejected", lcf, None, (Op::ListMessages, 0)),
        c("retention range: enforce", "", M::POST, "/apps", CREATE_OUT_OF_RANGE, 400, "rejected", Some("app.retention.range"), None, (Op::CreateApp, 0)),
        c("retention range: shadow", "[policy.rules]\n\"app.retention.range\" = \"shadow\"\n", M::POST, "/apps", CREATE_OUT_OF_RANGE, 400, "shadow", None, Some("app.retention.range"), (Op::CreateApp, 1)),
        c("pin mode: inert while keep", "", M::POST, "/apps", r#"{"display_name":"x"}"#, 200, "forwarded", None, None, (Op::CreateApp, 1)),
        c("pin mode: rewrite pins the configured mode", "[policy]\ncreate_app_default_mode = \"CONVERSATION\"\n", M::POST, "/apps", r#"{"display_name":"x"}"#, 200, "rewritten", Some("app.create.pin_mode"), None, (Op::CreateApp, 1)),
        c("max ttl: enforce over the cap", "[policy]\nmax_ttl_days = 30\n", M::POST, "/apps", CREATE_LONG_TTL, 400, "rejected", Some("compliance.max_ttl_days"), None, (Op::CreateApp, 0)),
        c("two rewrites: every rule in evaluation order", "[policy]\nmax_ttl_days = 30\ncreate_app_default_mode = \"DISPATCH\"\n[policy.rules]\n\"compliance.max_ttl_days\" = \"rewrite\"\n", M::POST, "/apps", CREATE_LONG_TTL, 200, "rewritten", Some("compliance.max_ttl_days,app.create.pin_mode"), None, (Op::CreateApp, 1)),
        c("dispatch-only override: enforce unless allowed", "[policy.rules]\n\"send.dispatch_only_override\" = \"enforce\"\n", M::POST, "/messages:send", SEND_LEGACY_DISPATCH_ONLY, 400, "rejected", Some("send.dispatch_only_override"), None, (Op::SendMessage, 0)),
        c("dispatch-only override: an allowed app", "[policy.rules]\n\"send.dispatch_only_override\" = \"enforce\"\n[[policy.app]]\nproject_id = \"demo-project\"\napp_id = \"legacy-app\"\nallow_dispatch_only = true\n", M::POST, "/messages:send", SEND_LEGACY_DISPATCH_ONLY, 200, "forwarded", None, None, (Op::SendMessage, 1)),
        c("dispatch-only metadata: enforce", "", M::POST, "/messages:send", SEND_LEGACY_DISPATCH_ONLY_META, 400, "rejected", Some("send.dispatch_only_metadata"), None, (Op::SendMessage, 0)),
        c("dispatch-only metadata: rewrite drops the fields", "[policy.rules]\n\"send.dispatch_only_metadata\" = \"rewrite\"\n", M::POST, "/messages:send", SEND_LEGACY_DISPATCH_ONLY_META, 200, "rewritten", Some("send.dispatch_only_metadata"), None, (Op::SendMessage, 1)),
        // The Batch listener ("batch:" paths): the same rules per recipient, and the batch rules.
        c("batch contact recipient: enforce rejects before the Batch origin", "", M::POST, "batch:/messages", BATCH_CONTACTS, 400, "rejected", scr, None, (Op::BatchSend, 0)),
        c("batch contact recipient: rewrite resolves every contact", "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n", M::POST, "batch:/messages", BATCH_CONTACTS, 200, "rewritten", scr, None, (Op::BatchSend, 1)),
        c("batch contact recipient: shadow forwards unchanged", "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"shadow\"\n", M::POST, "batch:/messages", BATCH_CONTACTS, 400, "shadow", None, scr, (Op::BatchSend, 1)),
        c("batch recipients range: enforce", "", M::POST, "batch:/messages", BATCH_EMPTY, 400, "rejected", Some("batch.recipients.range"), None, (Op::BatchSend, 0)),
        c("batch recipients range: shadow", "[policy.rules]\n\"batch.recipients.range\" = \"shadow\"\n", M::POST, "batch:/messages", BATCH_EMPTY, 400, "shadow", None, Some("batch.recipients.range"), (Op::BatchSend, 1)),
        c("batch send_after range: enforce", "", M::POST, "batch:/messages", BATCH_LATE, 400, "rejected", Some("batch.send_after.range"), None, (Op::BatchSend, 0)),
        c("batch reserved metadata: shadow by default", "", M::POST, "batch:/messages", BATCH_RESERVED, 200, "shadow", None, Some("batch.reserved_metadata"), (Op::BatchSend, 1)),
        c("batch reserved metadata: enforce", "[policy.rules]\n\"batch.reserved_metadata\" = \"enforce\"\n", M::POST, "batch:/messages", BATCH_RESERVED, 400, "rejected", Some("batch.reserved_metadata"), None, (Op::BatchSend, 0)),
        c("batch reserved metadata: rewrite drops it", "[policy.rules]\n\"batch.reserved_metadata\" = \"rewrite\"\n", M::POST, "batch:/messages", BATCH_RESERVED, 200, "rewritten", Some("batch.reserved_metadata"), None, (Op::BatchSend, 1)),
        c("batch dispatch-only override: enforce", "[policy.rules]\n\"send.dispatch_only_override\" = \"enforce\"\n", M::POST, "batch:/messages", BATCH_LEGACY_DISPATCH_ONLY_META, 400, "rejected", Some("send.dispatch_only_override"), None, (Op::BatchSend, 0)),
        c("batch dispatch-only metadata: enforce per recipient", "", M::POST, "batch:/messages", BATCH_LEGACY_DISPATCH_ONLY_META, 400, "rejected", Some("send.dispatch_only_metadata"), None, (Op::BatchSend, 0)),
        c("batch dispatch-only metadata: rewrite", "[policy.rules]\n\"send.dispatch_only_metadata\" = \"rewrite\"\n", M::POST, "batch:/messages", BATCH_LEGACY_DISPATCH_ONLY_META, 200, "rewritten", Some("send.dispatch_only_metadata"), None, (Op::BatchSend, 1)),
        c("per-app override beats the global action", "[[policy.app]]\nproject_id = \"demo-project\"\napp_id = \"new-app\"\nrules = { \"dispatch.send.contact_recipient\" = \"shadow\" }\n", M::POST, "/messages:send", SEND_TO_ALICE, 400, "shadow", None, scr, (Op::SendMessage, 1)),
    ]
}

#[tokio::test]
async fn every_rule_and_action_behaves_as_the_table_says() {
    for case in cases() {
        let g = InProc::start(case.config);
        let (api, path) = match case.path.strip_prefix("batch:") {
            Some(path) => (Api::Batch, path),
            None => (Api::Conversation, case.path),
        };
        let r = g
            .send_on(
                api,
                case.method.clone(),
                path,
                &[("authorization", DEMO_AUTH)],
                case.body,
            )
            .await;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(
            verdict(&r),
            (
                StatusCode::from_u16(case.status).expect("status"),
                Some(case.decision),
                case.rule
            ),
            "{}: {body}",
            case.name
        );
        assert_eq!(
            r.header("x-modegate-shadow"),
            case.shadow,
            "{}: shadow header",
            case.name
        );
        let (op, calls) = case.upstream;
        assert_eq!(
            g.calls(op),
            calls,
            "{}: upstream {}",
            case.name,
            op.as_str()
        );
        if case.decision == "rejected" && case.status == 400 {
            let (status, _, details) = r.api_error();
            assert_eq!(status, "INVALID_ARGUMENT", "{}", case.name);
            assert_eq!(
                details,
                [case.rule.expect("rule").to_string()],
                "{}",
                case.name
            );
        }
        assert!(r.header("x-request-id").is_some(), "{}", case.name);
    }
}

#[tokio::test]
async fn a_rewritten_send_is_what_the_upstream_stored() {
    let g = InProc::start("[policy.rules]\n\"send.dispatch_only_metadata\" = \"rewrite\"\n");
    let r = g
        .post("/messages:send", SEND_LEGACY_DISPATCH_ONLY_META)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["message_id"].as_str().expect("id").to_string();
    let stored = g
        .upstream_get(&format!("/messages/{id}?messages_source=DISPATCH_SOURCE"))
        .await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(
        stored.json().get("correlation_id").is_none(),
        "{}",
        stored.json()
    );
}

#[tokio::test]
async fn two_hundred_concurrent_requests_for_a_cold_app_make_one_lookup() {
    let g = Arc::new(InProc::start(""));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            g.get("/messages?app_id=new-app&contact_id=alice")
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), StatusCode::BAD_REQUEST);
    }
    assert_eq!(g.calls(Op::GetApp), 1);
    assert_eq!(g.calls(Op::ListMessages), 0);
    let m = g.metrics();
    assert_eq!(lookups(&m, "miss"), 1.0);
    assert_eq!(lookups(&m, "hit"), 199.0);
}

/// A lookup whose answers the test scripts, counting calls.
struct ScriptedLookup {
    calls: AtomicUsize,
    answer: Mutex<LookupOutcome>,
}

impl ModeLookup for ScriptedLookup {
    fn app_mode(&self, _: &str, _: &str, _: Option<HeaderValue>) -> BoxFuture<LookupOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = *self.answer.lock().expect("lock");
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn modes_expire_by_the_clock_and_stale_ones_serve_while_lookups_fail() {
    let lookup = Arc::new(ScriptedLookup {
        calls: AtomicUsize::new(0),
        answer: Mutex::new(LookupOutcome::Found(ProcessingMode::Dispatch)),
    });
    let sim = Simulator::new(demo_seed());
    let (clock, time) = Clock::manual();
    let state = modegate::build(
        &config_toml(
            "[upstream]\nbase_url = \"http://api.test\"\n[mode_cache]\nttl_secs = 300\nstale_if_error_secs = 600\n",
        ),
        Deps {
            upstream: Some(sim.clone().upstream()),
            mode_lookup: Some(lookup.clone()),
            clock,
            ..Deps::default()
        },
    )
    .expect("build");
    let g = InProc { state, sim, time };
    let path = "/messages?app_id=new-app&contact_id=alice";
    assert_rejected(&g.get(path).await, "dispatch.list_messages.contact_filter");
    assert_rejected(&g.get(path).await, "dispatch.list_messages.contact_filter");
    assert_eq!(lookup.calls.load(Ordering::SeqCst), 1, "fresh: one lookup");

    // Past the TTL the mode is looked up again.
    g.time.advance(Duration::from_secs(301));
    assert_rejected(&g.get(path).await, "dispatch.list_messages.contact_filter");
    assert_eq!(lookup.calls.load(Ordering::SeqCst), 2);

    // The lookup now fails: within ttl + stale_if_error the stale mode is served...
    *lookup.answer.lock().expect("lock") =
        LookupOutcome::Failed(LookupFailure::Upstream(UpstreamErrorKind::Connect));
    g.time.advance(Duration::from_secs(301));
    assert_rejected(&g.get(path).await, "dispatch.list_messages.contact_filter");
    assert_eq!(lookups(&g.metrics(), "stale"), 1.0);
    // ...and past it, nothing is: unknown_mode = forward applies.
    g.time.advance(Duration::from_secs(700));
    let r = g.get(path).await;
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    assert_eq!(lookups(&g.metrics(), "error"), 1.0);
}

#[tokio::test]
async fn patch_switching_the_mode_takes_effect_on_the_very_next_request() {
    let g = InProc::start("");
    let path = "/messages?app_id=legacy-app&contact_id=alice";
    assert_eq!(
        g.get(path).await.header("x-modegate-decision"),
        Some("forwarded")
    );
    let r = g
        .patch("/apps/legacy-app", r#"{"processing_mode":"DISPATCH"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_rejected(&g.get(path).await, "dispatch.list_messages.contact_filter");
}
