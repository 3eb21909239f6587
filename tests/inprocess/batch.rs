//! The Batch API listener: the rules per recipient and the three batch rules, in-process over
//! the simulator's Batch origin; the listener itself (HTTP/1.1 and h2c, its own origin, its
//! body limit) over real sockets.

use crate::support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use modegate::proxy::classify::Operation as Op;
use serde_json::{json, Value};
use support::inproc::{verdict, InProc};
use support::*;

const MESSAGES: &str = "/messages";

fn rules(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("[policy.rules]\n");
    for (rule, action) in pairs {
        out.push_str(&format!("\"{rule}\" = \"{action}\"\n"));
    }
    out
}

fn identified(phone: &str, name: &str) -> Value {
    json!({"recipient": {"identified_by": {"channel_identities": [{"channel": "SMS", "identity": phone}]}},
           "parameters": {"name": name}})
}

fn contact(id: &str) -> Value {
    json!({"recipient": {"contact_id": id}, "parameters": {"name": id}})
}

/// A batch send body to `app` with `recipients` (and `extra` top-level fields).
fn batch(app: &str, recipients: Vec<Value>, extra: Value) -> String {
    let mut body = json!({
        "app_id": app,
        "message": {"text_message": {"text": "Hi ${name}"}},
        "recipient_and_params": recipients,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

fn mixed(app: &str) -> String {
    batch(
        app,
        vec![
            identified("+15550199", "Ann"),
            contact("alice"),
            contact("bob"),
        ],
        json!({}),
    )
}

fn batch_recipients(m: &str, outcome: &str) -> f64 {
    sample(
        m,
        "modegate_batch_recipients_total",
        &[("outcome", outcome)],
    )
}

/// The messages the simulator stored in `source` for `app`.
async fn stored(g: &InProc, app: &str, source: &str) -> Vec<Value> {
    let r = g
        .upstream_get(&format!(
            "/messages?app_id={app}&messages_source={source}&page_size=1000"
        ))
        .await;
    r.json()["messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn enforce_names_every_contact_recipient_and_never_reaches_the_batch_origin() {
    let g = InProc::start("");
    let r = g.batch(Method::POST, MESSAGES, &mixed("new-app")).await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    let (_, message, _) = r.api_error();
    assert!(
        message.starts_with("recipient_and_params[1].recipient.contact_id, recipient_and_params[2].recipient.contact_id: not supported for apps in DISPATCH processing mode"),
        "{message}"
    );
    assert!(
        !message.contains("+1555"),
        "no identity in messages: {message}"
    );
    assert_eq!(g.calls(Op::BatchSend), 0);
    let m = g.metrics();
    assert_eq!(batch_recipients(&m, "rejected"), 3.0);
    assert_eq!(
        sample(
            &m,
            "modegate_requests_total",
            &[("operation", "batch_send"), ("decision", "rejected")]
        ),
        1.0
    );
}

#[tokio::test]
async fn rewrite_resolves_every_contact_and_the_batch_origin_accepts_it() {
    let g = InProc::start(&rules(&[("dispatch.send.contact_recipient", "rewrite")]));
    let r = g.batch(Method::POST, MESSAGES, &mixed("new-app")).await;
    assert_eq!(
        verdict(&r),
        (
            StatusCode::OK,
            Some("rewritten"),
            Some("dispatch.send.contact_recipient")
        ),
        "{:?}",
        r.body
    );
    let answer = r.json();
    assert!(
        answer["batch_id"].as_str().is_some_and(|b| !b.is_empty()),
        "{answer}"
    );
    assert!(answer["send_after"].as_str().is_some(), "{answer}");
    // The simulator refuses contact_id recipients of a DISPATCH app: it accepted them all
    // rewritten, one stored message per recipient, parameters filled.
    assert_eq!(g.calls(Op::BatchSend), 1);
    assert_eq!(
        g.calls(Op::GetContact),
        2,
        "one lookup per distinct contact"
    );
    let messages = stored(&g, "new-app", "DISPATCH_SOURCE").await;
    let mut texts: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["app_message"]["text_message"]["text"].as_str())
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, ["Hi Ann", "Hi alice", "Hi bob"]);
    let m = g.metrics();
    assert_eq!(batch_recipients(&m, "rewritten"), 2.0);
    assert_eq!(batch_recipients(&m, "forwarded"), 1.0);
    // A second batch naming the same contacts is served from the contact cache.
    let again = g.batch(Method::POST, MESSAGES, &mixed("new-app")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(g.calls(Op::GetContact), 2, "cached");
}

#[tokio::test]
async fn one_unresolvable_contact_refuses_the_whole_batch() {
    let g = InProc::start(&rules(&[("dispatch.send.contact_recipient", "rewrite")]));
    let body = batch(
        "new-app",
        vec![
            contact("alice"),
            contact("nobody"),
            identified("+15550199", "Ann"),
        ],
        json!({}),
    );
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    let (_, message, _) = r.api_error();
    assert!(
        message
            .contains("recipient_and_params[1].recipient.contact_id: contact nobody was not found"),
        "{message}"
    );
    assert!(!message.contains("[0]"), "{message}");
    assert_eq!(g.calls(Op::BatchSend), 0);
    assert_eq!(batch_recipients(&g.metrics(), "rejected"), 3.0);
}

#[tokio::test]
async fn shadow_forwards_every_recipient_and_counts_them() {
    let g = InProc::start(&rules(&[("dispatch.send.contact_recipient", "shadow")]));
    let r = g.batch(Method::POST, MESSAGES, &mixed("new-app")).await;
    // Forwarded unchanged: the Batch origin itself refuses contact_id on a DISPATCH app.
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("x-modegate-decision"), Some("shadow"));
    assert_eq!(
        r.header("x-modegate-shadow"),
        Some("dispatch.send.contact_recipient")
    );
    assert_eq!(g.calls(Op::BatchSend), 1);
    assert_eq!(batch_recipients(&g.metrics(), "forwarded"), 3.0);
}

#[tokio::test]
async fn a_conversation_app_batch_with_contacts_is_forwarded() {
    let g = InProc::start("[policy]\nwhat_if_mode = \"DISPATCH\"\n");
    let r = g.batch(Method::POST, MESSAGES, &mixed("legacy-app")).await;
    assert_eq!(
        verdict(&r),
        (StatusCode::OK, Some("forwarded"), None),
        "{:?}",
        r.body
    );
    assert_eq!(
        stored(&g, "legacy-app", "CONVERSATION_SOURCE").await.len(),
        3
    );
    // What DISPATCH mode would refuse is a migration blocker, like a single send's.
    let m = g.metrics();
    assert_eq!(
        sample(
            &m,
            "modegate_migration_blockers_total",
            &[("rule", "dispatch.send.contact_recipient")]
        ),
        1.0
    );
}

#[tokio::test]
async fn dispatch_only_batches_obey_the_override_rules() {
    // A DISPATCH_ONLY batch on a CONVERSATION app is processed as DISPATCH: contact_id refused.
    let g = InProc::start("");
    let body = batch(
        "legacy-app",
        vec![contact("alice")],
        json!({"processing_strategy": "DISPATCH_ONLY"}),
    );
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_rejected(&r, "dispatch.send.contact_recipient");
    assert!(r
        .api_error()
        .1
        .contains("processing_strategy DISPATCH_ONLY"));

    // send.dispatch_only_override refuses DISPATCH_ONLY for an app not allowed it.
    let g = InProc::start(&rules(&[("send.dispatch_only_override", "enforce")]));
    let body = batch(
        "legacy-app",
        vec![identified("+15550199", "Ann")],
        json!({"processing_strategy": "DISPATCH_ONLY"}),
    );
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_rejected(&r, "send.dispatch_only_override");
    assert_eq!(g.calls(Op::BatchSend), 0);

    // send.dispatch_only_metadata: per-recipient conversation_metadata counts.
    let mut with_meta = identified("+15550199", "Ann");
    with_meta["conversation_metadata"] = json!({"k": "v"});
    let body = batch(
        "legacy-app",
        vec![identified("+15550198", "Bo"), with_meta],
        json!({"processing_strategy": "DISPATCH_ONLY"}),
    );
    let g = InProc::start("");
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_rejected(&r, "send.dispatch_only_metadata");
    assert!(
        r.api_error()
            .1
            .starts_with("recipient_and_params[1].conversation_metadata:"),
        "{}",
        r.api_error().1
    );

    // Rewrite drops it from that recipient: forwarded, and the one recipient counts rewritten.
    let g = InProc::start(&rules(&[("send.dispatch_only_metadata", "rewrite")]));
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_eq!(
        verdict(&r),
        (
            StatusCode::OK,
            Some("rewritten"),
            Some("send.dispatch_only_metadata")
        ),
        "{:?}",
        r.body
    );
    let m = g.metrics();
    assert_eq!(batch_recipients(&m, "rewritten"), 1.0);
    assert_eq!(batch_recipients(&m, "forwarded"), 1.0);
    assert_eq!(stored(&g, "legacy-app", "DISPATCH_SOURCE").await.len(), 2);
}

#[tokio::test]
async fn recipients_range_is_checked_before_any_contact_lookup() {
    let g = InProc::start(&rules(&[("dispatch.send.contact_recipient", "rewrite")]));
    let r = g
        .batch(Method::POST, MESSAGES, &batch("new-app", vec![], json!({})))
        .await;
    assert_rejected(&r, "batch.recipients.range");
    assert!(r
        .api_error()
        .1
        .starts_with("recipient_and_params: 0 recipients; a batch takes 1 to 1000"));
    let many: Vec<Value> = (0..1001).map(|i| contact(&format!("c{i}"))).collect();
    let r = g
        .batch(Method::POST, MESSAGES, &batch("new-app", many, json!({})))
        .await;
    assert_rejected(&r, "batch.recipients.range");
    assert_eq!(
        g.calls(Op::GetContact),
        0,
        "no lookup for a batch refused by its size"
    );
    assert_eq!(g.calls(Op::BatchSend), 0);
    assert_eq!(batch_recipients(&g.metrics(), "rejected"), 1001.0);
    // 1000 is accepted.
    let full: Vec<Value> = (0..1000)
        .map(|i| identified(&format!("+1555{i:07}"), "x"))
        .collect();
    let r = g
        .batch(Method::POST, MESSAGES, &batch("new-app", full, json!({})))
        .await;
    assert_eq!(verdict(&r), (StatusCode::OK, Some("forwarded"), None));
    assert_eq!(stored(&g, "new-app", "DISPATCH_SOURCE").await.len(), 1000);
}

#[tokio::test]
async fn send_after_range_refuses_more_than_seven_days_or_no_timestamp() {
    let g = InProc::start("");
    let ahead = |days: u64| {
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(days * 86_400))
            .to_string()
    };
    let one = || vec![identified("+15550199", "Ann")];
    for bad in [json!(ahead(8)), json!("next tuesday"), json!(17)] {
        let r = g
            .batch(
                Method::POST,
                MESSAGES,
                &batch("new-app", one(), json!({ "send_after": bad })),
            )
            .await;
        assert_rejected(&r, "batch.send_after.range");
    }
    assert_eq!(g.calls(Op::BatchSend), 0);
    // Two days ahead is scheduled, rounded up to a 5-minute mark, and can be cancelled.
    let r = g
        .batch(
            Method::POST,
            MESSAGES,
            &batch(
                "new-app",
                one(),
                json!({ "send_after": ahead(2), "batch_metadata": {"campaign": "c1"} }),
            ),
        )
        .await;
    assert_eq!(
        verdict(&r),
        (StatusCode::OK, Some("forwarded"), None),
        "{:?}",
        r.body
    );
    let answer = r.json();
    let at = humantime::parse_rfc3339(answer["send_after"].as_str().expect("send_after"))
        .expect("rfc3339");
    assert_eq!(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after")
            .as_secs()
            % 300,
        0
    );
    let id = answer["batch_id"].as_str().expect("batch_id").to_string();
    let status = g.batch(Method::GET, &format!("/messages/{id}"), "").await;
    assert_eq!(status.json()["status"], "SCHEDULED");
    let cancel = g
        .batch(
            Method::DELETE,
            MESSAGES,
            &json!({"batch_id": id}).to_string(),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK);
    let listed = g
        .batch(
            Method::GET,
            "/messages?metadataKey=campaign&metadataValue=c1",
            "",
        )
        .await;
    assert_eq!(listed.json()[0]["status"], "CANCELLED", "{:?}", listed.body);
    assert!(
        stored(&g, "new-app", "DISPATCH_SOURCE").await.is_empty(),
        "a cancelled batch sends nothing"
    );
}

#[tokio::test]
async fn reserved_metadata_shadow_enforce_rewrite() {
    let mut r1 = identified("+15550199", "Ann");
    r1["message_metadata"] = json!({"_batch_id": "mine", "k": "v"});
    let body = batch(
        "new-app",
        vec![identified("+15550198", "Bo"), r1],
        json!({"conversation_metadata": {"_batch_id": "x"}}),
    );
    // Default shadow: forwarded unchanged, recorded.
    let g = InProc::start("");
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-modegate-decision"), Some("shadow"));
    assert_eq!(
        r.header("x-modegate-shadow"),
        Some("batch.reserved_metadata")
    );
    // Enforce: refused, naming both places.
    let g = InProc::start(&rules(&[("batch.reserved_metadata", "enforce")]));
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_rejected(&r, "batch.reserved_metadata");
    assert!(r.api_error().1.starts_with("conversation_metadata._batch_id, recipient_and_params[1].message_metadata._batch_id: _batch_id is reserved"), "{}", r.api_error().1);
    // Rewrite: dropped; the other keys stay.
    let g = InProc::start(&rules(&[("batch.reserved_metadata", "rewrite")]));
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_eq!(
        verdict(&r),
        (
            StatusCode::OK,
            Some("rewritten"),
            Some("batch.reserved_metadata")
        )
    );
    let stored = stored(&g, "new-app", "DISPATCH_SOURCE").await;
    let metadata: Vec<Value> = stored
        .iter()
        .filter_map(|m| serde_json::from_str(m["metadata"].as_str()?).ok())
        .collect();
    assert!(metadata.iter().any(|m| m["k"] == "v"), "{metadata:?}");
    assert!(
        metadata.iter().all(|m| m["_batch_id"] != "mine"),
        "{metadata:?}"
    );
    // The top-level map every recipient inherits changed: every recipient counts rewritten.
    let m = g.metrics();
    assert_eq!(batch_recipients(&m, "rewritten"), 2.0);
    assert_eq!(batch_recipients(&m, "forwarded"), 0.0);
    // Only one recipient's own map: that one.
    let mut own = identified("+15550199", "Ann");
    own["message_metadata"] = json!({"_batch_id": "mine"});
    let body = batch(
        "new-app",
        vec![identified("+15550198", "Bo"), own],
        json!({"message_metadata": {"k": "v"}}),
    );
    let r = g.batch(Method::POST, MESSAGES, &body).await;
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
    let m = g.metrics();
    assert_eq!(batch_recipients(&m, "rewritten"), 3.0);
    assert_eq!(batch_recipients(&m, "forwarded"), 1.0);
}

#[tokio::test]
async fn other_batch_operations_are_forwarded_with_their_operation_label() {
    let g = InProc::start("");
    let calls: [(Method, &str, Value, &str, StatusCode); 6] = [
        (
            Method::GET,
            "/messages/01UNKNOWN",
            json!(null),
            "batch_get",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/messages?metadataKey=campaign&metadataValue=x",
            json!(null),
            "batch_list",
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/messages",
            json!({"batch_id": "01UNKNOWN"}),
            "batch_cancel",
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/contacts",
            json!({"contacts": [{"channel_identities": [{"channel": "SMS", "identity": "+15550177"}], "language": "EN_US"}]}),
            "batch_contacts_create",
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/contacts",
            json!({"contact_ids": ["alice"]}),
            "batch_contacts_delete",
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/consents",
            json!({"app_id": "new-app", "consent_records": [{"identification": "+15550100", "consent_type": "OPT_OUT_ALL"}]}),
            "batch_consents",
            StatusCode::OK,
        ),
    ];
    for (method, path, body, op, status) in calls {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let r = g.batch(method, path, &body).await;
        assert_eq!(
            verdict(&r),
            (status, Some("forwarded"), None),
            "{op}: {:?}",
            r.body
        );
        let m = g.metrics();
        assert_eq!(
            sample(&m, "modegate_requests_total", &[("operation", op)]),
            1.0,
            "{op}"
        );
    }
    assert!(
        g.upstream_get("/contacts/alice").await.status == StatusCode::NOT_FOUND,
        "batch contacts delete reached the store"
    );
    // The Batch listener knows only the Batch API: a Conversation API path is no operation.
    let g = InProc::start("[policy]\nunrecognized_route = \"reject\"\n");
    let r = g.batch(Method::GET, "/apps", "").await;
    assert_rejected_status(&r, StatusCode::NOT_FOUND, "request.unrecognized_route");
    assert!(
        r.api_error().1.contains("no Batch API operation"),
        "{}",
        r.api_error().1
    );
    // And the Conversation listener does not take batch paths for batch operations.
    let r = g.post(MESSAGES, &mixed("new-app")).await;
    assert_ne!(r.header("x-modegate-decision"), Some("forwarded"));
    assert_eq!(g.calls(Op::BatchSend), 0);
}

fn assert_rejected_status(r: &Reply, status: StatusCode, rule: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.header("x-modegate-rule"), Some(rule));
    assert_eq!(r.api_error().2, [rule]);
}

/// A simulator with its Batch origin and a gateway with a Batch listener in front of both.
async fn batch_stack(
    extra: &str,
) -> (
    RunningSimulator,
    modegate::RunningApp,
    String,
    tokio::task::JoinHandle<()>,
    modegate::server::ShutdownTrigger,
) {
    let sim = spawn_simulator(demo_seed()).await;
    let listener = modegate::bind_batch_simulator("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let batch_origin = format!("http://{}", listener.local_addr().expect("addr"));
    let (trigger, shutdown) = modegate::server::shutdown_channel();
    let task = tokio::spawn(modegate::serve_batch_simulator(
        sim.simulator.clone(),
        listener,
        shutdown,
    ));
    let gw = spawn(config_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nbatch_listen = \"127.0.0.1:0\"\nmax_batch_body_bytes = 65536\n\
         [upstream]\nbase_url = \"{}\"\nbatch_base_url = \"{batch_origin}\"\n{extra}",
        sim.url()
    )))
    .await;
    (sim, gw, batch_origin, task, trigger)
}

async fn over(h2: bool, method: Method, url: &str, body: &str) -> Reply {
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.http2_only(h2);
    let client = builder.build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", DEMO_AUTH)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    assert_eq!(resp.version() == http::Version::HTTP_2, h2);
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

#[tokio::test]
async fn the_batch_listener_serves_http1_and_h2c_to_its_own_origin() {
    let (sim, gw, _origin, task, trigger) =
        batch_stack(&rules(&[("dispatch.send.contact_recipient", "rewrite")])).await;
    let batch_addr = gw.batch_addr.expect("batch listener");
    let url = format!("http://{batch_addr}/v1/projects/demo-project/messages");
    for h2 in [false, true] {
        // Rewrite: reaches the Batch origin fully rewritten (it refuses contact_id otherwise).
        let before = sim.simulator.calls(Op::BatchSend);
        let r = over(h2, Method::POST, &url, &mixed("new-app")).await;
        assert_eq!(
            verdict(&r),
            (
                StatusCode::OK,
                Some("rewritten"),
                Some("dispatch.send.contact_recipient")
            ),
            "h2={h2} {:?}",
            r.body
        );
        assert_eq!(sim.simulator.calls(Op::BatchSend), before + 1);
        // Enforce (another rule, same listener): never reaches it.
        let r = over(h2, Method::POST, &url, &batch("new-app", vec![], json!({}))).await;
        assert_rejected(&r, "batch.recipients.range");
        assert_eq!(sim.simulator.calls(Op::BatchSend), before + 1);
        // Other operations go to the Batch origin too.
        let r = over(h2, Method::GET, &format!("{url}/01UNKNOWN"), "").await;
        assert_eq!(
            verdict(&r),
            (StatusCode::NOT_FOUND, Some("forwarded"), None)
        );
    }
    // The Conversation listener still serves the Conversation API.
    let r = get(&format!(
        "http://{}/v1/projects/demo-project/apps/new-app",
        gw.proxy_addr
    ))
    .await;
    assert_eq!(verdict(&r), (StatusCode::OK, Some("forwarded"), None));
    // Bodies above server.max_batch_body_bytes: 413.
    let big: Vec<Value> = (0..1000)
        .map(|i| identified(&format!("+1555{i:07}"), "padding padding padding"))
        .collect();
    let r = over(false, Method::POST, &url, &batch("new-app", big, json!({}))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            "modegate_batch_recipients_total",
            &[("outcome", "rewritten")]
        ),
        4.0
    );
    gw.shutdown().await;
    trigger.trigger();
    let _ = task.await;
    sim.stop().await;
}

#[tokio::test]
async fn embedded_upstream_serves_the_batch_api_on_its_own_port() {
    let gw = spawn(config_toml(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nbatch_listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"embedded\"\n",
    ))
    .await;
    let batch_addr = gw.batch_addr.expect("batch listener");
    assert_ne!(batch_addr, gw.proxy_addr);
    let sim = gw.simulator.clone().expect("embedded");
    let r = send(
        Method::POST,
        &format!("http://{batch_addr}/v1/projects/p/consents"),
        &[
            ("authorization", "Basic c2ltOnNpbQ=="),
            ("content-type", "application/json"),
        ],
        "{}",
    )
    .await;
    assert_eq!(
        r.header("x-modegate-decision"),
        Some("forwarded"),
        "{:?}",
        r.body
    );
    assert_eq!(
        sim.calls(Op::BatchConsents),
        1,
        "answered by the embedded Batch origin"
    );
    gw.shutdown().await;
}
