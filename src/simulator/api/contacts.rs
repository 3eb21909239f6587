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
