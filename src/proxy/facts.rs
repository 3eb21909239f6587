//! Phase 2, facts: read what the rules need — the query, the ids the request names, and the
//! JSON body only on operations whose enabled rules read it (up to
//! `server.max_policy_body_bytes`, else 413; malformed JSON is a 400). A body read here is
//! forwarded as the bytes that were read, with a correct `Content-Length`.
//!
//! Every field is read under its proto and its JSON name, and what two parsers could read
//! differently — a policy parameter given twice, a duplicate key or a key and its alias in the
//! body, an enum a rule reads given as a number — is recorded under `request.canonical`.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::ctx::{RequestCtx, Subject};
use super::enforce::ambiguous;
use super::forward::OutboundBody;
use super::json::{self, JsonProblem};
use super::GatewayState;
use crate::domain::{valid_id, AppIdLocation};
use crate::error::GatewayError;
use crate::policy::evaluate::json_text;
use crate::policy::fields::{self, json_name};
use crate::policy::Query;
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
        let bytes = read_body(body, state.max_policy_body_bytes)
            .await
            .map_err(|e| stalled_or(ctx, e))?;
        if !bytes.is_empty() {
            ctx.body = Some(read_json(ctx, &bytes)?);
            if let Some(field) = ctx.body.as_ref().and_then(numeric_enum) {
                ambiguous(
                    ctx,
                    format!("{field}: give the enum by name, not as a number"),
                );
            }
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        OutboundBody::Bytes(bytes)
    } else if op.is_message_by_id() {
        // A call by message id may be sent again in the other store: hold its (small) body.
        OutboundBody::Bytes(
            read_body(body, state.max_policy_body_bytes)
                .await
                .map_err(|e| stalled_or(ctx, e))?,
        )
    } else {
        state.replayable(body).await?
    };
    ctx.query = Query::parse_owned(parts.uri.query());
    for name in POLICY_PARAMETERS {
        if ctx.query.count(name) > 1 {
            ambiguous(
                ctx,
                format!(
                    "{name}: given more than once (as {name} or {}), so parsers may read different values; send it once",
                    json_name(name)
                ),
            );
        }
    }
    if ctx
        .query
        .get("messages_source")
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
    {
        ambiguous(
            ctx,
            "messages_source: give the enum by name (CONVERSATION_SOURCE or DISPATCH_SOURCE), not as a number".into(),
        );
    }
    let path = parts.uri.path();
    ctx.subject = Subject {
        project: ctx
            .class
            .project_id(path)
            .filter(|p| valid_id(p))
            .map(str::to_string),
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

/// Reads a whole body, refusing one over `limit` bytes.
pub async fn read_body(body: GatewayBody, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(GatewayError::BodyTooLarge { limit })
            } else {
                Err(GatewayError::ClientBody(e.to_string()))
            }
        }
    }
}

/// Reads the fields rules read from a policy route's body, which must have one meaning; an
/// ambiguous one is refused (enforce) or, in shadow, read the lenient way and recorded.
fn read_json(ctx: &mut RequestCtx, bytes: &[u8]) -> Result<Value, GatewayError> {
    let problem = match json::read_fields(bytes, true) {
        Ok(value) => return Ok(value),
        Err(problem) => problem,
    };
    let message = match problem {
        JsonProblem::Invalid(message) => return Err(GatewayError::InvalidBody { message }),
        JsonProblem::Ambiguous(message) => message,
    };
    ambiguous(ctx, message);
    Ok(json::read_fields(bytes, false)?)
}

/// Query parameters rules read (and the subject's `app_id`): each must have one value.
const POLICY_PARAMETERS: [&str; 4] = ["app_id", "contact_id", "conversation_id", "messages_source"];

/// An enum field a rule reads, given as a number: its path.
fn numeric_enum(body: &Value) -> Option<String> {
    const TOP: [&str; 3] = ["processing_strategy", "messages_source", "processing_mode"];
    const RETENTION: [&str; 2] = ["retention_policy", "dispatch_retention_policy"];
    if let Some(field) = TOP
        .iter()
        .find(|f| fields::get(body, f).is_some_and(Value::is_number))
    {
        return Some((*field).to_string());
    }
    RETENTION.iter().find_map(|r| {
        fields::get(body, r)
            .and_then(|p| fields::get(p, "retention_type"))
            .filter(|v| v.is_number())
            .map(|_| format!("{r}.retention_type"))
    })
}
