//! `ObserveLayer`: classifies the request, opens its trace span, and on the way back writes the
//! decision headers and records metrics, exactly once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use super::ctx::Outcome;
use super::headers::{X_MODEGATE_DECISION, X_MODEGATE_RULE, X_MODEGATE_SHADOW, X_REQUEST_ID};
use super::meta::{RequestMeta, TraceId};
use crate::metrics::{DecisionLabel, Metrics};
use crate::policy::Disposition;

/// The trace id of `traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
pub fn trace_id(headers: &http::HeaderMap) -> Option<TraceId> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then(|| TraceId(trace.to_ascii_lowercase()))
}

/// Layer for [`Observe`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl ObserveLayer {
    /// Records into `metrics`; `access_log` logs one info line per request.
    pub fn new(metrics: Arc<Metrics>, access_log: bool) -> Self {
        Self {
            metrics,
            access_log,
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            access_log: self.access_log,
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    access_log: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Response<RB>, std::convert::Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let class = RequestMeta::classify(&mut req);
        let trace = trace_id(req.headers());
        let method = req.method().clone();
        let access_log = self.access_log;
        let meta = RequestMeta::of(&mut req);
        meta.trace_id = trace.clone();
        let request_id = meta.request_id.clone();
        // A span costs a registry slot per request; open one only when someone listens.
        let span = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            tracing::debug_span!(
                "request",
                request_id = request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                operation = class.operation.as_str(),
            )
        });
        let future = self.inner.call(req);
        let metrics = self.metrics.clone();
        let observed = async move {
            let Ok(mut response) = future.await;
            let outcome = response
                .extensions()
                .get::<Outcome>()
                .copied()
                .unwrap_or_default();
            let headers = response.headers_mut();
            if let Some(id) = &request_id {
                headers.insert(X_REQUEST_ID, id.clone());
            }
            headers.insert(
                X_MODEGATE_DECISION,
                HeaderValue::from_static(outcome.disposition.as_str()),
            );
            if let Some(rules) = outcome.rules.header_value() {
                headers.insert(X_MODEGATE_RULE, rules);
            }
            if let Some(rules) = outcome.shadow.header_value() {
                headers.insert(X_MODEGATE_SHADOW, rules);
            }
            let label = if outcome.error {
                DecisionLabel::Error
            } else {
                match outcome.disposition {
                    Disposition::Forwarded => DecisionLabel::Forwarded,
                    Disposition::Rewritten => DecisionLabel::Rewritten,
                    Disposition::Rejected => DecisionLabel::Rejected,
                    Disposition::Shadow => DecisionLabel::Shadow,
                }
            };
            let elapsed = started.elapsed().as_secs_f64();
            metrics.record_request(class.operation, label, elapsed);
            if access_log {
                // The operation, never the raw path: paths and queries can carry identities.
                tracing::info!(
                    target: "modegate::access",
                    request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                    trace_id = trace.as_ref().map_or("", |t| t.0.as_str()),
                    method = method.as_str(),
                    operation = class.operation.as_str(),
                    status = response.status().as_u16(),
                    decision = label.as_str(),
                    rule = outcome.rules.header_value().as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                    duration_ms = elapsed * 1000.0,
                    "request"
                );
            }
            Ok(response)
        };
        match span {
            Some(span) => Box::pin(observed.instrument(span)),
            None => Box::pin(observed),
        }
    }
}
