//! The simulator delivers callbacks, through the gateway's callback listener, to the built-in
//! consumer: sends produce MESSAGE_SUBMIT and MESSAGE_DELIVERY, `POST /_simulator/inbound` an
//! MO; signed when the webhook has a secret; DISPATCH apps' ids arrive as pseudo ids the
//! consumer can verify, CONVERSATION apps' as the real ids; failed deliveries are retried.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use modegate::callbacks::consumer::{Consumer, Received};
use modegate::callbacks::signature::Secrets;
use modegate::pseudo_ids::{is_pseudo, PseudoIds};
use modegate::simulator::Seed;
use modegate::RunningApp;
use support::*;

const SECRET: &str = "loop-secret";
const ID_KEY: &str = "abababababababababababababababababababababababababababababababab";
const PROJECT: &str = "e2df3a34-a71b-4448-9db5-a8d2baad28e4";
const DISPATCH_APP: &str = "01HDISPATCH000000000000000";
const CONVERSATION_APP: &str = "01HCONVERSAT10N00000000000";

struct Loop {
    consumer: Arc<Consumer>,
    gateway: RunningApp,
    consumer_task: tokio::task::JoinHandle<()>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.consumer_task.abort();
    }
}

/// The built-in consumer on a socket, behind a gateway whose webhook verifies and fills ids.
async fn consumer_behind_gateway() -> Loop {
    consumer_behind_gateway_to("http://127.0.0.1:9").await
}

/// The same, with the gateway's proxy in front of `upstream`.
async fn consumer_behind_gateway_to(upstream: &str) -> Loop {
    let consumer = Consumer::new(Some(Secrets::parse(SECRET).expect("secret")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_trigger, shutdown) = modegate::server::shutdown_channel();
    let service = consumer.clone().service();
    let consumer_task = tokio::spawn(async move {
        let _keep = _trigger;
        modegate::server::serve(
            "consumer",
            listener,
            move |_: modegate::server::ConnectionInfo| service.clone(),
            modegate::server::ConnectionSettings::default(),
            shutdown,
        )
        .await;
    });
    let (secret_env, key_env) = (
        format!("MODEGATE_LOOP_SECRET_{}", std::process::id()),
        format!("MODEGATE_LOOP_KEY_{}", std::process::id()),
    );
    std::env::set_var(&secret_env, SECRET);
    std::env::set_var(&key_env, ID_KEY);
    let gateway = spawn(config_toml(&format!(
        "[upstream]\nbase_url = \"{upstream}\"\n[callbacks]\nlisten = \"127.0.0.1:0\"\n\
         id_key_env = \"{key_env}\"\n[[callbacks.webhook]]\npath = \"/sinch\"\n\
         target = \"http://{addr}/events\"\nsecret_env = \"{secret_env}\"\nfill_ids = \"pseudo\"\n"
    )))
    .await;
    Loop {
        consumer,
        gateway,
        consumer_task,
    }
}

fn seed(webhook_target: &str, extra: &str) -> Seed {
    Seed::parse(&format!(
        "{extra}\n[[credentials]]\nkey_id = \"k\"\nkey_secret = \"s\"\n\
         [[projects]]\nid = \"{PROJECT}\"\n\
         [[projects.apps]]\nid = \"{DISPATCH_APP}\"\nprocessing_mode = \"DISPATCH\"\n\
         [[projects.apps]]\nid = \"{CONVERSATION_APP}\"\nprocessing_mode = \"CONVERSATION\"\n\
         [[projects.webhooks]]\napp_id = \"{DISPATCH_APP}\"\ntarget = \"{webhook_target}\"\nsecret = \"{SECRET}\"\n\
         [[projects.webhooks]]\napp_id = \"{CONVERSATION_APP}\"\ntarget = \"{webhook_target}\"\nsecret = \"{SECRET}\"\n"
    ))
    .expect("seed")
}

const BASIC: &str = "Basic azpz"; // k:s

fn send_body(app: &str, identity: &str) -> String {
    format!(
        r#"{{"app_id":"{app}","recipient":{{"identified_by":{{"channel_identities":[{{"channel":"SMS","identity":"{identity}"}}]}}}},"message":{{"text_message":{{"text":"hello"}}}},"correlation_id":"c-1"}}"#
    )
}

async fn received(consumer: &Consumer, n: usize) -> Vec<Received> {
    assert_eventually(
        || consumer.received().len() >= n,
        Duration::from_secs(10),
        "callbacks arrive",
    )
    .await;
    consumer.received()
}

fn trigger(r: &Received) -> &'static str {
    let v = r.json();
    for (key, name) in [
        ("message", "MESSAGE_INBOUND"),
        ("message_submit_notification", "MESSAGE_SUBMIT"),
        ("message_delivery_report", "MESSAGE_DELIVERY"),
    ] {
        if v.get(key).is_some() {
            return name;
        }
    }
    "other"
}

#[tokio::test]
async fn a_dispatch_send_and_mo_reach_the_consumer_signed_with_pseudo_ids() {
    let l = consumer_behind_gateway().await;
    let hook = format!(
        "http://{}/sinch",
        l.gateway.callbacks_addr.expect("listener")
    );
    let sim = spawn_simulator(seed(&hook, "")).await;
    let base = format!("{}/v1/projects/{PROJECT}", sim.url());
    let r = send(
        Method::POST,
        &format!("{base}/messages:send"),
        &[("authorization", BASIC)],
        &send_body(DISPATCH_APP, "46700000001"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let message_id = r.json()["message_id"].as_str().expect("id").to_string();
    let got = received(&l.consumer, 2).await;
    assert_eq!(
        got.iter().map(trigger).collect::<Vec<_>>(),
        ["MESSAGE_SUBMIT", "MESSAGE_DELIVERY"]
    );
    let ids = PseudoIds::from_keys(ID_KEY).expect("keys");
    for r in &got {
        assert_eq!(r.verified, Some(true), "re-signed by the gateway");
        let v = r.json();
        let inner = v
            .as_object()
            .and_then(|o| o.values().find(|x| x.get("processing_mode").is_some()))
            .expect("trigger object");
        assert_eq!(inner["processing_mode"], "DISPATCH");
        assert_eq!(inner["message_id"], message_id.as_str());
        let contact = inner["contact_id"].as_str().expect("contact_id");
        assert!(is_pseudo(contact), "{contact}");
        assert_eq!(ids.open(contact).expect("opens").1.identity, "46700000001");
        assert_eq!(v["correlation_id"], "c-1");
    }

    let mo = send(
        Method::POST,
        &format!("{}/_simulator/inbound", sim.url()),
        &[],
        &format!(
            r#"{{"project_id":"{PROJECT}","app_id":"{DISPATCH_APP}","channel":"SMS","identity":"46700000001","text":"reply please"}}"#
        ),
    )
    .await;
    assert_eq!(mo.status, StatusCode::OK, "{mo:?}");
    assert_eq!(mo.json()["callbacks"], 1);
    let got = received(&l.consumer, 3).await;
    let inbound = got[2].json();
    assert_eq!(trigger(&got[2]), "MESSAGE_INBOUND");
    assert_eq!(
        inbound["message"]["contact_message"]["text_message"]["text"],
        "reply please"
    );
    // The MO's pseudo contact id is the one the send's receipts carried: one thread.
    assert_eq!(
        inbound["message"]["contact_id"],
        got[0].json()["message_submit_notification"]["contact_id"]
    );
    assert_eq!(
        sim.simulator.callback_stats().failed.load(Ordering::SeqCst),
        0
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_conversation_app_keeps_its_real_ids() {
    let l = consumer_behind_gateway().await;
    let hook = format!(
        "http://{}/sinch",
        l.gateway.callbacks_addr.expect("listener")
    );
    let sim = spawn_simulator(seed(&hook, "")).await;
    let r = send(
        Method::POST,
        &format!("{}/v1/projects/{PROJECT}/messages:send", sim.url()),
        &[("authorization", BASIC)],
        &send_body(CONVERSATION_APP, "46700000009"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let got = received(&l.consumer, 2).await;
    let report = got[1].json();
    let inner = &report["message_delivery_report"];
    assert_eq!(inner["processing_mode"], "CONVERSATION");
    let contact = inner["contact_id"].as_str().expect("contact_id");
    assert!(!contact.is_empty() && !is_pseudo(contact), "{contact}");
    assert_eq!(got[1].verified, Some(true));
    sim.stop().await;
}

#[tokio::test]
async fn webhooks_created_by_api_get_callbacks_retried_after_5xx() {
    let answers = Arc::new(AtomicUsize::new(0));
    let target = {
        let answers = answers.clone();
        Upstream::start(Arc::new(move |_| {
            let status = if answers.fetch_add(1, Ordering::SeqCst) < 2 {
                503
            } else {
                200
            };
            Box::pin(async move {
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .expect("response")
            })
        }))
        .await
    };
    let seed = Seed::parse(&format!(
        "[callbacks]\nretries = 3\nretry_first_ms = 10\n\
         [[credentials]]\nkey_id = \"k\"\nkey_secret = \"s\"\n\
         [[projects]]\nid = \"{PROJECT}\"\n[[projects.apps]]\nid = \"{DISPATCH_APP}\"\nprocessing_mode = \"DISPATCH\"\n"
    ))
    .expect("seed");
    let sim = spawn_simulator(seed).await;
    let base = format!("{}/v1/projects/{PROJECT}", sim.url());
    let created = send(
        Method::POST,
        &format!("{base}/webhooks"),
        &[("authorization", BASIC)],
        &format!(
            r#"{{"app_id":"{DISPATCH_APP}","target":"{}/hook","target_type":"HTTP","triggers":["MESSAGE_DELIVERY"]}}"#,
            target.url()
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{created:?}");
    let r = send(
        Method::POST,
        &format!("{base}/messages:send"),
        &[("authorization", BASIC)],
        &send_body(DISPATCH_APP, "46700000002"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let stats = sim.simulator.clone();
    assert_eventually(
        || stats.callback_stats().delivered.load(Ordering::SeqCst) == 1,
        Duration::from_secs(10),
        "delivered after two 503s",
    )
    .await;
    let seen = target.seen();
    assert_eq!(seen.len(), 3, "two failures, then success");
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    assert!(
        seen[0].headers.get("x-sinch-webhook-signature").is_none(),
        "no secret, no signature"
    );
    let v: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("json");
    assert_eq!(v["message_delivery_report"]["contact_id"], "");
    assert_eq!(v["message_delivery_report"]["conversation_id"], "");
    assert_eq!(v["message_delivery_report"]["status"], "DELIVERED");
    sim.stop().await;
}

#[tokio::test]
async fn a_webhook_that_never_answers_does_not_hold_up_the_send() {
    let target = Upstream::start(Arc::new(|_| Box::pin(std::future::pending()))).await;
    let sim = spawn_simulator(seed(&format!("{}/hook", target.url()), "")).await;
    let r = send(
        Method::POST,
        &format!("{}/v1/projects/{PROJECT}/messages:send", sim.url()),
        &[("authorization", BASIC)],
        &send_body(DISPATCH_APP, "46700000003"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eventually(
        || !target.seen().is_empty(),
        Duration::from_secs(10),
        "the delivery is under way",
    )
    .await;
    let stats = sim.simulator.callback_stats();
    assert_eq!(stats.delivered.load(Ordering::SeqCst), 0);
    sim.stop().await;
}

/// The whole legacy loop on a DISPATCH app, through the gateway in both directions: an MO
/// reaches a CONVERSATION-era consumer with a pseudo contact id; the reply it sends with that
/// `contact_id` goes out addressed by identity (no contact lookup); listing messages by that
/// `contact_id` returns the thread; a tampered pseudo id is refused.
#[tokio::test]
async fn a_legacy_client_replies_and_lists_by_the_pseudo_contact_id() {
    let sim = spawn_simulator(seed("http://127.0.0.1:9/unused", "")).await;
    let l = consumer_behind_gateway_to(&sim.url()).await;
    let base = format!("{}/v1/projects/{PROJECT}", sim.url());
    let hook = format!(
        "http://{}/sinch",
        l.gateway.callbacks_addr.expect("listener")
    );
    let created = send(
        Method::POST,
        &format!("{base}/webhooks"),
        &[("authorization", BASIC)],
        &format!(
            r#"{{"app_id":"{DISPATCH_APP}","target":"{hook}","target_type":"HTTP","secret":"{SECRET}","triggers":["MESSAGE_INBOUND"]}}"#
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{created:?}");
    let mo = send(
        Method::POST,
        &format!("{}/_simulator/inbound", sim.url()),
        &[],
        &format!(
            r#"{{"project_id":"{PROJECT}","app_id":"{DISPATCH_APP}","channel":"SMS","identity":"46700000009","text":"hi there"}}"#
        ),
    )
    .await;
    assert_eq!(mo.status, StatusCode::OK, "{mo:?}");
    let inbound = received(&l.consumer, 1)
        .await
        .into_iter()
        .find(|r| trigger(r) == "MESSAGE_INBOUND")
        .expect("MO");
    let contact = inbound.json()["message"]["contact_id"]
        .as_str()
        .expect("contact_id")
        .to_string();
    assert!(is_pseudo(&contact), "{contact}");

    // The consumer replies the CONVERSATION way, through the gateway.
    let gw = format!("http://{}/v1/projects/{PROJECT}", l.gateway.proxy_addr);
    let reply = format!(
        r#"{{"app_id":"{DISPATCH_APP}","recipient":{{"contact_id":"{contact}"}},"message":{{"text_message":{{"text":"answer"}}}}}}"#
    );
    let r = send(
        Method::POST,
        &format!("{gw}/messages:send"),
        &[
            ("authorization", BASIC),
            ("content-type", "application/json"),
        ],
        &reply,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
    assert_eq!(r.header("x-modegate-rule"), Some("dispatch.pseudo_ids"));

    // Listing by that contact_id returns the thread: the MO and the reply.
    let list = send(
        Method::GET,
        &format!("{gw}/messages?app_id={DISPATCH_APP}&contact_id={contact}"),
        &[("authorization", BASIC)],
        "",
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{list:?}");
    let messages = list.json()["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(messages.len(), 2, "{:?}", list.json());
    assert!(messages.iter().all(|m| m["processing_mode"] == "DISPATCH"));

    // A pseudo id changed by one character is refused, and nothing is sent.
    let mut tampered = contact.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = send(
        Method::POST,
        &format!("{gw}/messages:send"),
        &[
            ("authorization", BASIC),
            ("content-type", "application/json"),
        ],
        &reply.replace(&contact, &tampered),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.header("x-modegate-rule"), Some("dispatch.pseudo_ids"));
    sim.stop().await;
}
