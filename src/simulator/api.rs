//! The simulator's Conversation API handlers, one function per operation family.
//!
//! Behaviour follows the API reference; where the docs are silent it follows the "simulator
//! should" column of §11 (U1–U14) of the API facts.

use std::time::SystemTime;

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::store::{self, app_mode, new_app, Message, Project};
use crate::api_error::ApiError;
use crate::policy::evaluate::json_text;
use crate::policy::ProcessingMode;
use crate::proxy::classify::Operation;

/// One parsed call.
pub(crate) struct Call<'a> {
    pub(crate) operation: Operation,
    pub(crate) id: Option<&'a str>,
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
        Op::ListEvents => Ok(json!({
            "events": project.events.values().rev().cloned().collect::<Vec<_>>(),
            "next_page_token": "",
        })),
        Op::GetEvent => project
            .events
            .get(call.id())
            .map(|e| Value::Object(e.clone()))
            .ok_or_else(|| not_found(format!("event {} not found", call.id()))),
        Op::DeleteEvent => project
            .events
            .remove(call.id())
            .map(|_| json!({}))
            .ok_or_else(|| not_found(format!("event {} not found", call.id()))),
        Op::ListConversations | Op::RecentConversations => list_conversations(project, call),
        Op::CreateConversation => create_conversation(project, &call.body),
        Op::GetConversation
        | Op::UpdateConversation
        | Op::DeleteConversation
        | Op::StopConversation
        | Op::InjectMessage
        | Op::InjectEvent => conversation_by_id(project, call),
        Op::ListContacts => Ok(json!({
            "contacts": project.contacts.values().cloned().collect::<Vec<_>>(),
            "next_page_token": "",
        })),
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
            Ok(json!({"identities": [], "next_page_token": ""}))
        }
        Op::Settings => Ok(json!({})),
        Op::OauthToken | Op::Other => Err(not_found("no such endpoint")),
    }
}

fn app_missing(app_id: &str) -> ApiError {
    not_found(format!("app_id: app {app_id} not found"))
}

fn app<'p>(project: &'p Project, app_id: &str) -> Result<&'p Map<String, Value>, ApiError> {
    project.apps.get(app_id).ok_or_else(|| app_missing(app_id))
}

/// The `app_id` of a body, which must name an existing app.
fn body_app(project: &Project, body: &Value) -> Result<String, ApiError> {
    let app_id = json_text(body, "app_id").ok_or_else(|| invalid("app_id: required"))?;
    app(project, app_id)?;
    Ok(app_id.to_string())
}

fn check_retention(body: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(r) = body.get("retention_policy").filter(|v| !v.is_null()) {
        let kind = json_text(r, "retention_type").unwrap_or("MESSAGE_EXPIRE_POLICY");
        if !matches!(
            kind,
            "MESSAGE_EXPIRE_POLICY" | "CONVERSATION_EXPIRE_POLICY" | "PERSIST_RETENTION_POLICY"
        ) {
            return Err(invalid(format!(
                "retention_policy.retention_type: {kind} is not one of MESSAGE_EXPIRE_POLICY, CONVERSATION_EXPIRE_POLICY, PERSIST_RETENTION_POLICY"
            )));
        }
        if let Some(ttl) = r.get("ttl_days") {
            match int(ttl) {
                Some(d) if (1..=3650).contains(&d) => {}
                _ => {
                    return Err(invalid(format!(
                        "retention_policy.ttl_days: {ttl} is out of range; use 1 to 3650 days"
                    )))
                }
            }
        }
    }
    if let Some(r) = body
        .get("dispatch_retention_policy")
        .filter(|v| !v.is_null())
    {
        let kind = json_text(r, "retention_type").unwrap_or("MESSAGE_EXPIRE_POLICY");
        if kind != "MESSAGE_EXPIRE_POLICY" {
            return Err(invalid(format!(
                "dispatch_retention_policy.retention_type: {kind} is not supported; only MESSAGE_EXPIRE_POLICY"
            )));
        }
        if let Some(ttl) = r.get("ttl_days") {
            match int(ttl) {
                Some(d) if (0..=7).contains(&d) => {}
                _ => {
                    return Err(invalid(format!(
                        "dispatch_retention_policy.ttl_days: {ttl} is out of range; use 0 to 7 days"
                    )))
                }
            }
        }
    }
    if let Some(m) = body.get("processing_mode").filter(|v| !v.is_null()) {
        if m.as_str()
            .and_then(|s| s.parse::<ProcessingMode>().ok())
            .is_none()
        {
            return Err(invalid(format!(
                "processing_mode: {m} is not one of CONVERSATION, DISPATCH"
            )));
        }
    }
    Ok(())
}

/// Fills a retention object's absent fields with the defaults.
fn normalise_retention(app: &mut Map<String, Value>) {
    let (retention, dispatch) = store::default_retention();
    for (key, default) in [
        ("retention_policy", retention),
        ("dispatch_retention_policy", dispatch),
    ] {
        let mut merged = default.as_object().cloned().unwrap_or_default();
        if let Some(Value::Object(given)) = app.get(key) {
            for (k, v) in given {
                let v = if k == "ttl_days" {
                    int(v).map_or(v.clone(), Value::from)
                } else {
                    v.clone()
                };
                merged.insert(k.clone(), v);
            }
        }
        app.insert(key.to_string(), Value::Object(merged));
    }
}

fn create_app(project: &mut Project, body: &Value) -> Answer {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("body: expected a JSON object"))?;
    let display_name = body
        .get("display_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("display_name: required"))?;
    check_retention(body)?;
    let mode = body
        .get("processing_mode")
        .and_then(Value::as_str)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| store::default_mode(SystemTime::now()));
    let id = crate::ids::ulid();
    let mut app = new_app(&id, display_name, mode, &[]);
    for (k, v) in body {
        if !matches!(
            k.as_str(),
            "id" | "rate_limits" | "queue_stats" | "processing_mode"
        ) {
            app.insert(k.clone(), v.clone());
        }
    }
    normalise_retention(&mut app);
    project.apps.insert(id, app.clone());
    Ok(Value::Object(app))
}

fn update_app(project: &mut Project, call: &Call<'_>) -> Answer {
    let body = call
        .body
        .as_object()
        .ok_or_else(|| invalid("body: expected a JSON object"))?;
    check_retention(body)?;
    let mask: Option<Vec<&str>> = call
        .param("update_mask")
        .or_else(|| call.param("update_mask.paths"))
        .map(|m| m.split(',').map(str::trim).collect());
    let app = project
        .apps
        .get_mut(call.id())
        .ok_or_else(|| app_missing(call.id()))?;
    for (k, v) in body {
        if matches!(k.as_str(), "id" | "rate_limits" | "queue_stats") {
            continue;
        }
        let top = k.as_str();
        if mask
            .as_ref()
            .map_or(true, |m| m.iter().any(|p| p.split('.').next() == Some(top)))
        {
            app.insert(k.clone(), v.clone());
        }
    }
    normalise_retention(app);
    Ok(Value::Object(app.clone()))
}

/// Resolves the recipient of a send to (channel, identity, contact id).
fn recipient(
    project: &mut Project,
    body: &Value,
    mode: ProcessingMode,
) -> Result<(String, String, String), ApiError> {
    let r = body
        .get("recipient")
        .filter(|r| r.is_object())
        .ok_or_else(|| invalid("recipient: required"))?;
    let contact = json_text(r, "contact_id");
    let identified = r.get("identified_by");
    match (contact, identified) {
        (Some(_), Some(_)) => Err(invalid(
            "recipient: set exactly one of contact_id or identified_by",
        )),
        (None, None) => Err(invalid(
            "recipient: set contact_id or identified_by.channel_identities",
        )),
        (Some(_), None) if mode == ProcessingMode::Dispatch => Err(invalid(DISPATCH_CONTACT_FIX)),
        (Some(contact_id), None) => {
            let c = project.contacts.get(contact_id).ok_or_else(|| {
                not_found(format!(
                    "recipient.contact_id: contact {contact_id} not found"
                ))
            })?;
            let first = c
                .get("channel_identities")
                .and_then(Value::as_array)
                .and_then(|ids| ids.first())
                .ok_or_else(|| {
                    invalid(format!(
                        "recipient.contact_id: contact {contact_id} has no channel identities"
                    ))
                })?;
            Ok((
                json_text(first, "channel").unwrap_or("SMS").to_string(),
                json_text(first, "identity").unwrap_or("").to_string(),
                contact_id.to_string(),
            ))
        }
        (None, Some(by)) => {
            let ids = by
                .get("channel_identities")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| invalid("recipient.identified_by.channel_identities: at least one identity is required"))?;
            for (i, id) in ids.iter().enumerate() {
                if json_text(id, "channel").is_none() || json_text(id, "identity").is_none() {
                    return Err(invalid(format!(
                        "recipient.identified_by.channel_identities[{i}]: channel and identity are required"
                    )));
                }
            }
            let channel = json_text(&ids[0], "channel")
                .unwrap_or_default()
                .to_string();
            let identity = json_text(&ids[0], "identity")
                .unwrap_or_default()
                .to_string();
            let contact_id = if mode == ProcessingMode::Conversation {
                match project.contact_by_identity(&channel, &identity) {
                    Some(c) => c,
                    None => {
                        let id = crate::ids::ulid();
                        let Value::Object(c) = json!({
                            "id": id, "display_name": "", "channel_priority": [],
                            "channel_identities": [{"channel": channel, "identity": identity, "app_id": ""}],
                            "email": "", "external_id": "", "metadata": "", "language": "EN_US",
                        }) else {
                            unreachable!("json! object literal")
                        };
                        project.contacts.insert(id.clone(), c);
                        id
                    }
                }
            } else {
                String::new()
            };
            Ok((channel, identity, contact_id))
        }
    }
}

fn send_message(project: &mut Project, body: &Value) -> Answer {
    let app_id = body_app(project, body)?;
    let app_mode = app_mode(app(project, &app_id)?);
    let strategy = json_text(body, "processing_strategy").unwrap_or("DEFAULT");
    let mode = match strategy {
        "DEFAULT" => app_mode,
        "DISPATCH_ONLY" => {
            if app_mode == ProcessingMode::Conversation {
                for field in ["conversation_metadata", "correlation_id"] {
                    if body.get(field).is_some_and(|v| !v.is_null()) {
                        return Err(invalid(format!(
                            "{field}: not supported with processing_strategy DISPATCH_ONLY on an app in CONVERSATION processing mode; remove it or send with processing_strategy DEFAULT"
                        )));
                    }
                }
            }
            ProcessingMode::Dispatch
        }
        other => {
            return Err(invalid(format!(
                "processing_strategy: {other} is not one of DEFAULT, DISPATCH_ONLY"
            )))
        }
    };
    let content = body
        .get("message")
        .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
        .ok_or_else(|| invalid("message: required"))?;
    if let Some(c) = json_text(body, "correlation_id") {
        if c.chars().count() > 128 {
            return Err(invalid("correlation_id: at most 128 characters"));
        }
    }
    let (channel, identity, contact_id) = recipient(project, body, mode)?;
    let conversation_id = if mode == ProcessingMode::Conversation {
        project.conversation_for(&app_id, &contact_id)
    } else {
        String::new()
    };
    let now = SystemTime::now();
    let id = crate::ids::ulid();
    project.messages.push(Message {
        id: id.clone(),
        app_id,
        mode,
        direction: "TO_CONTACT",
        channel,
        identity,
        contact_id: if mode == ProcessingMode::Conversation {
            contact_id
        } else {
            String::new()
        },
        conversation_id,
        content,
        metadata: json_text(body, "message_metadata")
            .unwrap_or("")
            .to_string(),
        accept_time: now,
    });
    Ok(json!({"message_id": id, "accepted_time": store::rfc3339(now)}))
}

fn send_event(project: &mut Project, body: &Value) -> Answer {
    let app_id = body_app(project, body)?;
    let mode = app_mode(app(project, &app_id)?);
    let event = body
        .get("event")
        .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
        .ok_or_else(|| invalid("event: required"))?;
    let (channel, identity, contact_id) = recipient(project, body, mode)?;
    let conversation_id = if mode == ProcessingMode::Conversation {
        project.conversation_for(&app_id, &contact_id)
    } else {
        String::new()
    };
    let now = SystemTime::now();
    let id = crate::ids::ulid();
    let Value::Object(stored) = json!({
        "id": id, "direction": "TO_CONTACT", "app_event": event,
        "channel_identity": {"channel": channel, "identity": identity, "app_id": app_id},
        "contact_id": contact_id, "conversation_id": conversation_id,
        "accept_time": store::rfc3339(now), "processing_mode": mode.as_str(),
    }) else {
        unreachable!("json! object literal")
    };
    project.events.insert(id.clone(), stored);
    Ok(json!({"event_id": id, "accepted_time": store::rfc3339(now)}))
}

fn source_mode(value: Option<&str>, default: ProcessingMode) -> Result<ProcessingMode, ApiError> {
    match value {
        None | Some("") => Ok(default),
        Some("CONVERSATION_SOURCE") => Ok(ProcessingMode::Conversation),
        Some("DISPATCH_SOURCE") => Ok(ProcessingMode::Dispatch),
        Some(other) => Err(invalid(format!(
            "messages_source: {other} is not one of CONVERSATION_SOURCE, DISPATCH_SOURCE"
        ))),
    }
}

fn parse_time_param(call: &Call<'_>, name: &str) -> Result<Option<SystemTime>, ApiError> {
    call.param(name)
        .map(|v| {
            humantime::parse_rfc3339_weak(v)
                .map_err(|_| invalid(format!("{name}: {v:?} is not an RFC 3339 time")))
        })
        .transpose()
}

fn list_messages(project: &Project, call: &Call<'_>) -> Answer {
    let source = source_mode(call.param("messages_source"), ProcessingMode::Conversation)?;
    let app_id = call.param("app_id").filter(|a| !a.is_empty());
    let contact_id = call.param("contact_id").filter(|a| !a.is_empty());
    let conversation_id = call.param("conversation_id").filter(|a| !a.is_empty());
    if let Some(app_id) = app_id {
        let mode = app_mode(app(project, app_id)?);
        if mode == ProcessingMode::Dispatch {
            for (name, v) in [
                ("contact_id", contact_id),
                ("conversation_id", conversation_id),
            ] {
                if v.is_some() {
                    return Err(invalid(format!(
                        "{name}: not supported for apps in DISPATCH processing mode; filter by channel_identity instead"
                    )));
                }
            }
        }
    }
    if source == ProcessingMode::Dispatch {
        for (name, v) in [
            ("contact_id", contact_id),
            ("conversation_id", conversation_id),
        ] {
            if v.is_some() {
                return Err(invalid(format!(
                    "{name}: only supported with messages_source CONVERSATION_SOURCE"
                )));
            }
        }
    }
    let only_mo = call.param("only_recipient_originated");
    if only_mo.is_some() && source == ProcessingMode::Conversation {
        return Err(invalid(
            "only_recipient_originated: only supported with messages_source DISPATCH_SOURCE",
        ));
    }
    let only_mo = only_mo == Some("true");
    let start = parse_time_param(call, "start_time")?;
    let end = parse_time_param(call, "end_time")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s >= e {
            return Err(invalid("start_time: must be before end_time"));
        }
    }
    let direction = call.param("direction").filter(|d| !d.is_empty());
    if let Some(d) = direction {
        if !matches!(d, "TO_APP" | "TO_CONTACT" | "UNDEFINED_DIRECTION") {
            return Err(invalid(format!(
                "direction: {d} is not one of TO_APP, TO_CONTACT"
            )));
        }
    }
    let page_size = match call.param("page_size") {
        None => 10,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(invalid(format!(
                    "page_size: {s} is out of range; use 1 to 1000"
                )))
            }
        },
    };
    let offset = match call.param("page_token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid("page_token: not a token from a previous page"))?,
    };
    let channel = call.param("channel");
    let identity = call.param("channel_identity");
    let matching: Vec<&Message> = project
        .messages
        .iter()
        .rev()
        .filter(|m| m.mode == source)
        .filter(|m| app_id.map_or(true, |a| m.app_id == a))
        .filter(|m| contact_id.map_or(true, |c| m.contact_id == c))
        .filter(|m| conversation_id.map_or(true, |c| m.conversation_id == c))
        .filter(|m| channel.map_or(true, |c| m.channel == c))
        .filter(|m| identity.map_or(true, |i| m.identity == i))
        .filter(|m| direction.map_or(true, |d| d == "UNDEFINED_DIRECTION" || m.direction == d))
        .filter(|m| !only_mo || m.direction == "TO_APP")
        .filter(|m| start.map_or(true, |s| m.accept_time >= s))
        .filter(|m| end.map_or(true, |e| m.accept_time < e))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|m| m.to_json())
        .collect();
    let next = if offset + page_size < matching.len() {
        (offset + page_size).to_string()
    } else {
        String::new()
    };
    Ok(json!({"messages": page, "next_page_token": next}))
}

fn message_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let source = source_mode(call.param("messages_source"), ProcessingMode::Conversation)?;
    let id = call.id();
    let position = project
        .messages
        .iter()
        .position(|m| m.id == id && m.mode == source)
        .ok_or_else(|| not_found(format!("message {id} not found")))?;
    match call.operation {
        Operation::DeleteMessage => {
            project.messages.remove(position);
            Ok(json!({}))
        }
        Operation::UpdateMessage => {
            let metadata = call
                .body
                .get("metadata")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("metadata: required string"))?;
            let m = &mut project.messages[position];
            m.metadata = metadata.to_string();
            Ok(m.to_json())
        }
        _ => Ok(project.messages[position].to_json()),
    }
}

fn fetch_last_message(project: &Project, body: &Value) -> Answer {
    let app_id = json_text(body, "app_id");
    if let Some(a) = app_id {
        app(project, a)?;
    }
    let source = source_mode(json_text(body, "messages_source"), ProcessingMode::Dispatch)?;
    let identities = body.get("channel_identities").and_then(Value::as_array);
    let contacts = body.get("contact_ids").and_then(Value::as_array);
    let wanted: Vec<(bool, String, String)> = match (identities, contacts) {
        (Some(i), Some(c)) if !i.is_empty() && !c.is_empty() => {
            return Err(invalid(
                "contact_ids: set either contact_ids or channel_identities, not both",
            ))
        }
        (_, Some(c)) if !c.is_empty() => {
            if source == ProcessingMode::Dispatch {
                return Err(invalid(
                    "contact_ids: not supported with messages_source DISPATCH_SOURCE (the default here); use channel_identities or set messages_source CONVERSATION_SOURCE",
                ));
            }
            c.iter()
                .filter_map(Value::as_str)
                .map(|c| (true, c.to_string(), String::new()))
                .collect()
        }
        (Some(i), _) if !i.is_empty() => i
            .iter()
            .map(|v| {
                (
                    false,
                    json_text(v, "channel").unwrap_or("").to_string(),
                    json_text(v, "identity").unwrap_or("").to_string(),
                )
            })
            .collect(),
        _ => {
            return Err(invalid(
                "channel_identities: set channel_identities or contact_ids",
            ))
        }
    };
    let messages: Vec<Value> = wanted
        .iter()
        .filter_map(|(by_contact, a, b)| {
            project
                .messages
                .iter()
                .rev()
                .filter(|m| m.mode == source)
                .filter(|m| app_id.map_or(true, |x| m.app_id == x))
                .find(|m| {
                    if *by_contact {
                        m.contact_id == *a
                    } else {
                        m.channel == *a && m.identity == *b
                    }
                })
                .map(Message::to_json)
        })
        .collect();
    Ok(json!({"messages": messages, "next_page_token": ""}))
}

fn transcode(project: &Project, body: &Value) -> Answer {
    body_app(project, body)?;
    let message = body
        .get("app_message")
        .ok_or_else(|| invalid("app_message: required"))?;
    let channels = body
        .get("channels")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("channels: required"))?;
    let mut out = Map::new();
    for c in channels.iter().filter_map(Value::as_str) {
        out.insert(c.to_string(), Value::String(message.to_string()));
    }
    Ok(json!({"transcoded_message": out}))
}

fn reject_dispatch_app(project: &Project, app_id: &str, what: &str) -> Result<(), ApiError> {
    if app_mode(app(project, app_id)?) == ProcessingMode::Dispatch {
        return Err(invalid(format!(
            "app_id: {what} are not available for apps in DISPATCH processing mode; switch the app to CONVERSATION processing mode or address recipients by channel identity"
        )));
    }
    Ok(())
}

fn list_conversations(project: &Project, call: &Call<'_>) -> Answer {
    let app_id = call.param("app_id").filter(|a| !a.is_empty());
    if let Some(a) = app_id {
        reject_dispatch_app(project, a, "conversations")?;
    }
    let contact_id = call.param("contact_id").filter(|a| !a.is_empty());
    if app_id.is_none() && contact_id.is_none() && call.operation == Operation::ListConversations {
        return Err(invalid("app_id: set app_id or contact_id"));
    }
    let only_active = call.param("only_active") == Some("true");
    let conversations: Vec<Value> = project
        .conversations
        .values()
        .filter(|c| app_id.map_or(true, |a| c.get("app_id").and_then(Value::as_str) == Some(a)))
        .filter(|c| {
            contact_id.map_or(true, |x| {
                c.get("contact_id").and_then(Value::as_str) == Some(x)
            })
        })
        .filter(|c| !only_active || c.get("active").and_then(Value::as_bool) == Some(true))
        .cloned()
        .map(Value::Object)
        .collect();
    let total = conversations.len();
    if call.operation == Operation::RecentConversations {
        let items: Vec<Value> = conversations
            .into_iter()
            .map(|c| json!({"conversation": c, "last_message": Value::Null}))
            .collect();
        return Ok(json!({"conversations": items, "next_page_token": "", "total_size": total}));
    }
    Ok(json!({"conversations": conversations, "next_page_token": "", "total_size": total}))
}

fn create_conversation(project: &mut Project, body: &Value) -> Answer {
    let app_id = body_app(project, body)?;
    reject_dispatch_app(project, &app_id, "conversations")?;
    let contact_id =
        json_text(body, "contact_id").ok_or_else(|| invalid("contact_id: required"))?;
    if !project.contacts.contains_key(contact_id) {
        return Err(not_found(format!(
            "contact_id: contact {contact_id} not found"
        )));
    }
    let id = crate::ids::ulid();
    let mut c = store::new_conversation(&id, &app_id, contact_id);
    if let Some(m) = body.get("metadata") {
        c.insert("metadata".into(), m.clone());
    }
    project.conversations.insert(id, c.clone());
    Ok(Value::Object(c))
}

fn conversation_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let id = call.id();
    let c = project
        .conversations
        .get_mut(id)
        .ok_or_else(|| not_found(format!("conversation {id} not found")))?;
    match call.operation {
        Operation::DeleteConversation => {
            project.conversations.remove(id);
            Ok(json!({}))
        }
        Operation::StopConversation => {
            c.insert("active".into(), Value::Bool(false));
            Ok(json!({}))
        }
        Operation::UpdateConversation => {
            if let Some(body) = call.body.as_object() {
                for (k, v) in body {
                    if !matches!(k.as_str(), "id" | "app_id" | "contact_id") {
                        c.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(Value::Object(c.clone()))
        }
        Operation::InjectMessage | Operation::InjectEvent => Ok(json!({})),
        _ => Ok(Value::Object(c.clone())),
    }
}

fn create_contact(project: &mut Project, body: &Value) -> Answer {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("body: expected a JSON object"))?;
    let ids = body
        .get("channel_identities")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("channel_identities: at least one identity is required"))?;
    for (i, v) in ids.iter().enumerate() {
        if json_text(v, "channel").is_none() || json_text(v, "identity").is_none() {
            return Err(invalid(format!(
                "channel_identities[{i}]: channel and identity are required"
            )));
        }
    }
    let id = crate::ids::ulid();
    let Value::Object(mut c) = json!({
        "id": id, "display_name": "", "channel_priority": [], "email": "",
        "external_id": "", "metadata": "", "language": "EN_US",
    }) else {
        unreachable!("json! object literal")
    };
    for (k, v) in body {
        if k != "id" {
            c.insert(k.clone(), v.clone());
        }
    }
    project.contacts.insert(id, c.clone());
    Ok(Value::Object(c))
}

fn contact_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let id = call.id();
    let c = project
        .contacts
        .get_mut(id)
        .ok_or_else(|| not_found(format!("contact {id} not found")))?;
    match call.operation {
        Operation::DeleteContact => {
            project.contacts.remove(id);
            Ok(json!({}))
        }
        Operation::UpdateContact => {
            if let Some(body) = call.body.as_object() {
                for (k, v) in body {
                    if k != "id" {
                        c.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(Value::Object(c.clone()))
        }
        _ => Ok(Value::Object(c.clone())),
    }
}

fn merge_contacts(project: &mut Project, call: &Call<'_>) -> Answer {
    let destination = call.id();
    let source =
        json_text(&call.body, "source_id").ok_or_else(|| invalid("source_id: required"))?;
    if !project.contacts.contains_key(destination) {
        return Err(not_found(format!("contact {destination} not found")));
    }
    let src = project
        .contacts
        .remove(source)
        .ok_or_else(|| not_found(format!("source_id: contact {source} not found")))?;
    let moved = src
        .get("channel_identities")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let dest = project
        .contacts
        .get_mut(destination)
        .ok_or_else(|| not_found(format!("contact {destination} not found")))?;
    if let Some(Value::Array(ids)) = dest.get_mut("channel_identities") {
        ids.extend(moved);
    }
    Ok(Value::Object(dest.clone()))
}

fn create_webhook(project: &mut Project, body: &Value) -> Answer {
    let app_id = body_app(project, body)?;
    let target = json_text(body, "target").ok_or_else(|| invalid("target: required"))?;
    if target.chars().count() > 742 {
        return Err(invalid("target: at most 742 characters"));
    }
    let existing: Vec<_> = project
        .webhooks
        .values()
        .filter(|w| w.get("app_id").and_then(Value::as_str) == Some(app_id.as_str()))
        .collect();
    if existing.len() >= 5 {
        return Err(invalid("app_id: an app has at most 5 webhooks"));
    }
    if existing
        .iter()
        .any(|w| w.get("target").and_then(Value::as_str) == Some(target))
    {
        return Err(invalid(
            "target: a webhook with this target already exists for the app",
        ));
    }
    let id = crate::ids::ulid();
    let Value::Object(mut w) = json!({
        "id": id, "app_id": app_id, "target": target,
        "target_type": json_text(body, "target_type").unwrap_or("HTTP"),
        "triggers": body.get("triggers").cloned().unwrap_or_else(|| json!([])),
    }) else {
        unreachable!("json! object literal")
    };
    if let Some(s) = body.get("secret") {
        w.insert("secret".into(), s.clone());
    }
    project.webhooks.insert(id, w.clone());
    Ok(Value::Object(w))
}

fn webhook_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let id = call.id();
    let w = project
        .webhooks
        .get_mut(id)
        .ok_or_else(|| not_found(format!("webhook {id} not found")))?;
    match call.operation {
        Operation::DeleteWebhook => {
            project.webhooks.remove(id);
            Ok(json!({}))
        }
        Operation::UpdateWebhook => {
            if let Some(body) = call.body.as_object() {
                for (k, v) in body {
                    if !matches!(k.as_str(), "id" | "app_id") {
                        w.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(Value::Object(w.clone()))
        }
        _ => Ok(Value::Object(w.clone())),
    }
}
