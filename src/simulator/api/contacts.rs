//! Contacts: create, by id, merge.

use super::*;

pub(super) fn create_contact(project: &mut Project, body: &Value) -> Answer {
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

/// Contacts, filtered the way the API lists them: by `external_id`, or by `channel` and
/// `identity` (a contact with such a channel identity).
pub(super) fn list_contacts(project: &Project, call: &Call<'_>) -> Answer {
    let external = call.param("external_id").filter(|v| !v.is_empty());
    let channel = call.param("channel").filter(|v| !v.is_empty());
    let identity = call.param("identity").filter(|v| !v.is_empty());
    let contacts: Vec<Value> = project
        .contacts
        .values()
        .filter(|c| {
            external.is_none_or(|e| c.get("external_id").and_then(Value::as_str) == Some(e))
        })
        .filter(|c| {
            if channel.is_none() && identity.is_none() {
                return true;
            }
            c.get("channel_identities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|i| {
                    channel.is_none_or(|ch| json_text(i, "channel") == Some(ch))
                        && identity.is_none_or(|id| json_text(i, "identity") == Some(id))
                })
        })
        .cloned()
        .map(Value::Object)
        .collect();
    Ok(json!({"contacts": contacts, "next_page_token": ""}))
}

pub(super) fn contact_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let verb = match call.operation {
        Operation::DeleteContact => ById::Delete,
        Operation::UpdateContact => ById::Update,
        _ => ById::Get,
    };
    object_by_id(
        &mut project.contacts,
        "contact",
        call.id(),
        verb,
        &call.body,
        &["id"],
    )
}

pub(super) fn merge_contacts(project: &mut Project, call: &Call<'_>) -> Answer {
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
