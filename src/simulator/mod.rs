//! The built-in Conversation API simulator: an in-memory stand-in for
//! `https://{region}.conversation.api.sinch.com` plus its OAuth2 token endpoint, on one port,
//! and for the Batch API's origin on another ([`batch`]).
//!
//! It is its own service, never part of the gateway's request path. Besides the API it answers
//! control endpoints for tests and benchmarks: `GET /_simulator/calls` (per-operation call
//! counts, and callback deliveries), `POST /_simulator/tokens:expire` (expire every issued
//! token) and `POST /_simulator/inbound` (an MO from `{"project_id","app_id","channel",
//! "identity","text"}`, delivered to the app's webhooks as `MESSAGE_INBOUND`; see [`callbacks`]).

mod api;
mod auth;
mod batch;
pub mod callbacks;
mod lenient;
pub mod seed;
mod store;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::api_error::ApiError;
use crate::domain::Operation;
pub use batch::IN_PROCESS_BATCH_HOST;
pub use seed::Seed;
pub use store::{default_mode, DISPATCH_DEFAULT_SINCE_UNIX};

/// Largest body the simulator reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

struct State {
    authority: auth::Authority,
    projects: HashMap<String, store::Project>,
}

/// The simulator.
pub struct Simulator {
    state: Mutex<State>,
    faults: seed::Faults,
    calls: Vec<AtomicU64>,
    deliverer: callbacks::Deliverer,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether request number `n` (0-based) of a stream falls in a `ratio` share spread evenly.
fn in_share(n: u64, ratio: f64) -> bool {
    if ratio <= 0.0 {
        return false;
    }
    ((n + 1) as f64 * ratio).floor() > (n as f64 * ratio).floor()
}

impl Simulator {
    /// A simulator holding `seed`.
    pub fn new(seed: Seed) -> Arc<Simulator> {
        let projects = seed
            .projects
            .iter()
            .map(|p| (p.id.clone(), store::Project::from_seed(p)))
            .collect();
        Arc::new(Simulator {
            state: Mutex::new(State {
                authority: auth::Authority::new(
                    seed.credentials.clone(),
                    Duration::from_secs(seed.token_ttl_secs),
                ),
                projects,
            }),
            faults: seed.faults,
            calls: Operation::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            deliverer: callbacks::Deliverer::new(seed.callbacks),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many calls of `op` arrived so far (every call counts, including refused ones).
    pub fn calls(&self, op: Operation) -> u64 {
        self.calls[op.index()].load(Ordering::Relaxed)
    }

    /// Callback deliveries so far.
    pub fn callback_stats(&self) -> &callbacks::DeliveryStats {
        &self.deliverer.stats
    }

    /// Expires every issued token.
    pub fn expire_tokens(&self) {
        self.state().authority.expire_all();
    }

    /// The current mode of an app, if it exists.
    pub fn app_mode(&self, project: &str, app: &str) -> Option<crate::policy::ProcessingMode> {
        self.state()
            .projects
            .get(project)
            .and_then(|p| p.apps.get(app))
            .map(store::app_mode)
    }

    /// The service for [`crate::server::serve`].
    pub fn service(
        self: Arc<Self>,
    ) -> impl tower::Service<
        Request<Incoming>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |req: Request<Incoming>| {
            let sim = self.clone();
            async move { Ok(sim.handle(req).await) }
        })
    }

    /// The simulator as the gateway's upstream, in-process (no socket).
    pub fn upstream(self: Arc<Self>) -> crate::proxy::Upstream {
        tower::util::BoxCloneSyncService::new(tower::service_fn(
            move |req: Request<crate::proxy::GatewayBody>| {
                let sim = self.clone();
                async move {
                    let answer = if req.uri().host() == Some(IN_PROCESS_BATCH_HOST) {
                        sim.handle_batch(req).await
                    } else {
                        sim.handle(req).await
                    };
                    Ok::<_, crate::upstream::UpstreamFailure>(
                        answer.map(crate::upstream::full_body),
                    )
                }
            },
        ))
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        if path == "/_simulator/inbound" && parts.method == Method::POST {
            return self.inbound(body).await;
        }
        if let Some(control) = path.strip_prefix("/_simulator/") {
            return self.control(&parts.method, control);
        }
        // The front end's own reading of the request (see `lenient`).
        let method = lenient::effective_method(&parts.method, &parts.headers);
        let headers = lenient::last_authorization(&parts.headers);
        let mut route = lenient::route(&method, &path);
        let mut form_query = false;
        if route.is_none() && method == Method::POST && lenient::is_form(&headers) {
            route = lenient::route(&Method::GET, &path);
            form_query = route.is_some();
        }
        let op = route.as_ref().map_or(Operation::Other, |r| r.operation);
        let n = self.calls[op.index()].fetch_add(1, Ordering::Relaxed);

        let knobs = self
            .faults
            .operations
            .get(op.as_str())
            .copied()
            .unwrap_or(self.faults.all);
        if knobs.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
        }
        if in_share(n, knobs.rate_limit_ratio) {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; retry later",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        if in_share(n, knobs.failure_ratio) {
            let status = knobs
                .failure_status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return ApiError::new(status, "simulated failure").into_response();
        }

        let mut bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    .into_response()
            }
        };
        let mut pairs: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if form_query {
            pairs.extend(form_urlencoded::parse(&bytes).into_owned());
            bytes = Bytes::new();
        }
        let query = lenient::query(pairs);

        let Some(route) = route else {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no endpoint {} {path}", parts.method),
            )
            .into_response();
        };
        if op == Operation::OauthToken {
            return match self.state().authority.issue(&headers, &bytes) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err((status, v)) => json_response(status, &v),
            };
        }
        let body_json = if bytes.is_empty() {
            lenient::weave(Value::Object(Default::default()), method.as_str(), &query)
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => lenient::weave(lenient::body(v), method.as_str(), &query),
                Err(e) => {
                    return ApiError::invalid_argument(format!(
                        "body: invalid JSON at line {} column {}",
                        e.line(),
                        e.column()
                    ))
                    .into_response()
                }
            }
        };

        let mut state = self.state();
        if let Err(failure) = state.authority.verify(&headers, Some(&route.project)) {
            let mut r = failure.error.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, failure.challenge);
            return r;
        }
        let project = state.projects.entry(route.project.clone()).or_default();
        let call = api::Call {
            operation: op,
            id: route.id.as_deref(),
            tail: &route.tail,
            method: method.as_str(),
            query: &query,
            body: body_json,
        };
        let answer = api::handle(project, &call);
        let deliveries = match (&answer, op) {
            (Ok(v), Operation::SendMessage) => callbacks::for_send(
                project,
                &route.project,
                v.get("message_id").and_then(Value::as_str).unwrap_or(""),
                call.body
                    .get("correlation_id")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ),
            _ => Vec::new(),
        };
        drop(state);
        self.deliverer.spawn(deliveries);
        match answer {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => e.into_response(),
        }
    }

    /// `POST /_simulator/inbound`: an MO, stored and delivered as `MESSAGE_INBOUND`.
    async fn inbound<B>(&self, body: B) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Ok(bytes) = Limited::new(body, MAX_BODY).collect().await else {
            return ApiError::invalid_argument("body: unreadable").into_response();
        };
        let v: Value = serde_json::from_slice(&bytes.to_bytes()).unwrap_or(Value::Null);
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        let project_id = field("project_id");
        let mut state = self.state();
        let Some(project) = state.projects.get_mut(project_id) else {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("project {project_id} not found"),
            )
            .into_response();
        };
        let channel = Some(field("channel"))
            .filter(|c| !c.is_empty())
            .unwrap_or("SMS");
        let message = match api::inbound(
            project,
            field("app_id"),
            channel,
            field("identity"),
            field("text"),
        ) {
            Ok(m) => m,
            Err(e) => return e.into_response(),
        };
        let deliveries = callbacks::for_inbound(project, project_id, &message);
        drop(state);
        let n = deliveries.len();
        self.deliverer.spawn(deliveries);
        json_response(
            StatusCode::OK,
            &serde_json::json!({"message_id": message.id, "callbacks": n}),
        )
    }

    fn control(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        match (method, path) {
            (&Method::GET, "calls") => {
                let counts: serde_json::Map<String, Value> = Operation::ALL
                    .iter()
                    .map(|op| (op.as_str().to_string(), Value::from(self.calls(*op))))
                    .filter(|(_, v)| v.as_u64() != Some(0))
                    .collect();
                let stats = self.callback_stats();
                let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
                json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "operations": counts, "callbacks": {
                        "attempts": n(&stats.attempts),
                        "delivered": n(&stats.delivered),
                        "failed": n(&stats.failed),
                    }}),
                )
            }
            (&Method::POST, "tokens:expire") => {
                self.expire_tokens();
                json_response(StatusCode::OK, &serde_json::json!({}))
            }
            _ => ApiError::new(StatusCode::NOT_FOUND, "no such simulator control endpoint")
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_spread_evenly() {
        let hits = (0..100).filter(|n| in_share(*n, 0.25)).count();
        assert_eq!(hits, 25);
        assert!((0..100).all(|n| in_share(n, 1.0)));
        assert!(!(0..100).any(|n| in_share(n, 0.0)));
    }

    #[test]
    fn dispatch_default_starts_on_2025_04_16() {
        let day = std::time::UNIX_EPOCH + Duration::from_secs(DISPATCH_DEFAULT_SINCE_UNIX);
        assert_eq!(
            humantime::format_rfc3339(day).to_string(),
            "2025-04-16T00:00:00Z"
        );
        assert_eq!(default_mode(day), crate::policy::ProcessingMode::Dispatch);
        assert_eq!(
            default_mode(day - Duration::from_secs(1)),
            crate::policy::ProcessingMode::Conversation
        );
    }
}
