//! Apps: create, update, lookups, retention checks (U4, U5).

use std::time::SystemTime;

use crate::simulator::store::{self, new_app};

use super::*;

pub(super) fn app_missing(app_id: &str) -> ApiError {
    not_found(format!("app_id: app {app_id} not found"))
}

pub(super) fn app<'p>(
    project: &'p Project,
    app_id: &str,
) -> Result<&'p Map<String, Value>, ApiError> {
    project.apps.get(app_id).ok_or_else(|| app_missing(app_id))
}

/// The `app_id` of a body, which must name an existing app.
pub(super) fn body_app(project: &Project, body: &Value) -> Result<String, ApiError> {
    let app_id = json_text(body, "app_id").ok_or_else(|| invalid("app_id: required"))?;
    app(project, app_id)?;
    Ok(app_id.to_string())
}

pub(super) fn check_retention(body: &Map<String, Value>) -> Result<(), ApiError> {
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
pub(super) fn normalise_retention(app: &mut Map<String, Value>) {
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

pub(super) fn create_app(project: &mut Project, body: &Value) -> Answer {
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

pub(super) fn update_app(project: &mut Project, call: &Call<'_>) -> Answer {
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
            .is_none_or(|m| m.iter().any(|p| p.split('.').next() == Some(top)))
        {
            app.insert(k.clone(), v.clone());
        }
    }
    normalise_retention(app);
    Ok(Value::Object(app.clone()))
}
