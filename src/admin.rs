//! The admin listener: `/metrics`, `/healthz`, `/readyz` (503 while draining), `/apps`,
//! `DELETE /apps/{project_id}/{app_id}`, `/report/migration`, `POST /reload`.
//!
//! Mutating endpoints answer loopback clients only, wherever the listener is bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::api_error::ApiError;
use crate::metrics::Metrics;
use crate::proxy::GatewayState;

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
    /// The gateway (mode cache, policy, report).
    pub gateway: Arc<GatewayState>,
    /// Reloads the config file (`POST /reload`), when the gateway was started from one.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// The client of this connection.
    pub peer: Option<SocketAddr>,
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

fn forbidden() -> Response<Full<Bytes>> {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "mutating admin endpoints answer loopback clients only",
    )
    .into_response()
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
    /// This state for one client connection.
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }

    fn loopback(&self) -> bool {
        self.peer.is_some_and(|p| p.ip().is_loopback())
    }

    fn apps(&self) -> serde_json::Value {
        let mut apps: Vec<serde_json::Value> = self
            .gateway
            .modes()
            .known_apps()
            .into_iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect();
        let policy = self.gateway.policy();
        for pinned in policy.pinned_apps() {
            apps.push(serde_json::json!({
                "project_id": pinned.project_id,
                "app_id": pinned.app_id,
                "mode": pinned.processing_mode.map(|m| m.as_str()),
                "source": "static",
                "age_secs": 0,
                "fresh": true,
            }));
        }
        serde_json::json!({ "apps": apps })
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method();
        let path = req.uri().path();
        match (method, path) {
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
            (&Method::GET, "/apps") => json(self.apps()),
            (&Method::GET, "/report/migration") => json(
                self.gateway
                    .report()
                    .to_json(self.gateway.policy().settings.what_if_dispatch),
            ),
            (&Method::POST, "/reload") => {
                if !self.loopback() {
                    return forbidden();
                }
                let Some(reloader) = &self.reloader else {
                    return ApiError::new(
                        StatusCode::CONFLICT,
                        "this gateway was not started from a config file; nothing to reload",
                    )
                    .into_response();
                };
                match reloader.reload() {
                    Ok(report) => json(serde_json::json!({ "reloaded": true, "report": report })),
                    Err(e) => ApiError::invalid_argument(format!(
                        "config reload refused; the running config stays: {e}"
                    ))
                    .into_response(),
                }
            }
            (&Method::DELETE, p) if p.starts_with("/apps/") => {
                if !self.loopback() {
                    return forbidden();
                }
                let ids: Vec<&str> = p["/apps/".len()..].split('/').collect();
                match ids.as_slice() {
                    [project, app] if !project.is_empty() && !app.is_empty() => {
                        self.gateway.modes().forget(project, app).await;
                        json(
                            serde_json::json!({"forgotten": {"project_id": project, "app_id": app}}),
                        )
                    }
                    _ => ApiError::new(
                        StatusCode::NOT_FOUND,
                        "use DELETE /apps/{project_id}/{app_id}",
                    )
                    .into_response(),
                }
            }
            (
                _,
                "/metrics" | "/healthz" | "/readyz" | "/apps" | "/report/migration" | "/reload",
            ) => ApiError::new(
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
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(&req).await) })
    }
}
