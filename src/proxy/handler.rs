//! The request path, phase by phase. [`handle`] reads top to bottom; each phase is a function in
//! the module it names:
//!
//! | phase | module | what happens |
//! | --- | --- | --- |
//! | snapshot | [`super::snapshot`] | policy and mode cache, taken once |
//! | admit | [`super::admit`] | target, framing, inbound auth; ambiguity (`request.canonical`) |
//! | facts | [`super::facts`] | query, ids, the JSON body where a rule reads it |
//! | decide | [`super::decide`] | pure plan under both modes; the mode only if it matters |
//! | act | [`super::enforce`] | reject, or rewrite query / body / recipient |
//! | forward | [`super::forward`] | token injection, upstream exchange, bounded retries |
//! | learn | [`super::learn`] | forget on update / delete, learn from app responses |
//!
//! A phase imports only the files below it (the context, the request record, body and query
//! helpers), never another phase; it changes the decision only through `Decision`'s methods
//! in the policy. The outcome, the decision log and the policy metrics are written once, in
//! [`finish`], from how the request really ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::Service;

use super::body::OutboundBody;
use super::ctx::{Outcome, RequestCtx};
use super::enforce::Act;
use super::idle::{self, Direction};
use super::meta::RequestMeta;
use super::{admit, decide, enforce, facts, forward, learn, GatewayResponse, GatewayState};
use crate::domain::{mode_label, Operation};
use crate::error::GatewayError;
use crate::upstream::{boxed, BoxError, GatewayBody};

/// The innermost service: the gateway's own work. Its errors go to the rescue layer.
#[derive(Clone, Debug)]
pub struct Handler {
    state: Arc<GatewayState>,
}

impl Handler {
    /// The handler over `state`.
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self { state }
    }
}

impl<B> Service<Request<B>> for Handler
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, GatewayError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { handle(&state, req.map(boxed)).await })
    }
}

/// Handles one request: the phases, then [`finish`].
pub async fn handle(
    state: &GatewayState,
    mut req: Request<GatewayBody>,
) -> Result<GatewayResponse, GatewayError> {
    let class = RequestMeta::classify(&mut req);
    let meta = RequestMeta::get(&req);
    let api = RequestMeta::api_of(req.extensions());
    let request_id = meta.and_then(|m| m.request_id.clone());
    let trace_id = meta.and_then(|m| m.trace_id.clone());
    // Snapshot: the policy and mode cache this request is decided under.
    let mut ctx = RequestCtx::new(state.snapshot(), class, request_id, trace_id);
    ctx.api = api;
    // A request body that stalls is abandoned after the body idle timeout.
    let req = if http_body::Body::is_end_stream(req.body()) {
        req
    } else {
        let fired = ctx.request_body_stalled.clone();
        // Over HTTP/1.1 the answer to a stalled body closes the connection.
        let close = (req.version() < http::Version::HTTP_2)
            .then(|| meta.and_then(|m| m.connection.as_ref()))
            .flatten()
            .map(|(c, _)| c.close.clone());
        req.map(|b| {
            idle::idle(
                b,
                state.body_idle_timeout,
                Direction::Request,
                &state.metrics,
                fired,
                close,
            )
        })
    };
    let result = phases(state, &mut ctx, req).await;
    finish(state, &mut ctx, result)
}

async fn phases(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    req: Request<GatewayBody>,
) -> Result<GatewayResponse, GatewayError> {
    // Admit.
    admit::check_target(state.origin(ctx.api), &req)?;
    admit::check_framing(&req)?;
    admit::check_head(&req)?;
    if let Some(inject) = &state.inject {
        if ctx.operation() == Operation::OauthToken {
            return Ok(inject.token_answer(req.headers()));
        }
        if !inject.inbound.admits(req.headers()) {
            return Err(GatewayError::InboundUnauthenticated);
        }
    }
    admit::check_request(ctx, &req);
    let (mut parts, mut body) = req.into_parts();
    if admit::may_carry_stray_body(ctx, &body) {
        body = admit::check_no_body(ctx, body, state.body_limit(ctx.api)).await?;
    }

    // Facts and decision, on routes the policy has something to say about (and only while
    // nothing has been refused).
    // The policy phases (body reads, cache resolution, lookups, rewrites) are boxed: their
    // state machines are large, and inline every passthrough request's future would carry and
    // copy them.
    let body = if ctx.policy_route && !ctx.rejected() {
        Box::pin(facts_and_decision(state, ctx, &mut parts, body)).await?
    } else {
        state.replayable(body).await?
    };

    // Act.
    let body = if ctx.decision.reject.is_some() || !ctx.decision.edits.is_empty() {
        match Box::pin(enforce::act(state, ctx, &mut parts, body)).await? {
            Act::Reject(response) => return Ok(response),
            Act::Forward(body) => body,
        }
    } else {
        body
    };

    // Forward, then learn.
    if learn::forgets(ctx) {
        Box::pin(learn::forget_before_forward(ctx)).await;
    }
    let response = forward::forward(state, ctx, parts, body).await?;
    if learn::learns(ctx, &response) {
        Box::pin(learn::learn(ctx, response)).await
    } else {
        Ok(response)
    }
}

/// Facts, then (while nothing has been refused) the decision.
async fn facts_and_decision(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    parts: &mut http::request::Parts,
    body: GatewayBody,
) -> Result<OutboundBody, GatewayError> {
    let body = facts::read(state, ctx, parts, body).await?;
    if !ctx.rejected() {
        decide::decide(state, ctx).await?;
    }
    Ok(body)
}

/// Settles the outcome and records the decision exactly once: policy metrics, migration
/// blockers and one decision log line per rule match, each with the final outcome.
fn finish(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    result: Result<GatewayResponse, GatewayError>,
) -> Result<GatewayResponse, GatewayError> {
    ctx.outcome = match &result {
        Ok(response) => response
            .extensions()
            .get::<Outcome>()
            .copied()
            .unwrap_or_else(|| Outcome::of(&ctx.decision)),
        Err(error) => Outcome::failed(error),
    };
    record(state, ctx);
    result.map(|mut response| {
        response.extensions_mut().insert(ctx.outcome);
        response
    })
}

fn record(state: &GatewayState, ctx: &RequestCtx) {
    let mode = mode_label(ctx.mode);
    let outcome = if ctx.outcome.error {
        "error"
    } else {
        ctx.outcome.disposition.as_str()
    };
    let project = ctx.subject.project.as_deref();
    let app = ctx.subject.app.as_deref();
    if ctx.operation() == Operation::BatchSend {
        // Each recipient once: all rejected when the batch was refused (or failed here).
        let n = crate::policy::batch::recipient_count(ctx.body.as_ref());
        if ctx.outcome.disposition == crate::domain::Disposition::Rejected || ctx.outcome.error {
            state.metrics.batch_recipients("rejected", n);
        } else {
            let rewritten = ctx.batch_rewritten.min(n);
            state.metrics.batch_recipients("rewritten", rewritten);
            state.metrics.batch_recipients("forwarded", n - rewritten);
        }
    }
    for m in &ctx.decision.matches {
        state.metrics.policy_decision(m.rule, m.action, mode);
        tracing::info!(
            target: "modegate::decision",
            decision_id = %crate::ids::hex_id(),
            request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            trace_id = ctx.trace_id.as_ref().map_or("", |t| t.0.as_str()),
            rule = m.rule.as_str(),
            action = m.action.as_str(),
            mode,
            project_id = project.unwrap_or(""),
            app_id = app.unwrap_or(""),
            operation = ctx.operation().as_str(),
            outcome,
            "policy decision"
        );
    }
    // What-if: what each DISPATCH rule would do with the app's actions; refusals are blockers.
    let rules = ctx.policy_context().rules;
    let findings: Vec<_> = ctx
        .blockers
        .iter()
        .map(|r| (*r, crate::report::Would::from_action(rules.action(*r))))
        .collect();
    for (rule, would) in &findings {
        if *would == crate::report::Would::Refuse {
            state.metrics.migration_blocker(*rule);
        }
    }
    state
        .report
        .record(project.unwrap_or("-"), app.unwrap_or("-"), &findings);
}
