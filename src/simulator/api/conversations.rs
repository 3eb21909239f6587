//! Conversations: list, create, by id; refused for DISPATCH apps (U1, U2).

use crate::simulator::store::{self, app_mode};

use super::*;

pub(super) fn reject_dispatch_app(
    project: &Project,
    app_id: &str,
    what: &str,
) -> Result<(), ApiError> {
    if app_mode(app(project, app_id)?) == ProcessingMode::Dispatch {
        return Err(invalid(format!(
            "app_id: {what} are not available for apps in DISPATCH processing mode; switch the app to CONVERSATION processing mode or address recipients by channel identity"
        )));
    }
    Ok(())
}

pub(super) fn list_conversations(project: &Project, call: &Call<'_>) -> Answer {
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
        .filter(|c| app_id.is_none_or(|a| c.get("app_id").and_then(Value::as_str) == Some(a)))
        .filter(|c| {
            contact_id.is_none_or(|x| c.get("contact_id").and_then(Value::as_str) == Some(x))
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

pub(super) fn create_conversation(project: &mut Project, body: &Value) -> Answer {
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
    for field in [
        "metadata",
        "active_channel",
        "metadata_json",
        "correlation_id",
    ] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            c.insert(field.into(), v.clone());
        }
    }
    project.conversations.insert(id, c.clone());
    Ok(Value::Object(c))
}

pub(super) fn conversation_by_id(project: &mut Project, call: &Call<'_>) -> Answer {
    let verb = match call.operation {
        Operation::DeleteConversation => ById::Delete,
        Operation::UpdateConversation => ById::Update,
        Operation::StopConversation => {
            let id = call.id();
            let c = project
                .conversations
                .get_mut(id)
                .ok_or_else(|| not_found(format!("conversation {id} not found")))?;
            c.insert("active".into(), Value::Bool(false));
            return Ok(json!({}));
        }
        Operation::InjectMessage | Operation::InjectEvent => {
            object_by_id(
                &mut project.conversations,
                "conversation",
                call.id(),
                ById::Get,
                &call.body,
                &[],
            )?;
            // Inject event answers the event it stored, as send event does.
            return Ok(if call.operation == Operation::InjectEvent {
                json!({
                    "event_id": crate::ids::ulid(),
                    "accepted_time": store::rfc3339(std::time::SystemTime::now()),
                })
            } else {
                json!({})
            });
        }
        _ => ById::Get,
    };
    object_by_id(
        &mut project.conversations,
        "conversation",
        call.id(),
        verb,
        &call.body,
        &["id", "app_id", "contact_id"],
    )
}
