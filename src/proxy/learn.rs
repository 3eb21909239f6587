//! Phase 6, learn: what the gateway keeps from the traffic it forwards. Before an app update or
//! delete is forwarded, the app's cached mode is forgotten; after a successful app response
//! (get, list, create, update), the modes it names are learned, and after a message response
//! (send, get, update, list) which app and store each message id belongs to — by buffering
//! that small body and handing the same bytes on to the client.

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

use super::ctx::RequestCtx;
use super::lookup::mode_of;
use super::GatewayResponse;
use std::sync::Arc;

use crate::domain::{valid_id, Operation, ProcessingMode, UpstreamErrorKind};
use crate::error::GatewayError;
use crate::message_index::MessageOrigin;
use crate::policy::evaluate::json_text;
use crate::upstream::full;

/// Largest app response buffered to learn a mode from.
const MAX_LEARN_BODY: u64 = 1 << 20;

/// Whether the request changes an app whose cached mode must be forgotten first.
pub fn forgets(ctx: &RequestCtx) -> bool {
    ctx.subject.project.is_some()
        && ctx.subject.app.is_some()
        && matches!(ctx.operation(), Operation::UpdateApp | Operation::DeleteApp)
}

/// Forgets the app an update or delete is about to change.
pub async fn forget_before_forward(ctx: &RequestCtx) {
    if let (Some(p), Some(a), true) = (&ctx.subject.project, &ctx.subject.app, forgets(ctx)) {
        ctx.snapshot.modes.forget(p, a).await;
    }
}

/// Whether [`learn`] has anything to do with `response`.
pub fn learns(ctx: &RequestCtx, response: &GatewayResponse) -> bool {
    let op = ctx.operation();
    let status = response.status();
    let changed = matches!(
        op,
        Operation::DeleteMessage | Operation::DeleteApp | Operation::UpdateApp
    );
    ctx.subject.project.is_some()
        && (changed && status.is_success() || teaches(ctx, op) && status == StatusCode::OK)
}

/// Whether `op`'s successful answer teaches the gateway something.
fn teaches(ctx: &RequestCtx, op: Operation) -> bool {
    match op {
        Operation::GetApp | Operation::ListApps | Operation::CreateApp | Operation::UpdateApp => {
            true
        }
        Operation::SendMessage
        | Operation::ListMessages
        | Operation::GetMessage
        | Operation::UpdateMessage => ctx.snapshot.messages.enabled(),
        _ => false,
    }
}

/// Learns from a successful answer: app modes from app responses, and which app and store
/// each message id belongs to from message responses. A deleted message is forgotten.
pub async fn learn(
    ctx: &RequestCtx,
    response: GatewayResponse,
) -> Result<GatewayResponse, GatewayError> {
    let op = ctx.operation();
    let Some(project) = ctx.subject.project.as_deref() else {
        return Ok(response);
    };
    // Replicas sharing the cache may have looked the app up while the change was in flight.
    if let (Some(app), Operation::UpdateApp | Operation::DeleteApp, true) = (
        ctx.subject.app.as_deref(),
        op,
        response.status().is_success(),
    ) {
        ctx.snapshot.modes.forget_elsewhere(project, app).await;
    }
    if op == Operation::DeleteMessage && response.status().is_success() {
        if let Some(id) = &ctx.message_id {
            ctx.snapshot.messages.forget(project, id);
        }
        return Ok(response);
    }
    // The body's own size hint, not the header: an in-process or h2 upstream may send none.
    let small = http_body::Body::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= MAX_LEARN_BODY);
    if !teaches(ctx, op) || response.status() != StatusCode::OK || !small {
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| GatewayError::Upstream {
            kind: UpstreamErrorKind::Reset,
            detail: format!("response body: {e}"),
            attempted: ctx.decision.disposition(),
        })?
        .to_bytes();
    if op == Operation::SendMessage {
        // Sends are the hot path: read the one field without building the whole tree.
        if let Ok(SendAnswer {
            message_id: Some(id),
        }) = serde_json::from_slice::<SendAnswer<'_>>(&bytes)
        {
            remember_sent(ctx, project, &id);
        }
    } else if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
        match op {
            Operation::ListMessages => {
                for message in value
                    .get("messages")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    remember_message(ctx, project, message);
                }
            }
            Operation::GetMessage | Operation::UpdateMessage => {
                remember_message(ctx, project, &value)
            }
            _ => learn_apps(ctx, project, op, &value).await,
        }
    }
    Ok(GatewayResponse::from_parts(head, full(bytes)))
}

/// App modes from an app answer (one app, or a list).
async fn learn_apps(ctx: &RequestCtx, project: &str, op: Operation, value: &Value) {
    let apps: Vec<&Value> = match op {
        Operation::ListApps => value
            .get("apps")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![value],
    };
    let learned: Vec<(&str, ProcessingMode)> = apps
        .into_iter()
        .filter_map(|app| {
            let id = app
                .get("id")
                .and_then(Value::as_str)
                .or(ctx.subject.app.as_deref())?;
            Some((id, mode_of(app)?))
        })
        .collect();
    // An update's answer is the newest word on its app; any other answer is learned only if
    // no update or delete of the app was seen since its request started.
    let ticket = match (op, ctx.subject.app.as_deref()) {
        (Operation::UpdateApp, Some(app)) => {
            ctx.snapshot.modes.changed(project, app);
            ctx.snapshot.modes.ticket()
        }
        _ => ctx.ticket,
    };
    ctx.snapshot
        .modes
        .learn_all(project, &learned, ctx.authorization.as_ref(), ticket)
        .await;
    if op == Operation::ListApps {
        ctx.snapshot.modes.mark_listed(project).await;
    }
}

/// The part of a send answer the gateway reads.
#[derive(serde::Deserialize)]
struct SendAnswer<'a> {
    #[serde(borrow)]
    message_id: Option<std::borrow::Cow<'a, str>>,
}

/// A sent message: its id, the app that sent it, and its store when the send fixed it
/// (`DISPATCH_ONLY`) or the app's mode was resolved for the decision.
fn remember_sent(ctx: &RequestCtx, project: &str, id: &str) {
    let dispatch_only = ctx
        .body
        .as_ref()
        .and_then(|b| json_text(b, "processing_strategy"))
        == Some("DISPATCH_ONLY");
    let store = if dispatch_only {
        Some(ProcessingMode::Dispatch)
    } else {
        ctx.mode
    };
    if valid_id(id) {
        ctx.snapshot.messages.remember_new(
            project,
            id,
            MessageOrigin {
                app: ctx.subject.app.as_deref().map(Arc::from),
                store,
            },
        );
    }
}

/// A message object from a get, update or list answer: it names its store and app.
fn remember_message(ctx: &RequestCtx, project: &str, message: &Value) {
    let Some(id) = message
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| valid_id(id))
    else {
        return;
    };
    let store = message
        .get("processing_mode")
        .and_then(Value::as_str)
        .and_then(|m| m.parse().ok());
    let app = message
        .get("app_id")
        .or_else(|| {
            message
                .get("channel_identity")
                .and_then(|c| c.get("app_id"))
        })
        .and_then(Value::as_str)
        .filter(|a| valid_id(a))
        .map(Arc::from);
    if store.is_some() || app.is_some() {
        ctx.snapshot
            .messages
            .remember(project, id, MessageOrigin { app, store });
    }
}
