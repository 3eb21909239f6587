//! Phase 4, act: apply the decision. A rejection is answered here, in the API's error shape,
//! without calling the upstream; a rewrite edits the query (parameters appended, the rest kept
//! byte for byte) and the body (re-serialised with a correct `Content-Length`); the contact
//! rewrite looks the contact up (cached) and lets the pure policy choose the identities.

use bytes::Bytes;
use http::{header, HeaderValue};

use super::ctx::RequestCtx;
use super::forward::OutboundBody;
use super::json;
use super::{GatewayResponse, GatewayState};
use crate::api_error::ApiError;
use crate::contact_cache::ContactOutcome;
use crate::domain::valid_id;
use crate::error::GatewayError;
use crate::policy::evaluate::json_text;
use crate::policy::recipient::{identified_recipient, Contact};
use crate::policy::{apply_body_edits, fields, Edit, Rejection, RuleId};
use crate::upstream::full_body;

/// What the act phase leaves to do.
#[derive(Debug)]
pub enum Act {
    /// Answer with this rejection; nothing is forwarded.
    Reject(GatewayResponse),
    /// Forward, with this body.
    Forward(OutboundBody),
}

/// The answer to a rejected request: 400 `INVALID_ARGUMENT`, or 404 `NOT_FOUND` for a route
/// the API does not have.
pub fn rejection_response(rejection: &Rejection) -> GatewayResponse {
    let error = match rejection.rule {
        RuleId::UnrecognizedRoute => {
            ApiError::new(http::StatusCode::NOT_FOUND, rejection.message.clone())
        }
        _ => ApiError::invalid_argument(rejection.message.clone()),
    };
    error
        .with_detail(rejection.rule.as_str())
        .into_response()
        .map(full_body)
}

/// Records that the request is ambiguous (rule `request.canonical`): in enforce the decision
/// becomes a rejection saying what was ambiguous and how to send it; in shadow the request goes
/// on unchanged and the match is recorded once.
pub fn ambiguous(ctx: &mut RequestCtx, message: String) {
    record_request_rule(ctx, RuleId::Canonical, message);
}

/// Records a request-family rule's finding: enforce rejects (the first finding wins), shadow
/// records one match.
pub fn record_request_rule(ctx: &mut RequestCtx, rule: RuleId, message: String) {
    let action = ctx.snapshot.policy.settings.rules.action(rule);
    if action == crate::policy::Action::Off || ctx.decision.reject.is_some() {
        return;
    }
    if !ctx.decision.matches.iter().any(|m| m.rule == rule) {
        ctx.decision
            .matches
            .push(crate::policy::Match { rule, action });
    }
    if action == crate::policy::Action::Enforce {
        ctx.decision.reject = Some(Rejection { rule, message });
    }
}

/// Applies `ctx.decision` to the request.
pub async fn act(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    parts: &mut http::request::Parts,
    body: OutboundBody,
) -> Result<Act, GatewayError> {
    if let Some(rejection) = &ctx.decision.reject {
        return Ok(Act::Reject(rejection_response(rejection)));
    }
    if ctx.decision.edits.is_empty() {
        return Ok(Act::Forward(body));
    }
    let additions: Vec<_> = ctx.decision.query_edits().collect();
    if !additions.is_empty() {
        parts.uri = edit_query_params(&parts.uri, &additions);
    }
    let whole = match &body {
        OutboundBody::Bytes(bytes) if ctx.body.is_some() && ctx.decision.edits_body() => bytes,
        _ => return Ok(Act::Forward(body)),
    };
    // The facts hold only the fields rules read; a rewrite reads the whole body (it has
    // already been checked to have one meaning).
    let mut value = json::parse_whole(whole)?;
    apply_body_edits(&mut value, &ctx.decision.edits);
    let resolve = Edit::ResolveContactRecipient;
    if ctx.decision.edits.contains(&resolve) {
        let rewrite = if ctx.operation() == crate::domain::Operation::BatchSend {
            super::batch::resolve_contacts(state, ctx, &mut value).await?
        } else {
            resolve_contact(state, ctx, &mut value).await?
        };
        match rewrite {
            ContactRewrite::Done => {}
            ContactRewrite::Reject(message) => {
                // A rewrite that cannot be made rejects: in the answer, the decision log and
                // the metrics alike.
                let rejection = Rejection {
                    rule: RuleId::SendContactRecipient,
                    message,
                };
                let response = rejection_response(&rejection);
                ctx.decision.reject_with(rejection.rule, rejection.message);
                return Ok(Act::Reject(response));
            }
            ContactRewrite::Untouched => {
                // The recipient stays as sent; every other edit still applies.
                ctx.decision
                    .drop_edit(&resolve, RuleId::SendContactRecipient);
                if !ctx.decision.edits_body() {
                    return Ok(Act::Forward(body));
                }
            }
        }
    }
    if ctx.operation() == crate::domain::Operation::BatchSend {
        ctx.batch_rewritten = super::batch::changed_recipients(ctx.body.as_ref(), &value);
    }
    let bytes = Bytes::from(
        serde_json::to_vec(&value).map_err(|e| GatewayError::InvalidBody {
            message: format!("body: cannot be rewritten: {e}"),
        })?,
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(Act::Forward(OutboundBody::Bytes(bytes)))
}

/// What the contact rewrite did.
pub(super) enum ContactRewrite {
    Done,
    Reject(String),
    Untouched,
}

/// Replaces `recipient.contact_id` with the contact's channel identities.
async fn resolve_contact(
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

/// Sets query parameters: the other parameters stay byte for byte, every occurrence of a set
/// one (under its proto or JSON name, empty or not) is replaced by one `name=value` at the end.
pub fn set_query_params(uri: &http::Uri, settings: &[(&str, &str)]) -> http::Uri {
    let edits: Vec<(&str, Option<&str>)> = settings.iter().map(|(k, v)| (*k, Some(*v))).collect();
    edit_query_params(uri, &edits)
}

/// Sets (`Some`) or removes (`None`) query parameters: the other parameters stay byte for
/// byte, every occurrence of an edited one (under its proto or JSON name) is dropped and a set
/// one appended once as `name=value`.
pub fn edit_query_params(uri: &http::Uri, settings: &[(&str, Option<&str>)]) -> http::Uri {
    let mut query = String::new();
    for piece in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let named = form_urlencoded::parse(piece.as_bytes())
            .next()
            .is_some_and(|(k, _)| settings.iter().any(|(name, _)| fields::names(&k, name)));
        if !named {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(piece);
        }
    }
    for (k, v) in settings.iter().filter_map(|(k, v)| v.map(|v| (k, v))) {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish(),
        );
    }
    with_query(uri, &query)
}

fn with_query(uri: &http::Uri, query: &str) -> http::Uri {
    let mut parts = uri.clone().into_parts();
    let pq = format!("{}?{query}", uri.path());
    match http::uri::PathAndQuery::try_from(pq) {
        Ok(pq) => {
            parts.path_and_query = Some(pq);
            http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_edits_keep_the_rest_of_the_query() {
        let uri = http::Uri::from_static("/m?channel_identity=%2B1555&app_id=a");
        assert_eq!(
            set_query_params(&uri, &[("messages_source", "DISPATCH_SOURCE")]).to_string(),
            "/m?channel_identity=%2B1555&app_id=a&messages_source=DISPATCH_SOURCE"
        );
        let uri = http::Uri::from_static("/m/1?messages_source=CONVERSATION_SOURCE");
        assert_eq!(
            set_query_params(&uri, &[("messages_source", "DISPATCH_SOURCE")]).to_string(),
            "/m/1?messages_source=DISPATCH_SOURCE"
        );
        for empty in [
            "/m?messages_source=&app_id=a",
            "/m?messagesSource=&app_id=a",
        ] {
            let uri = http::Uri::from_static(empty);
            assert_eq!(
                set_query_params(&uri, &[("messages_source", "DISPATCH_SOURCE")]).to_string(),
                "/m?app_id=a&messages_source=DISPATCH_SOURCE",
                "{empty}: one messages_source, not two"
            );
        }
    }
}
