//! The simulator's Conversation API handlers, one module per resource family: [`apps`],
//! [`messages`] (and events), [`conversations`], [`contacts`], [`webhooks`]; and the Batch
//! API's ([`batch`]), served on its own origin.
//!
//! Behaviour follows the API reference; where the docs are silent it follows the "simulator
//! should" column of §11 (U1–U14) of the API facts.

use http::StatusCode;
use serde_json::{json, Map, Value};

mod apps;
pub(crate) mod batch;
mod contacts;
mod conversations;
mod messages;
mod webhooks;

use apps::*;
use contacts::*;
use conversations::*;
use messages::*;
use webhooks::*;

pub(crate) use messages::inbound;

use super::store::Project;
use crate::api_error::ApiError;
use crate::domain::Operation;
use crate::policy::ProcessingMode;

/// One parsed call.
pub(crate) struct Call<'a> {
    pub(crate) operation: Operation,
    pub(crate) id: Option<&'a str>,
    /// Path segments after the operation's fixed part (the consents sub-resource).
    pub(crate) tail: &'a [String],
    pub(crate) method: &'a str,
    pub(crate) query: &'a [(String, String)],
    pub(crate) body: Value,
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn id(&self) -> &str {
        self.id.unwrap_or("")
    }
}

type Answer = Result<Value, ApiError>;

/// The non-empty string at `key` of a JSON object (bodies reach the handlers with proto-spelled
/// keys; see `lenient`).
fn json_text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_argument(message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, message)
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

const DISPATCH_CONTACT_FIX: &str =
    "recipient.contact_id: not supported for apps in DISPATCH processing mode; use recipient.identified_by.channel_identities";

/// Routes one call to its handler.
pub(crate) fn handle(project: &mut Project, call: &Call<'_>) -> Answer {
    use Operation as Op;
    match call.operation {
        Op::ListApps => Ok(json!({"apps": project.apps.values().cloned().collect::<Vec<_>>()})),
        Op::CreateApp => create_app(project, &call.body),
        Op::GetApp => app(project, call.id()).map(|a| Value::Object(a.clone())),
        Op::UpdateApp => update_app(project, call),
        Op::DeleteApp => project
            .apps
            .remove(call.id())
            .map(|_| json!({}))
            .ok_or_else(|| app_missing(call.id())),
        Op::SendMessage => send_message(project, &call.body),
        Op::ListMessages => list_messages(project, call),
        Op::GetMessage | Op::UpdateMessage | Op::DeleteMessage => message_by_id(project, call),
        Op::FetchLastMessage => fetch_last_message(project, &call.body),
        Op::TranscodeMessage => transcode(project, &call.body),
        Op::SendEvent => send_event(project, &call.body),
        Op::ListEvents => {
            // Filters the API documents for the list: contact and conversation.
            let matches = |e: &Map<String, Value>, field: &str| {
                call.param(field)
                    .filter(|v| !v.is_empty())
                    .is_none_or(|v| e.get(field).and_then(Value::as_str) == Some(v))
            };
            let events: Vec<Value> = project
                .events
                .values()
                .rev()
                .filter(|e| matches(e, "contact_id") && matches(e, "conversation_id"))
                .cloned()
                .map(Value::Object)
                .collect();
            Ok(json!({"events": events, "next_page_token": ""}))
        }
        Op::GetEvent => object_by_id(
            &mut project.events,
            "event",
            call.id(),
            ById::Get,
            &call.body,
            &[],
        ),
        Op::DeleteEvent => object_by_id(
            &mut project.events,
            "event",
            call.id(),
            ById::Delete,
            &call.body,
            &[],
        ),
        Op::ListConversations | Op::RecentConversations => list_conversations(project, call),
        Op::CreateConversation => create_conversation(project, &call.body),
        Op::GetConversation
        | Op::UpdateConversation
        | Op::DeleteConversation
        | Op::StopConversation
        | Op::InjectMessage
        | Op::InjectEvent => conversation_by_id(project, call),
        Op::ListContacts => list_contacts(project, call),
        Op::CreateContact => create_contact(project, &call.body),
        Op::GetContact | Op::UpdateContact | Op::DeleteContact => contact_by_id(project, call),
        Op::MergeContact => merge_contacts(project, call),
        Op::IdentityConflicts => Ok(json!({"conflicts": [], "next_page_token": ""})),
        Op::GetChannelProfile => {
            body_app(project, &call.body)?;
            Ok(json!({"profile_name": "Simulated Profile"}))
        }
        Op::QueryCapability => {
            let app_id = body_app(project, &call.body)?;
            Ok(json!({
                "app_id": app_id,
                "recipient": call.body.get("recipient").cloned().unwrap_or(Value::Null),
                "request_id": json_text(&call.body, "request_id").map_or_else(crate::ids::ulid, str::to_string),
            }))
        }
        Op::ListAppWebhooks => {
            app(project, call.id())?;
            let hooks: Vec<Value> = project
                .webhooks
                .values()
                .filter(|w| w.get("app_id").and_then(Value::as_str) == call.id)
                .cloned()
                .map(Value::Object)
                .collect();
            Ok(json!({"webhooks": hooks}))
        }
        Op::CreateWebhook => create_webhook(project, &call.body),
        Op::GetWebhook | Op::UpdateWebhook | Op::DeleteWebhook => webhook_by_id(project, call),
        Op::ListConsents => {
            app(project, call.id())?;
            // consents/lists/{list} lists identities; consents/identities/{identity} lists the
            // lists an identity is on; consents/audit-records/{identity} its audit trail.
            Ok(match call.tail.first().map(String::as_str) {
                Some("audit-records") => json!({"audit_records": [], "next_page_token": ""}),
                Some("identities") => json!({"lists": []}),
                _ => json!({"identities": [], "next_page_token": ""}),
            })
        }
        Op::Settings => settings(project, call),
        // The Batch API is served on its own origin (`batch`); callbacks are the gateway's.
        Op::BatchSend
        | Op::BatchCancel
        | Op::BatchGet
        | Op::BatchList
        | Op::BatchContactsCreate
        | Op::BatchContactsDelete
        | Op::BatchConsents
        | Op::OauthToken
        | Op::Callback
        | Op::Other => Err(not_found("no such endpoint")),
    }
}

/// Project settings: kept, merged on write, cleared on delete.
fn settings(project: &mut Project, call: &Call<'_>) -> Answer {
    match call.method {
        "GET" => {}
        "DELETE" => project.settings.clear(),
        _ => {
            if let Some(fields) = call.body.as_object() {
                for (k, v) in fields {
                    project.settings.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Ok(Value::Object(project.settings.clone()))
}

/// What a by-id call does to a resource kept as a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ById {
    Get,
    Update,
    Delete,
}

/// The by-id verbs every object resource shares: 404 naming the resource when absent; get;
/// update, merging the body's fields except `immutable` ones; delete.
fn object_by_id(
    map: &mut std::collections::BTreeMap<String, Map<String, Value>>,
    what: &str,
    id: &str,
    verb: ById,
    body: &Value,
    immutable: &[&str],
) -> Answer {
    let object = map
        .get_mut(id)
        .ok_or_else(|| not_found(format!("{what} {id} not found")))?;
    match verb {
        ById::Get => Ok(Value::Object(object.clone())),
        ById::Update => {
            if let Some(fields) = body.as_object() {
                for (k, v) in fields {
                    if !immutable.contains(&k.as_str()) {
                        object.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(Value::Object(object.clone()))
        }
        ById::Delete => {
            map.remove(id);
            Ok(json!({}))
        }
    }
}
