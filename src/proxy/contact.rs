//! The contact rewrite of a single send (`dispatch.send.contact_recipient` under rewrite):
//! `recipient.contact_id` becomes the contact's channel identities, looked up through the
//! shared contact cache; the pure policy chooses the identities.

use super::ctx::RequestCtx;
use super::GatewayState;
use crate::contact_cache::ContactOutcome;
use crate::domain::valid_id;
use crate::error::GatewayError;
use crate::policy::evaluate::json_text;
use crate::policy::recipient::{identified_recipient, Contact};
use crate::policy::{fields, ContactRewrite};

/// Replaces `recipient.contact_id` with the contact's channel identities.
pub(super) async fn resolve_contact(
    state: &GatewayState,
    ctx: &RequestCtx,
    body: &mut serde_json::Value,
) -> Result<ContactRewrite, GatewayError> {
    let Some(project) = &ctx.subject.project else {
        return Ok(ContactRewrite::Untouched);
    };
    let Some(contact_id) = fields::get(body, "recipient")
        .and_then(|r| json_text(r, "contact_id"))
        .map(str::to_string)
    else {
        return Ok(ContactRewrite::Untouched);
    };
    if !valid_id(&contact_id) {
        return Ok(ContactRewrite::Reject(
            "recipient.contact_id: not a valid contact id; send with recipient.identified_by.channel_identities".into(),
        ));
    }
    let priority: Option<Vec<String>> = fields::get(body, "channel_priority_order")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let found = state
        .contacts
        .identities(project, &contact_id, ctx.authorization.as_ref())
        .await;
    let contact = match &found {
        ContactOutcome::Found(ids) => Contact::Found(ids),
        ContactOutcome::NotFound => Contact::NotFound,
        // A refused lookup cannot show the contact: the send is not forwarded unrewritten.
        ContactOutcome::Denied => {
            return Ok(ContactRewrite::Reject(
                "recipient.contact_id: the gateway could not read this contact (its lookup was refused) to rewrite it to recipient.identified_by; send with recipient.identified_by.channel_identities".into(),
            ))
        }
        ContactOutcome::Failed(failure) => {
            return Err(GatewayError::RewriteUnavailable {
                detail: format!("contact lookup for the recipient rewrite: {failure:?}"),
            })
        }
    };
    match identified_recipient(&contact_id, project, contact, priority.as_deref()) {
        Ok(recipient) => {
            if let Some(slot) = fields::get_mut(body, "recipient") {
                *slot = recipient;
            }
            Ok(ContactRewrite::Done)
        }
        Err(message) => Ok(ContactRewrite::Reject(message)),
    }
}
