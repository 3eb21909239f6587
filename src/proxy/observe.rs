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

use super::classify::classify;
use super::headers::{X_MODEGATE_DECISION, X_MODEGATE_RULE, X_REQUEST_ID};
use super::request_id::RequestId;
use super::Outcome;
use crate::metrics::{DecisionLabel, Metrics};
use crate::policy::Disposition;

/// Layer for [`Observe`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
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
        let class = classify(req.method(), req.uri().path());
        req.extensions_mut().insert(class);
        let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
        let span = tracing::debug_span!(
            "request",
            request_id = request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            operation = class.operation.as_str(),
        );
        let future = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let Ok(mut response) = future.await;
                let outcome = response
                    .extensions()
                    .get::<Outcome>()
                    .copied()
                    .unwrap_or_default();
                let headers = response.headers_mut();
                if let Some(id) = request_id {
                    headers.insert(X_REQUEST_ID, id);
                }
                headers.insert(
                    X_MODEGATE_DECISION,
                    HeaderValue::from_static(outcome.disposition.as_str()),
                );
                if let Some(rule) = outcome.rule {
                    headers.insert(X_MODEGATE_RULE, HeaderValue::from_static(rule.as_str()));
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
                tracing::debug!(
                    status = response.status().as_u16(),
                    decision = label.as_str(),
                    elapsed_ms = elapsed * 1000.0,
                    "access"
                );
                Ok(response)
            }
            .instrument(span),
        )
    }
}
