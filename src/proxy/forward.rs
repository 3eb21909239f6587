//! Phase 5, forward: map the request onto the upstream origin, clean its headers, set the
//! gateway's token in inject mode, send it, and apply the bounded retry policy
//! ([`super::ctx::RetryBudget`]): at most one retry after an expired-token 401 (inject mode,
//! bodies the gateway holds) and at most one retry of a get / update / delete by message id in
//! the other store after a 404. The response head comes back with its body streaming.

use http::{header, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use super::body::OutboundBody;
use super::ctx::{Outcome, RequestCtx};
use super::idle;
use super::meta::RequestMeta;
use super::query::set_query_params;
use super::{headers, GatewayResponse, GatewayState};
use crate::domain::Operation;
use crate::error::GatewayError;
use crate::upstream::{self, full, GatewayBody};

/// Sends the request upstream (with the bounded retries) and prepares the response head for
/// the client.
pub async fn forward(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    mut parts: http::request::Parts,
    body: OutboundBody,
) -> Result<GatewayResponse, GatewayError> {
    let op = ctx.operation();
    let client_h2 = parts.version == Version::HTTP_2;
    parts.uri = if op == Operation::OauthToken {
        state.token_uri.clone()
    } else {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        state.origin(ctx.api).uri(&pq)
    };
    let connection = RequestMeta::connection_of(&parts.extensions).map(|(c, _)| c.clone());
    headers::to_upstream(
        &mut parts.headers,
        connection.as_deref().map(|c| (&c.forwarded_for, c.tls)),
    );

    // A store retry sends the same call by message id again with the other
    // `messages_source` (its small body was held in the facts phase).
    let store_replay = ctx.store_retry.map(|source| {
        let uri = set_query_params(&parts.uri, &[("messages_source", source)]);
        (
            copy_head(&parts, uri),
            source,
            body.replayable().unwrap_or_default(),
        )
    });
    let mut response = send_authorized(state, ctx, parts, body).await?;
    if let Some((replay, source, bytes)) = store_replay {
        if response.status() == StatusCode::NOT_FOUND && !ctx.retries.store_used {
            ctx.retries.store_used = true;
            // Kept whole, so the caller gets it if the other store misses too.
            let (head, first) = response.into_parts();
            let first = first
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            tracing::debug!(
                operation = op.as_str(),
                "404 from one store; retrying once in the other"
            );
            let retried = send_authorized(state, ctx, replay, OutboundBody::Bytes(bytes)).await?;
            response = if retried.status() == StatusCode::NOT_FOUND {
                Response::from_parts(head, full(first))
            } else {
                ctx.decision.retried_in_store(source);
                retried
            };
        }
    }
    headers::to_client(response.headers_mut());
    *response.version_mut() = Version::HTTP_11;
    // A response body that stalls, either side, is abandoned after the body idle timeout.
    if !http_body::Body::is_end_stream(response.body()) {
        let timeout = state.body_idle_timeout;
        let metrics = state.metrics.clone();
        response = response.map(|body| {
            if client_h2 {
                idle::relay(body, timeout, metrics)
            } else {
                idle::idle(
                    body,
                    timeout,
                    idle::Direction::Response,
                    &metrics,
                    Default::default(),
                    connection.as_ref().map(|c| c.close.clone()),
                )
            }
        });
    }
    Ok(response)
}

/// A copy of a request head, to send again to `uri`.
fn copy_head(parts: &http::request::Parts, uri: http::Uri) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = parts.method.clone();
    *r.uri_mut() = uri;
    *r.headers_mut() = parts.headers.clone();
    r.extensions_mut().extend(parts.extensions.clone());
    r.into_parts().0
}

/// One exchange with the upstream's credentials in place: the caller's (passthrough) or the
/// gateway's token (inject), with the one retry after an expired-token 401.
async fn send_authorized(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    parts: http::request::Parts,
    body: OutboundBody,
) -> Result<Response<GatewayBody>, GatewayError> {
    match &state.inject {
        None => send(state, ctx, parts, body.into_body()).await,
        // Boxed: the token source's future is large, and passthrough requests never need it.
        Some(inject) => Box::pin(send_injected(state, inject, ctx, parts, body)).await,
    }
}

/// [`send_authorized`] with the gateway's own token.
async fn send_injected(
    state: &GatewayState,
    inject: &super::Inject,
    ctx: &mut RequestCtx,
    mut parts: http::request::Parts,
    body: OutboundBody,
) -> Result<Response<GatewayBody>, GatewayError> {
    let token = inject.authorization().await?;
    parts.headers.insert(header::AUTHORIZATION, token.clone());
    let replay = body
        .replayable()
        .map(|bytes| (copy_head(&parts, parts.uri.clone()), bytes));
    let response = send(state, ctx, parts, body.into_body()).await?;
    let expired = response.status() == StatusCode::UNAUTHORIZED
        && crate::auth::says_expired(response.headers());
    match replay {
        Some((mut parts, bytes)) if expired && !ctx.retries.token_used => {
            ctx.retries.token_used = true;
            tracing::info!(
                operation = ctx.operation().as_str(),
                "upstream token expired; refreshing and retrying once"
            );
            inject.tokens.invalidate(&token);
            parts
                .headers
                .insert(header::AUTHORIZATION, inject.authorization().await?);
            send(state, ctx, parts, full(bytes)).await
        }
        _ => Ok(response),
    }
}

/// One upstream exchange, timed and counted.
async fn send(
    state: &GatewayState,
    ctx: &RequestCtx,
    parts: http::request::Parts,
    body: GatewayBody,
) -> Result<Response<GatewayBody>, GatewayError> {
    let request = Request::from_parts(parts, body);
    upstream::call(&state.upstream, &state.metrics, ctx.operation(), request)
        .await
        .map(|(response, _)| response)
        .map_err(|failure| {
            if ctx.request_body_stalled() {
                return GatewayError::RequestBodyIdle;
            }
            GatewayError::Upstream {
                kind: failure.kind,
                detail: failure.detail,
                attempted: Outcome::of(&ctx.decision).disposition,
            }
        })
}
