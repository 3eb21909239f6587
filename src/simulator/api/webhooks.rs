//! Webhooks: create, by id.

use super::*;

pub(super) fn create_webhook(project: &mut Project, body: &Value) -> Answer {
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

pub(super) fn webhook_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let verb = match call.operation {
        Operation::DeleteWebhook => ById::Delete,
        Operation::UpdateWebhook => ById::Update,
        _ => ById::Get,
    };
    object_by_id(
        &mut project.webhooks,
        "webhook",
        call.id(),
        verb,
        &call.body,
        &["id", "app_id"],
    )
}
