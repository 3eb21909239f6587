//! Messages and events: send, list, by id, fetch-last-message, transcode.

use std::time::SystemTime;

use crate::simulator::store::{self, app_mode, Message};

use super::*;

/// Resolves the recipient of a send to (channel, identity, contact id).
pub(super) fn recipient(
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

pub(super) fn send_message(project: &mut Project, body: &Value) -> Answer {
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
    let (channel, identity, contact_id, conversation_id) = addressed(project, &app_id, body, mode)?;
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

/// An MO from `identity` on `channel` to `app_id`, stored as a `TO_APP` message in the app's
/// mode (in CONVERSATION mode with its contact and conversation, created when new).
pub(crate) fn inbound(
    project: &mut Project,
    app_id: &str,
    channel: &str,
    identity: &str,
    text: &str,
) -> Result<Message, ApiError> {
    let mode = app_mode(app(project, app_id)?);
    let body = json!({"recipient": {"identified_by": {"channel_identities": [
        {"channel": channel, "identity": identity}
    ]}}});
    let (channel, identity, contact_id, conversation_id) = addressed(project, app_id, &body, mode)?;
    let message = Message {
        id: crate::ids::ulid(),
        app_id: app_id.to_string(),
        mode,
        direction: "TO_APP",
        channel,
        identity,
        contact_id,
        conversation_id,
        content: json!({"text_message": {"text": text}}),
        metadata: String::new(),
        accept_time: SystemTime::now(),
    };
    project.messages.push(message.clone());
    Ok(message)
}

/// Who a send addresses: channel, identity and contact, and the conversation it joins (none in
/// DISPATCH mode).
pub(super) fn addressed(
    project: &mut Project,
    app_id: &str,
    body: &Value,
    mode: ProcessingMode,
) -> Result<(String, String, String, String), ApiError> {
    let (channel, identity, contact_id) = recipient(project, body, mode)?;
    let conversation_id = if mode == ProcessingMode::Conversation {
        project.conversation_for(app_id, &contact_id)
    } else {
        String::new()
    };
    Ok((channel, identity, contact_id, conversation_id))
}

pub(super) fn send_event(project: &mut Project, body: &Value) -> Answer {
    let app_id = body_app(project, body)?;
    let mode = app_mode(app(project, &app_id)?);
    let event = body
        .get("event")
        .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
        .ok_or_else(|| invalid("event: required"))?;
    let (channel, identity, contact_id, conversation_id) = addressed(project, &app_id, body, mode)?;
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

pub(super) fn source_mode(
    value: Option<&str>,
    default: ProcessingMode,
) -> Result<ProcessingMode, ApiError> {
    match value {
        None | Some("") => Ok(default),
        Some("CONVERSATION_SOURCE") => Ok(ProcessingMode::Conversation),
        Some("DISPATCH_SOURCE") => Ok(ProcessingMode::Dispatch),
        Some(other) => Err(invalid(format!(
            "messages_source: {other} is not one of CONVERSATION_SOURCE, DISPATCH_SOURCE"
        ))),
    }
}

pub(super) fn parse_time_param(
    call: &Call<'_>,
    name: &str,
) -> Result<Option<SystemTime>, ApiError> {
    call.param(name)
        .map(|v| {
            humantime::parse_rfc3339_weak(v)
                .map_err(|_| invalid(format!("{name}: {v:?} is not an RFC 3339 time")))
        })
        .transpose()
}

pub(super) fn list_messages(project: &Project, call: &Call<'_>) -> Answer {
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
        .filter(|m| app_id.is_none_or(|a| m.app_id == a))
        .filter(|m| contact_id.is_none_or(|c| m.contact_id == c))
        .filter(|m| conversation_id.is_none_or(|c| m.conversation_id == c))
        .filter(|m| channel.is_none_or(|c| m.channel == c))
        .filter(|m| identity.is_none_or(|i| m.identity == i))
        .filter(|m| direction.is_none_or(|d| d == "UNDEFINED_DIRECTION" || m.direction == d))
        .filter(|m| !only_mo || m.direction == "TO_APP")
        .filter(|m| start.is_none_or(|s| m.accept_time >= s))
        .filter(|m| end.is_none_or(|e| m.accept_time < e))
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

pub(super) fn message_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
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

pub(super) fn fetch_last_message(project: &Project, body: &Value) -> Answer {
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
        // The schema's shape, which both SDKs send: plain identity strings, with the channel as a
        // separate filter; `{channel, identity}` objects are accepted too.
        (Some(i), _) if !i.is_empty() => i
            .iter()
            .map(|v| match v {
                Value::String(identity) => (
                    false,
                    json_text(body, "channel").unwrap_or("").to_string(),
                    identity.clone(),
                ),
                v => (
                    false,
                    json_text(v, "channel").unwrap_or("").to_string(),
                    json_text(v, "identity").unwrap_or("").to_string(),
                ),
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
                .filter(|m| app_id.is_none_or(|x| m.app_id == x))
                .find(|m| {
                    if *by_contact {
                        m.contact_id == *a
                    } else {
                        (a.is_empty() || m.channel == *a) && m.identity == *b
                    }
                })
                .map(Message::to_json)
        })
        .collect();
    Ok(json!({"messages": messages, "next_page_token": ""}))
}

pub(super) fn transcode(project: &Project, body: &Value) -> Answer {
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
