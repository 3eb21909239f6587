//! Phase 2, facts: read what the rules need — the query, the ids the request names, and the
//! JSON body only on operations whose enabled rules read it (up to
//! `server.max_policy_body_bytes`, else 413; malformed JSON is a 400). A body read here is
//! forwarded as the bytes that were read, with a correct `Content-Length`.
//!
//! The body is read as the operation's message in the API schema (see `json`): what two parsers
//! could read differently — a duplicate key or a key and its alias, a lenient spelling of a
//! field, an enum not given exactly by name — is recorded under `request.canonical`. An update
//! with `update_mask` is judged as what it stores (`schema::mask`). The query was checked
//! against the schema in the admit phase.

use http::{header, HeaderMap, HeaderValue};
use serde_json::Value;

use super::body::{read_body, OutboundBody};
use super::ctx::{RequestCtx, Subject};
use super::json::{self, JsonProblem};
use super::GatewayState;
use crate::domain::{project_key, valid_id, AppIdLocation};
use crate::error::GatewayError;
use crate::policy::evaluate::json_text;
use crate::policy::Query;
use crate::schema::{mask, MessageId};
use crate::upstream::GatewayBody;

/// Reads the facts of a policy route into `ctx`; returns the body to forward.
pub async fn read(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    parts: &mut http::request::Parts,
    body: GatewayBody,
) -> Result<OutboundBody, GatewayError> {
    let op = ctx.operation();
    let outbound = if ctx.snapshot.policy.reads_body(op) {
        if !is_json(&parts.headers) {
            return Err(GatewayError::InvalidBody {
                message: "content-type: this operation takes application/json".into(),
            });
        }
        let bytes = read_body(body, state.body_limit(ctx.api))
            .await
            .map_err(|e| stalled_or(ctx, e))?;
        let message = ctx.class.definition().and_then(|d| d.body_message());
        if !bytes.is_empty() {
            let mut value = read_json(ctx, &bytes, message)?;
            // An update with a field mask stores the zero value of every masked field the body
            // omits: the rules judge what will be stored.
            let mask = mask::paths(parts.uri.query());
            if let (Some(message), false) = (message, mask.is_empty()) {
                mask::effective(message, &mut value, &mask);
            }
            ctx.body = Some(value);
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        OutboundBody::Bytes(bytes)
    } else if op.is_message_by_id() {
        // A call by message id may be sent again in the other store: hold its (small) body.
        OutboundBody::Bytes(
            read_body(body, state.body_limit(ctx.api))
                .await
                .map_err(|e| stalled_or(ctx, e))?,
        )
    } else {
        state.replayable(body).await?
    };
    ctx.query = Query::parse_owned(parts.uri.query());
    let path = parts.uri.path();
    ctx.subject = Subject {
        project: ctx
            .class
            .project_id(path)
            .filter(|p| valid_id(p))
            .map(|p| project_key(p).into_owned()),
        app: match op.app_id_location() {
            AppIdLocation::Path => ctx.class.path_app_id(path).map(str::to_string),
            AppIdLocation::Query => ctx.query.get("app_id").map(str::to_string),
            AppIdLocation::Body => ctx
                .body
                .as_ref()
                .and_then(|j| json_text(j, "app_id"))
                .map(str::to_string),
            AppIdLocation::None => None,
        }
        .filter(|a| valid_id(a)),
    };
    if op.is_message_by_id() {
        ctx.message_id = ctx
            .class
            .resource_id(path)
            .filter(|id| valid_id(id))
            .map(str::to_string);
    }
    // Lookups authenticate as the caller (passthrough) or as the gateway (inject).
    ctx.authorization = match &state.inject {
        Some(inject) => Some(inject.authorization().await?),
        None => parts.headers.get(header::AUTHORIZATION).cloned(),
    };
    ctx.app = ctx
        .snapshot
        .policy
        .app_policy(ctx.subject.project.as_deref(), ctx.subject.app.as_deref());
    ctx.pseudo = super::pseudo::read(state.pseudo_ids(), ctx);
    Ok(outbound)
}

fn is_json(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(ct) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        }
    }
}

/// A body read that failed because the client stalled is a body idle timeout.
fn stalled_or(ctx: &RequestCtx, error: GatewayError) -> GatewayError {
    if ctx.request_body_stalled() {
        GatewayError::RequestBodyIdle
    } else {
        error
    }
}

/// Reads the fields rules read from a policy route's body, which must have one meaning; an
/// ambiguous one is refused (enforce) or, in shadow, read the lenient way and recorded.
fn read_json(
    ctx: &mut RequestCtx,
    bytes: &[u8],
    message: Option<MessageId>,
) -> Result<Value, GatewayError> {
    let problem = match json::read_fields(bytes, true, message) {
        Ok(value) => return Ok(value),
        Err(problem) => problem,
    };
    let message_text = match problem {
        JsonProblem::Invalid(message) => return Err(GatewayError::InvalidBody { message }),
        JsonProblem::Ambiguous(message) => message,
    };
    ctx.ambiguous(message_text);
    Ok(json::read_fields(bytes, false, message)?)
}
