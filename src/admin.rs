//! The admin listener: `/metrics`, `/healthz`, `/readyz` (503 while draining), `/apps`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::api_error::ApiError;
use crate::metrics::Metrics;

/// Flips to ready once listeners are bound and back to not ready when draining starts.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Marks draining (not ready).
    pub fn set_draining(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Gateway metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness latch.
    pub readiness: Readiness,
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl AdminState {
    /// Answers one admin request.
    pub fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method();
        match (method, req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => {
                if self.readiness.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (&Method::GET, "/apps") => json(serde_json::json!({ "apps": [] })),
            (_, "/metrics" | "/healthz" | "/readyz" | "/apps") => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here"),
            )
            .into_response(),
            _ => ApiError::new(StatusCode::NOT_FOUND, "no such admin endpoint").into_response(),
        }
    }
}

impl tower::Service<Request<Incoming>> for AdminState {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.handle(&req)))
    }
}
