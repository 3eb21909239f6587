//! The simulator's in-memory data: apps, contacts, conversations, messages, events, webhooks.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::seed::{parse_time, SeedProject};
use crate::policy::ProcessingMode;

/// Apps created at or after this instant default to DISPATCH (2025-04-16T00:00:00Z).
pub const DISPATCH_DEFAULT_SINCE_UNIX: u64 = 1_744_761_600;

/// Default mode for an app created at `created` without `processing_mode`.
pub fn default_mode(created: SystemTime) -> ProcessingMode {
    let since =
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(DISPATCH_DEFAULT_SINCE_UNIX);
    if created >= since {
        ProcessingMode::Dispatch
    } else {
        ProcessingMode::Conversation
    }
}

/// RFC 3339 with milliseconds, as the API prints times.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One stored message (MT or MO).
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Id.
    pub(crate) id: String,
    /// App.
    pub(crate) app_id: String,
    /// Mode the message was processed in (decides which source finds it).
    pub(crate) mode: ProcessingMode,
    /// `TO_CONTACT` or `TO_APP`.
    pub(crate) direction: &'static str,
    /// Channel identity it went to.
    pub(crate) channel: String,
    /// Identity on the channel.
    pub(crate) identity: String,
    /// Contact (CONVERSATION mode only).
    pub(crate) contact_id: String,
    /// Conversation (CONVERSATION mode only).
    pub(crate) conversation_id: String,
    /// The message content as sent.
    pub(crate) content: Value,
    /// `metadata` (settable with PATCH).
    pub(crate) metadata: String,
    /// Accept time.
    pub(crate) accept_time: SystemTime,
}

impl Message {
    /// The API representation.
    pub(crate) fn to_json(&self) -> Value {
        let content_key = if self.direction == "TO_APP" {
            "contact_message"
        } else {
            "app_message"
        };
        json!({
            "id": self.id,
            "direction": self.direction,
            content_key: self.content,
            "channel_identity": {"channel": self.channel, "identity": self.identity, "app_id": self.app_id},
            "conversation_id": self.conversation_id,
            "contact_id": self.contact_id,
            "metadata": self.metadata,
            "accept_time": rfc3339(self.accept_time),
            "sender_id": "",
            "processing_mode": self.mode.as_str(),
            "injected": false,
            "app_id": self.app_id,
        })
    }
}

/// One project's data. Resources other than messages are kept as their JSON representation.
#[derive(Debug, Default)]
pub(crate) struct Project {
    /// Apps by id.
    pub(crate) apps: BTreeMap<String, Map<String, Value>>,
    /// Contacts by id.
    pub(crate) contacts: BTreeMap<String, Map<String, Value>>,
    /// Conversations by id.
    pub(crate) conversations: BTreeMap<String, Map<String, Value>>,
    /// Messages, oldest first.
    pub(crate) messages: Vec<Message>,
    /// Events by id.
    pub(crate) events: BTreeMap<String, Map<String, Value>>,
    /// Webhooks by id.
    pub(crate) webhooks: BTreeMap<String, Map<String, Value>>,
    /// Project settings.
    pub(crate) settings: Map<String, Value>,
    /// Batches (Batch API) by id: their status objects.
    pub(crate) batches: BTreeMap<String, Map<String, Value>>,
    /// The messages of scheduled batches, stored when their `send_after` comes.
    pub(crate) scheduled: BTreeMap<String, (SystemTime, Vec<Message>)>,
}

/// Default retention policies (U5).
pub(crate) fn default_retention() -> (Value, Value) {
    (
        json!({"retention_type": "MESSAGE_EXPIRE_POLICY", "ttl_days": 180}),
        json!({"retention_type": "MESSAGE_EXPIRE_POLICY", "ttl_days": 0}),
    )
}

/// A new app's JSON with defaults filled in.
pub(crate) fn new_app(
    id: &str,
    display_name: &str,
    mode: ProcessingMode,
    channels: &[String],
) -> Map<String, Value> {
    let (retention, dispatch_retention) = default_retention();
    let credentials: Vec<Value> = channels
        .iter()
        .map(|c| json!({"channel": c, "static_bearer": {"claimed_identity": "", "token": ""}}))
        .collect();
    let Value::Object(map) = json!({
        "id": id,
        "display_name": display_name,
        "processing_mode": mode.as_str(),
        "retention_policy": retention,
        "dispatch_retention_policy": dispatch_retention,
        "channel_credentials": credentials,
        "conversation_metadata_report_view": "NONE",
        "rate_limits": {"inbound": 25, "outbound": 25, "webhooks": 25},
        "queue_stats": {"outbound_size": 0, "outbound_limit": 500000},
        "callback_settings": {"secret_for_overridden_callback_urls": ""},
        "smart_conversation": {"enabled": false},
    }) else {
        unreachable!("json! object literal")
    };
    map
}

/// The mode recorded on an app.
pub(crate) fn app_mode(app: &Map<String, Value>) -> ProcessingMode {
    app.get("processing_mode")
        .and_then(Value::as_str)
        .and_then(|m| m.parse().ok())
        .unwrap_or(ProcessingMode::Dispatch)
}

fn toml_to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Project {
    /// A project from its seed.
    pub(crate) fn from_seed(seed: &SeedProject) -> Project {
        let mut project = Project::default();
        for a in &seed.apps {
            let created = a
                .created
                .as_deref()
                .and_then(parse_time)
                .unwrap_or_else(SystemTime::now);
            let mode = a
                .processing_mode
                .as_deref()
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| default_mode(created));
            let channels = a
                .channels
                .clone()
                .unwrap_or_else(|| vec!["SMS".to_string()]);
            let mut app = new_app(
                &a.id,
                a.display_name.as_deref().unwrap_or(&a.id),
                mode,
                &channels,
            );
            if let Some(r) = &a.retention_policy {
                app.insert("retention_policy".into(), toml_to_json(r));
            }
            if let Some(r) = &a.dispatch_retention_policy {
                app.insert("dispatch_retention_policy".into(), toml_to_json(r));
            }
            project.apps.insert(a.id.clone(), app);
        }
        for c in &seed.contacts {
            let identities: Vec<Value> = c
                .channel_identities
                .iter()
                .map(|i| json!({"channel": i.channel, "identity": i.identity, "app_id": ""}))
                .collect();
            let Value::Object(contact) = json!({
                "id": c.id,
                "display_name": c.display_name.clone().unwrap_or_default(),
                "channel_identities": identities,
                "channel_priority": [],
                "email": "", "external_id": "", "metadata": "", "language": "EN_US",
            }) else {
                unreachable!("json! object literal")
            };
            project.contacts.insert(c.id.clone(), contact);
        }
        for w in &seed.webhooks {
            let id = crate::ids::ulid();
            let Value::Object(mut hook) = json!({
                "id": id, "app_id": w.app_id, "target": w.target, "target_type": "HTTP",
                "triggers": w.triggers,
            }) else {
                unreachable!("json! object literal")
            };
            if let Some(secret) = &w.secret {
                hook.insert("secret".into(), json!(secret));
            }
            project.webhooks.insert(id, hook);
        }
        project
    }

    /// The contact holding `channel`/`identity`, if any.
    pub(crate) fn contact_by_identity(&self, channel: &str, identity: &str) -> Option<String> {
        self.contacts.iter().find_map(|(id, c)| {
            let hit = c
                .get("channel_identities")
                .and_then(Value::as_array)
                .is_some_and(|ids| {
                    ids.iter().any(|i| {
                        i.get("channel").and_then(Value::as_str) == Some(channel)
                            && i.get("identity").and_then(Value::as_str) == Some(identity)
                    })
                });
            hit.then(|| id.clone())
        })
    }

    /// The active conversation of `app_id` with `contact_id`, created if there is none.
    pub(crate) fn conversation_for(&mut self, app_id: &str, contact_id: &str) -> String {
        let existing = self.conversations.iter().find_map(|(id, c)| {
            let same = c.get("app_id").and_then(Value::as_str) == Some(app_id)
                && c.get("contact_id").and_then(Value::as_str) == Some(contact_id)
                && c.get("active").and_then(Value::as_bool) == Some(true);
            same.then(|| id.clone())
        });
        if let Some(id) = existing {
            return id;
        }
        let id = crate::ids::ulid();
        self.conversations
            .insert(id.clone(), new_conversation(&id, app_id, contact_id));
        id
    }
}

/// A new conversation's JSON.
pub(crate) fn new_conversation(id: &str, app_id: &str, contact_id: &str) -> Map<String, Value> {
    let Value::Object(c) = json!({
        "id": id, "app_id": app_id, "contact_id": contact_id, "active": true,
        "active_channel": "CHANNEL_UNSPECIFIED", "metadata": "", "metadata_json": {},
        "last_received": rfc3339(SystemTime::now()), "correlation_id": "",
    }) else {
        unreachable!("json! object literal")
    };
    c
}
