//! The Batch API (conversation-api.md §12): send one message to 1–1000 recipients, cancel,
//! status by id and by batch metadata, batch contacts and consents. Each recipient becomes an
//! ordinary message in its mode's store; a scheduled batch's messages are stored when its
//! `send_after` comes (checked on every Batch API call).

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::{addressed, app, body_app, invalid, json_text, not_found, Answer};
use crate::domain::Operation;
use crate::policy::ProcessingMode;
use crate::simulator::store::{app_mode, rfc3339, Message, Project};

/// Most recipients (and contacts, and contact ids) one batch call takes.
const MAX_ITEMS: usize = 1000;
/// How far ahead `send_after` may be.
const MAX_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);

/// The message kinds an `AppMessage` holds exactly one of.
const KINDS: [&str; 9] = [
    "text_message",
    "media_message",
    "template_message",
    "card_message",
    "choice_message",
    "carousel_message",
    "list_message",
    "location_message",
    "contact_info_message",
];

/// Routes one Batch API call (`id`: the batch id of a get by id).
pub(crate) fn handle(
    project: &mut Project,
    op: Operation,
    id: Option<&str>,
    query: &[(String, String)],
    body: &Value,
    now: SystemTime,
) -> Answer {
    settle(project, now);
    match op {
        Operation::BatchSend => send(project, body, now),
        Operation::BatchCancel => {
            cancel(project, body);
            Ok(json!({}))
        }
        Operation::BatchGet => project
            .batches
            .get(id.unwrap_or(""))
            .map(|b| Value::Object(b.clone()))
            .ok_or_else(|| not_found(format!("batch {} not found", id.unwrap_or("")))),
        Operation::BatchList => {
            let param = |names: [&str; 2]| {
                query
                    .iter()
                    .find(|(k, _)| names.contains(&k.as_str()))
                    .map(|(_, v)| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            let key = param(["metadataKey", "metadata_key"])
                .ok_or_else(|| invalid("metadataKey: required"))?;
            let value = param(["metadataValue", "metadata_value"])
                .ok_or_else(|| invalid("metadataValue: required"))?;
            Ok(Value::Array(
                project
                    .batches
                    .values()
                    .filter(|b| b.get("meta_data").and_then(|m| m.get(key)) == Some(&json!(value)))
                    .cloned()
                    .map(Value::Object)
                    .collect(),
            ))
        }
        Operation::BatchContactsCreate => {
            let contacts = items(body, "contacts", 1)?;
            for (i, c) in contacts.iter().enumerate() {
                let ids = c
                    .get("channel_identities")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| {
                        invalid(format!(
                            "contacts[{i}].channel_identities: at least one identity is required"
                        ))
                    })?;
                let id = crate::ids::ulid();
                let Value::Object(contact) = json!({
                    "id": id, "channel_identities": ids,
                    "display_name": json_text(c, "display_name").unwrap_or("Unknown"),
                    "language": json_text(c, "language").unwrap_or("EN_US"),
                    "channel_priority": c.get("channel_priority").cloned().unwrap_or(json!([])),
                    "email": json_text(c, "email").unwrap_or(""), "external_id": "", "metadata": "",
                }) else {
                    unreachable!("json! object literal")
                };
                project.contacts.insert(id, contact);
            }
            Ok(json!({}))
        }
        Operation::BatchContactsDelete => {
            for id in items(body, "contact_ids", 0)? {
                if let Some(id) = id.as_str() {
                    project.contacts.remove(id);
                }
            }
            Ok(json!({}))
        }
        Operation::BatchConsents => {
            body_app(project, body)?;
            items(body, "consent_records", 1)?;
            Ok(json!({"batch_id": crate::ids::ulid()}))
        }
        _ => Err(not_found("no such endpoint")),
    }
}

/// The array `field` of `body`, `min`–1000 items.
fn items<'b>(body: &'b Value, field: &str, min: usize) -> Result<&'b Vec<Value>, super::ApiError> {
    let list = body
        .get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("{field}: required")))?;
    if list.len() < min || list.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "{field}: {} items; between {min} and {MAX_ITEMS} are accepted",
            list.len()
        )));
    }
    Ok(list)
}

/// Stores the messages of scheduled batches whose `send_after` has come.
fn settle(project: &mut Project, now: SystemTime) {
    let due: Vec<String> = project
        .scheduled
        .iter()
        .filter(|(_, (at, _))| *at <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in due {
        if let Some((_, messages)) = project.scheduled.remove(&id) {
            project.messages.extend(messages);
        }
        if let Some(b) = project.batches.get_mut(&id) {
            b.insert("status".into(), json!("PROCESSED"));
        }
    }
}

/// Cancels by `batch_id`, or every batch whose metadata holds `metadata_key` = `metadata_value`;
/// only batches still scheduled can be cancelled, and the answer never says (always 200).
fn cancel(project: &mut Project, body: &Value) {
    let ids: Vec<String> = match json_text(body, "batch_id") {
        Some(id) => vec![id.to_string()],
        None => {
            let key = json_text(body, "metadata_key").unwrap_or_default();
            let value = body.get("metadata_value").cloned().unwrap_or(Value::Null);
            project
                .batches
                .iter()
                .filter(|(_, b)| b.get("meta_data").and_then(|m| m.get(key)) == Some(&value))
                .map(|(id, _)| id.clone())
                .collect()
        }
    };
    for id in ids {
        if project.scheduled.remove(&id).is_some() {
            if let Some(b) = project.batches.get_mut(&id) {
                b.insert("status".into(), json!("CANCELLED"));
            }
        }
    }
}

/// When a batch is sent: now, or a `send_after` more than a minute ahead rounded up to the next
/// 5-minute mark; more than 7 days ahead or not RFC 3339 is refused.
fn send_time(body: &Value, now: SystemTime) -> Result<SystemTime, super::ApiError> {
    let Some(text) = json_text(body, "send_after") else {
        return Ok(now);
    };
    let at = crate::policy::batch::rfc3339(text)
        .ok_or_else(|| invalid(format!("send_after: {text:?} is not an RFC 3339 timestamp")))?;
    if at > now + MAX_AHEAD {
        return Err(invalid("send_after: at most 7 days ahead"));
    }
    if at <= now + Duration::from_secs(60) {
        return Ok(now);
    }
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let rounded = (secs / 300.0).ceil() * 300.0;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(rounded as u64))
}

/// `${name}` replaced by `params[name]` in every string of `value`.
fn substitute(value: &Value, params: Option<&Map<String, Value>>) -> Value {
    let Some(params) = params.filter(|p| !p.is_empty()) else {
        return value.clone();
    };
    match value {
        Value::String(s) if s.contains("${") => {
            let mut out = s.clone();
            for (k, v) in params {
                if let Some(v) = v.as_str() {
                    out = out.replace(&format!("${{{k}}}"), v);
                }
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, Some(params))).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), substitute(v, Some(params))))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A metadata map: the request's, the recipient's over it, and `_batch_id` over both.
fn merged(body: &Value, recipient: &Value, field: &str, batch_id: &str) -> Map<String, Value> {
    let mut map = body
        .get(field)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(own) = recipient.get(field).and_then(Value::as_object) {
        map.extend(own.clone());
    }
    map.insert("_batch_id".into(), json!(batch_id));
    map
}

fn send(project: &mut Project, body: &Value, now: SystemTime) -> Answer {
    let app_id = body_app(project, body)?;
    let app_mode = app_mode(app(project, &app_id)?);
    let mode = match json_text(body, "processing_strategy").unwrap_or("DEFAULT") {
        "DEFAULT" => app_mode,
        "DISPATCH_ONLY" => ProcessingMode::Dispatch,
        other => {
            return Err(invalid(format!(
                "processing_strategy: {other} is not one of DEFAULT, DISPATCH_ONLY"
            )))
        }
    };
    let message = body
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("message: required"))?;
    if KINDS.iter().filter(|k| message.contains_key(**k)).count() != 1 {
        return Err(invalid(format!(
            "message: exactly one of {} is required",
            KINDS.join(", ")
        )));
    }
    let recipients = items(body, "recipient_and_params", 1)?;
    let mut contact_indices = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        let to = r.get("recipient").filter(|v| v.is_object());
        let contact = to.and_then(|t| json_text(t, "contact_id")).is_some();
        let identified = to.and_then(|t| t.get("identified_by")).is_some();
        if contact == identified {
            return Err(invalid(format!(
                "recipient_and_params[{i}].recipient: set exactly one of contact_id or identified_by"
            )));
        }
        if contact {
            contact_indices.push(format!("recipient_and_params[{i}].recipient.contact_id"));
        }
    }
    if mode == ProcessingMode::Dispatch && !contact_indices.is_empty() {
        return Err(invalid(format!(
            "{}: not supported for apps in DISPATCH processing mode; use recipient.identified_by.channel_identities",
            contact_indices.join(", ")
        )));
    }
    let at = send_time(body, now)?;
    let batch_id = crate::ids::ulid();
    let mut messages = Vec::with_capacity(recipients.len());
    for (i, r) in recipients.iter().enumerate() {
        let (channel, identity, contact_id, conversation_id) = addressed(project, &app_id, r, mode)
            .map_err(|e| invalid(format!("recipient_and_params[{i}]: {}", e.message())))?;
        let params = r.get("parameters").and_then(Value::as_object);
        messages.push(Message {
            id: crate::ids::ulid(),
            app_id: app_id.clone(),
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
            content: substitute(&Value::Object(message.clone()), params),
            metadata: Value::Object(merged(body, r, "message_metadata", &batch_id)).to_string(),
            accept_time: at,
        });
    }
    let scheduled = at > now;
    let send_after = rfc3339(at);
    let Value::Object(status) = json!({
        "batch_id": batch_id,
        "meta_data": body.get("batch_metadata").cloned().unwrap_or(json!({})),
        "status": if scheduled { "SCHEDULED" } else { "PROCESSED" },
        "send_after": send_after,
    }) else {
        unreachable!("json! object literal")
    };
    project.batches.insert(batch_id.clone(), status);
    if scheduled {
        project.scheduled.insert(batch_id.clone(), (at, messages));
    } else {
        project.messages.extend(messages);
    }
    Ok(json!({"batch_id": batch_id, "send_after": send_after}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_after_is_rounded_up_to_five_minutes_and_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let body = |s: &str| json!({ "send_after": s });
        assert_eq!(send_time(&json!({}), now).ok(), Some(now));
        // 30 s ahead: sent now.
        let soon = rfc3339(now + Duration::from_secs(30));
        assert_eq!(send_time(&body(&soon), now).ok(), Some(now));
        // 61 s ahead: the next 5-minute mark.
        let later = rfc3339(now + Duration::from_secs(61));
        let at = send_time(&body(&later), now).expect("accepted");
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after")
            .as_secs();
        assert_eq!(secs % 300, 0);
        assert!(at >= now + Duration::from_secs(61) && at < now + Duration::from_secs(361));
        let far = rfc3339(now + MAX_AHEAD + Duration::from_secs(1));
        assert!(send_time(&body(&far), now).is_err());
        assert!(send_time(&body("tomorrow"), now).is_err());
    }

    #[test]
    fn parameters_fill_every_string() {
        let params = json!({"name": "Ada"});
        let out = substitute(
            &json!({"text_message": {"text": "Hi ${name}, ${other}"}}),
            params.as_object(),
        );
        assert_eq!(out["text_message"]["text"], "Hi Ada, ${other}");
    }
}
