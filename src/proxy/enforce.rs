//! Phase 4, act: apply the decision. A rejection is answered here, in the API's error shape,
//! without calling the upstream; a rewrite edits the query (parameters appended, the rest kept
//! byte for byte) and the body (re-serialised with a correct `Content-Length`); the contact
//! rewrite looks the contact up (cached) and lets the pure policy choose the identities.

use bytes::Bytes;
use http::{header, HeaderValue};

use super::body::OutboundBody;
use super::contact::resolve_contact;
use super::ctx::RequestCtx;
use super::json;
use super::query::edit_query_params;
use super::{GatewayResponse, GatewayState};
use crate::api_error::ApiError;
use crate::error::GatewayError;
use crate::policy::{apply_body_edits, Edit, Rejection, RuleId};
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
        // A rewrite that cannot be made rejects: in the answer, the decision log and the
        // metrics alike. With nothing to rewrite, every other edit still applies.
        ctx.decision.contact_rewrite(rewrite);
        if let Some(rejection) = &ctx.decision.reject {
            return Ok(Act::Reject(rejection_response(rejection)));
        }
        if !ctx.decision.edits_body() {
            return Ok(Act::Forward(body));
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
