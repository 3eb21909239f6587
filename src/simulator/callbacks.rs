//! Callback delivery: for an app with webhooks (from the seed or `POST /webhooks`), each send
//! produces `MESSAGE_SUBMIT` then `MESSAGE_DELIVERY`, and `POST /_simulator/inbound` an MO
//! (`MESSAGE_INBOUND`), POSTed to every webhook subscribed to the trigger.
//!
//! Payloads follow §13.1 of the API facts: the trigger key, `app_id`, `project_id`, times,
//! `message_metadata`, `correlation_id`; ids `""` and `processing_mode: "DISPATCH"` for a
//! DISPATCH app. A webhook with a `secret` gets the four signature headers (Unix-second
//! timestamp, fresh ULID nonce, HMAC over the exact bytes sent). Deliveries run in spawned
//! tasks, never on the send path; one webhook's callbacks go out in order; a 5xx, 429, timeout
//! or connection failure is retried with doubling backoff (the seed's `[callbacks]` knobs),
//! other answers are final.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};

use super::seed::CallbackKnobs;
use super::store::{rfc3339, Message, Project};
use crate::callbacks::signature;
use crate::policy::ProcessingMode;

/// One callback body for one webhook.
#[derive(Clone, Debug)]
pub(crate) struct Callback {
    target: String,
    secret: Option<String>,
    body: Bytes,
}

/// Counts of delivery attempts, for tests and `GET /_simulator/calls`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// POSTs made (retries included).
    pub attempts: AtomicU64,
    /// Callbacks the target accepted (2xx).
    pub delivered: AtomicU64,
    /// Callbacks given up on (a final non-2xx, or retries exhausted).
    pub failed: AtomicU64,
}

/// Sends callbacks.
pub(crate) struct Deliverer {
    client: Client<HttpConnector, Full<Bytes>>,
    knobs: CallbackKnobs,
    pub(crate) stats: Arc<DeliveryStats>,
}

impl Deliverer {
    pub(crate) fn new(knobs: CallbackKnobs) -> Deliverer {
        Deliverer {
            client: Client::builder(TokioExecutor::new()).build_http(),
            knobs,
            stats: Arc::default(),
        }
    }

    /// Sends each webhook's callbacks, in order, in a task of its own.
    pub(crate) fn spawn(&self, callbacks: Vec<Callback>) {
        if callbacks.is_empty() {
            return;
        }
        let mut by_target: Vec<Vec<Callback>> = Vec::new();
        for c in callbacks {
            match by_target.iter_mut().find(|v| v[0].target == c.target) {
                Some(v) => v.push(c),
                None => by_target.push(vec![c]),
            }
        }
        for queue in by_target {
            let client = self.client.clone();
            let knobs = self.knobs;
            let stats = self.stats.clone();
            tokio::spawn(async move {
                for c in queue {
                    deliver(&client, knobs, &stats, c).await;
                }
            });
        }
    }
}

/// One callback, retried on 5xx / 429 / timeout / connection failure.
async fn deliver(
    client: &Client<HttpConnector, Full<Bytes>>,
    knobs: CallbackKnobs,
    stats: &DeliveryStats,
    c: Callback,
) {
    let Ok(uri) = c.target.parse::<Uri>() else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let signed = c
        .secret
        .as_deref()
        .map(|s| signature::signed_headers(s.as_bytes(), &c.body));
    let mut pause = Duration::from_millis(knobs.retry_first_ms);
    for attempt in 0..=knobs.retries {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2);
        }
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let mut request = Request::post(uri.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(c.body.clone()))
            .unwrap_or_default();
        if let Some(headers) = &signed {
            for (name, value) in headers {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let sent = tokio::time::timeout(
            Duration::from_millis(knobs.timeout_ms),
            client.request(request),
        )
        .await;
        let retry = match sent {
            Ok(Ok(response)) if response.status().is_success() => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(response)) => {
                let s = response.status();
                s.is_server_error() || s.as_u16() == 429
            }
            Ok(Err(_)) | Err(_) => true,
        };
        if !retry {
            break;
        }
    }
    stats.failed.fetch_add(1, Ordering::Relaxed);
}

/// The webhooks of `app_id` subscribed to `trigger`: (target, secret).
fn subscribed(project: &Project, app_id: &str, trigger: &str) -> Vec<(String, Option<String>)> {
    project
        .webhooks
        .values()
        .filter(|w| w.get("app_id").and_then(Value::as_str) == Some(app_id))
        .filter(|w| w.get("target_type").and_then(Value::as_str) != Some("DISMISS"))
        .filter(|w| {
            w.get("triggers")
                .and_then(Value::as_array)
                .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(trigger)))
        })
        .filter_map(|w| {
            let target = w.get("target").and_then(Value::as_str)?.to_string();
            let secret = w
                .get("secret")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            Some((target, secret))
        })
        .collect()
}

/// The ids a callback carries: empty in DISPATCH.
fn ids(m: &Message) -> (&str, &str) {
    if m.mode == ProcessingMode::Dispatch {
        ("", "")
    } else {
        (&m.contact_id, &m.conversation_id)
    }
}

fn envelope(project_id: &str, m: &Message, key: &str, inner: Value, correlation_id: &str) -> Bytes {
    let now = rfc3339(SystemTime::now());
    let mut root = Map::new();
    root.insert("app_id".into(), json!(m.app_id));
    root.insert("accepted_time".into(), json!(now));
    root.insert("event_time".into(), json!(now));
    root.insert("project_id".into(), json!(project_id));
    root.insert(key.into(), inner);
    root.insert("message_metadata".into(), json!(m.metadata));
    root.insert("correlation_id".into(), json!(correlation_id));
    Bytes::from(Value::Object(root).to_string())
}

fn for_each(project: &Project, app_id: &str, trigger: &str, body: Bytes, out: &mut Vec<Callback>) {
    for (target, secret) in subscribed(project, app_id, trigger) {
        out.push(Callback {
            target,
            secret,
            body: body.clone(),
        });
    }
}

/// `MESSAGE_SUBMIT` and `MESSAGE_DELIVERY` for a message just sent.
pub(crate) fn for_send(
    project: &Project,
    project_id: &str,
    message_id: &str,
    correlation_id: &str,
) -> Vec<Callback> {
    let Some(m) = project.messages.iter().rev().find(|m| m.id == message_id) else {
        return Vec::new();
    };
    let (contact_id, conversation_id) = ids(m);
    let identity = json!({"channel": m.channel, "identity": m.identity, "app_id": m.app_id});
    let mut out = Vec::new();
    let submit = json!({
        "message_id": m.id, "conversation_id": conversation_id, "contact_id": contact_id,
        "channel_identity": identity, "submitted_message": m.content, "metadata": m.metadata,
        "processing_mode": m.mode.as_str(),
    });
    let body = envelope(
        project_id,
        m,
        "message_submit_notification",
        submit,
        correlation_id,
    );
    for_each(project, &m.app_id, "MESSAGE_SUBMIT", body, &mut out);
    let report = json!({
        "message_id": m.id, "conversation_id": conversation_id, "contact_id": contact_id,
        "channel_identity": identity, "status": "DELIVERED", "metadata": m.metadata,
        "processing_mode": m.mode.as_str(),
    });
    let body = envelope(
        project_id,
        m,
        "message_delivery_report",
        report,
        correlation_id,
    );
    for_each(project, &m.app_id, "MESSAGE_DELIVERY", body, &mut out);
    out
}

/// `MESSAGE_INBOUND` for an MO just stored.
pub(crate) fn for_inbound(project: &Project, project_id: &str, m: &Message) -> Vec<Callback> {
    let (contact_id, conversation_id) = ids(m);
    let message = json!({
        "id": m.id, "direction": "TO_APP", "contact_message": m.content,
        "channel_identity": {"channel": m.channel, "identity": m.identity, "app_id": m.app_id},
        "conversation_id": conversation_id, "contact_id": contact_id, "metadata": "",
        "accept_time": rfc3339(m.accept_time), "sender_id": "", "processing_mode": m.mode.as_str(),
        "injected": false,
    });
    let body = envelope(project_id, m, "message", message, "");
    let mut out = Vec::new();
    for_each(project, &m.app_id, "MESSAGE_INBOUND", body, &mut out);
    out
}
