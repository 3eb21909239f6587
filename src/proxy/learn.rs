//! Phase 6, learn: what the gateway keeps from the traffic it forwards. Before an app update or
//! delete is forwarded, the app's cached mode is forgotten; after a successful app response
//! (get, list, create, update), the modes it names are learned — by buffering that small body
//! and handing the same bytes on to the client.

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

use super::ctx::RequestCtx;
use super::lookup::mode_of;
use super::GatewayResponse;
use crate::domain::{Operation, UpstreamErrorKind};
use crate::error::GatewayError;
use crate::upstream::full;

/// Largest app response buffered to learn a mode from.
const MAX_LEARN_BODY: u64 = 1 << 20;

/// Forgets the app an update or delete is about to change.
pub async fn forget_before_forward(ctx: &RequestCtx) {
    if let (Some(p), Some(a), Operation::UpdateApp | Operation::DeleteApp) =
        (&ctx.subject.project, &ctx.subject.app, ctx.operation())
    {
        ctx.snapshot.modes.forget(p, a).await;
    }
}

/// Learns modes from a successful app response.
pub async fn learn(
    ctx: &RequestCtx,
    response: GatewayResponse,
) -> Result<GatewayResponse, GatewayError> {
    let op = ctx.operation();
    let learnable = matches!(
        op,
        Operation::GetApp | Operation::ListApps | Operation::CreateApp | Operation::UpdateApp
    );
    // The body's own size hint, not the header: an in-process or h2 upstream may send none.
    let small = http_body::Body::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= MAX_LEARN_BODY);
    let Some(project) = ctx.subject.project.as_deref() else {
        return Ok(response);
    };
    if !learnable || response.status() != StatusCode::OK || !small {
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| GatewayError::Upstream {
            kind: UpstreamErrorKind::Reset,
            detail: format!("app response body: {e}"),
            attempted: ctx.decision.disposition(),
        })?
        .to_bytes();
    if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
        let apps: Vec<&Value> = match op {
            Operation::ListApps => value
                .get("apps")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => vec![&value],
        };
        for app in apps {
            let id = app
                .get("id")
                .and_then(Value::as_str)
                .or(ctx.subject.app.as_deref());
            if let (Some(id), Some(mode)) = (id, mode_of(app)) {
                ctx.snapshot
                    .modes
                    .learn(project, id, mode, ctx.authorization.as_ref())
                    .await;
            }
        }
    }
    Ok(GatewayResponse::from_parts(head, full(bytes)))
}
