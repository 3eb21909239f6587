//! Phase 2, facts: read what the rules need — the query, the ids the request names, and the
//! JSON body only on operations whose enabled rules read it (up to
//! `server.max_policy_body_bytes`, else 413; malformed JSON is a 400). A body read here is
//! forwarded as the bytes that were read, with a correct `Content-Length`.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::ctx::{RequestCtx, Subject};
use super::forward::OutboundBody;
use super::GatewayState;
use crate::domain::{valid_id, AppIdLocation};
use crate::error::GatewayError;
use crate::policy::evaluate::json_text;
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
        let bytes = read_body(body, state.max_policy_body_bytes).await?;
        if !bytes.is_empty() {
            ctx.body = Some(parse_json(&bytes)?);
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        OutboundBody::Bytes(bytes)
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

fn parse_json(bytes: &[u8]) -> Result<Value, GatewayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| GatewayError::InvalidBody {
        message: match e.classify() {
            serde_json::error::Category::Eof => "body: the JSON ends too early".to_string(),
            _ => format!(
                "body: not valid JSON (line {}, column {}): {}",
                e.line(),
                e.column(),
                reason(&e)
            ),
        },
    })?;
    if !value.is_object() {
        return Err(GatewayError::InvalidBody {
            message: "body: expected a JSON object".into(),
        });
    }
    Ok(value)
}

/// serde_json's reason without the position suffix (and never the offending input).
fn reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
