//! The contact rewrite of a Batch API send (`dispatch.send.contact_recipient` under rewrite):
//! every `recipient_and_params[i].recipient.contact_id` becomes that contact's
//! `identified_by`. Each distinct contact is looked up once, through the shared contact cache
//! (cached, coalesced with concurrent requests), in waves of at most [`LOOKUP_CONCURRENCY`];
//! one recipient that cannot be rewritten stops the whole batch, with the status a single send
//! would get (400, or 503 when a lookup failed).

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use serde_json::Value;

use super::ctx::RequestCtx;
use super::GatewayState;
use crate::contact_cache::ContactOutcome;
use crate::domain::valid_id;
use crate::error::GatewayError;
use crate::policy::recipient::{identified_recipient, Contact};
use crate::policy::{batch, fields, ContactRewrite};

/// Contact lookups one batch runs at once.
pub const LOOKUP_CONCURRENCY: usize = 16;

/// The contact id of recipient `r`, if it is addressed by one.
fn contact_of(r: &Value) -> Option<&str> {
    fields::get(r, "recipient").and_then(|to| fields::text(to, "contact_id"))
}

/// How many recipients of the batch as read (`before`: the facts rules read) the rewritten
/// body changed: each whose own entry changed, or every one when a batch-wide field they all
/// inherit (metadata, `processing_strategy`, …) changed.
pub(super) fn changed_recipients(before: Option<&Value>, after: &Value) -> usize {
    let empty = Vec::new();
    let list = before.and_then(batch::recipients).unwrap_or(&empty);
    let shared_changed = before.and_then(Value::as_object).is_some_and(|fields| {
        fields.iter().any(|(key, value)| {
            !fields::names(key, "recipient_and_params")
                && after
                    .as_object()
                    .and_then(|a| a.get(key))
                    .is_none_or(|other| differs(value, other))
        })
    });
    if shared_changed {
        return list.len();
    }
    let after = batch::recipients(after).unwrap_or(&empty);
    list.iter()
        .zip(after)
        .filter(|(b, a)| differs(b, a))
        .count()
}

/// Whether `after` differs from `before` in what `before` holds: the facts of a body hold only
/// the fields rules read (a message on a read path keeps only its read fields), so fields they
/// left out are not compared.
fn differs(before: &Value, after: &Value) -> bool {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => b
            .iter()
            .any(|(key, value)| a.get(key).is_none_or(|other| differs(value, other))),
        (Value::Array(b), Value::Array(a)) => {
            b.len() != a.len() || b.iter().zip(a).any(|(b, a)| differs(b, a))
        }
        _ => before != after,
    }
}

/// Rewrites every contact recipient of the batch `body`.
pub(super) async fn resolve_contacts(
    state: &GatewayState,
    ctx: &RequestCtx,
    body: &mut Value,
) -> Result<ContactRewrite, GatewayError> {
    let Some(project) = &ctx.subject.project else {
        return Ok(ContactRewrite::Untouched);
    };
    let Some(list) = batch::recipients(body) else {
        return Ok(ContactRewrite::Untouched);
    };
    let mut wanted: Vec<&str> = Vec::new();
    let mut distinct = HashSet::new();
    let mut problems = Vec::new();
    for (i, r) in list.iter().enumerate() {
        match contact_of(r) {
            Some(id) if !valid_id(id) => problems.push(format!(
                "recipient_and_params[{i}].recipient.contact_id: not a valid contact id"
            )),
            Some(id) if distinct.insert(id) => wanted.push(id),
            _ => {}
        }
    }
    if wanted.is_empty() && problems.is_empty() {
        return Ok(ContactRewrite::Untouched);
    }
    if !problems.is_empty() {
        return Ok(ContactRewrite::Reject(fix(problems)));
    }
    let authorization = ctx.authorization.as_ref();
    let mut found: HashMap<String, ContactOutcome> = HashMap::with_capacity(wanted.len());
    for wave in wanted.chunks(LOOKUP_CONCURRENCY) {
        let mut lookups = Vec::with_capacity(wave.len());
        for id in wave {
            lookups.push(state.contacts.identities(project, id, authorization));
        }
        for (id, outcome) in wave.iter().zip(join_all(lookups).await) {
            found.insert((*id).to_string(), outcome);
        }
    }
    let priority: Option<Vec<String>> = fields::get(body, "channel_priority_order")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let mut replacements = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let Some(id) = contact_of(r) else { continue };
        let contact = match found.get(id) {
            Some(ContactOutcome::Found(ids)) => Contact::Found(ids),
            Some(ContactOutcome::NotFound) | None => Contact::NotFound,
            Some(ContactOutcome::Denied) => {
                problems.push(format!("recipient_and_params[{i}].recipient.contact_id: the gateway could not read contact {id} (its lookup was refused) to rewrite it"));
                continue;
            }
            Some(ContactOutcome::Failed(failure)) => {
                return Err(GatewayError::RewriteUnavailable {
                    detail: format!("contact lookup for the batch recipient rewrite: {failure:?}"),
                })
            }
        };
        match identified_recipient(id, project, contact, priority.as_deref()) {
            Ok(recipient) => replacements.push((i, recipient)),
            Err(message) => problems.push(format!("recipient_and_params[{i}].{message}")),
        }
    }
    if !problems.is_empty() {
        return Ok(ContactRewrite::Reject(fix(problems)));
    }
    if let Some(list) = fields::get_mut(body, "recipient_and_params").and_then(Value::as_array_mut)
    {
        for (i, recipient) in replacements {
            if let Some(slot) = list
                .get_mut(i)
                .and_then(|r| fields::get_mut(r, "recipient"))
            {
                *slot = recipient;
            }
        }
    }
    Ok(ContactRewrite::Done)
}

/// One message for every recipient that cannot be rewritten, and the fix.
fn fix(problems: Vec<String>) -> String {
    format!(
        "{}; the batch was not sent: send these recipients with recipient.identified_by.channel_identities",
        problems.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipients_changed_are_counted_against_the_facts_read() {
        // The facts hold only what rules read: identities are walked, not built.
        let facts = json!({"app_id": "a", "processing_strategy": "DEFAULT", "recipient_and_params": [
            {"recipient": {"contact_id": "c1"}},
            {"recipient": {"identified_by": {}}, "conversation_metadata": {"k": [1]}},
        ]});
        let unchanged = json!({"app_id": "a", "processing_strategy": "DEFAULT", "message": {"text_message": {"text": "x"}},
        "recipient_and_params": [
            {"recipient": {"contact_id": "c1"}, "parameters": {"n": "Ann"}},
            {"recipient": {"identified_by": {"channel_identities": [{"channel": "SMS", "identity": "+1"}]}},
             "conversation_metadata": {"k": [1]}},
        ]});
        assert_eq!(changed_recipients(Some(&facts), &unchanged), 0);
        let mut one = unchanged.clone();
        one["recipient_and_params"][0]["recipient"] = json!({"identified_by": {"channel_identities": [{"channel": "SMS", "identity": "+2"}]}});
        assert_eq!(changed_recipients(Some(&facts), &one), 1);
        let mut metadata = unchanged.clone();
        metadata["recipient_and_params"][1]["conversation_metadata"] = json!({"k": [1, 2]});
        assert_eq!(changed_recipients(Some(&facts), &metadata), 1);
        // A field every recipient shares changes them all.
        let mut shared = unchanged;
        shared["processing_strategy"] = json!("DISPATCH_ONLY");
        assert_eq!(changed_recipients(Some(&facts), &shared), 2);
        assert_eq!(changed_recipients(None, &shared), 0);
    }
}
