//! The callback listener: Sinch POSTs callbacks (MO, delivery reports, events…) to a path
//! configured in `[[callbacks.webhook]]`; each is checked and forwarded to the webhook's
//! `target`, whose answer goes back to Sinch.
//!
//! One callback, top to bottom ([`Callbacks::handle`]):
//!
//! 1. the path names a webhook (else 404), the method is POST (else 405);
//! 2. the body is read whole, up to `server.max_policy_body_bytes` (413 above), when a step
//!    reads it; otherwise it streams through untouched;
//! 3. with a secret: the signature over the exact bytes, the timestamp window and the nonce
//!    ([`signature`], [`replay`]); any failure is 401 `UNAUTHENTICATED` and the target never
//!    sees the callback;
//! 4. with `fill_ids = "pseudo"`: empty ids of a DISPATCH callback become pseudo ids ([`fill`]);
//! 5. with a secret: signed again for the bytes forwarded (fresh nonce and timestamp, the first
//!    secret), so a consumer that verifies keeps verifying;
//! 6. delivered ([`forward`]); the target's status and body are the answer, 502 when it cannot
//!    be reached, 504 after `timeout_ms`. The nonce counts as seen only after a 2xx.
//!
//! The listener never calls the Conversation API: a callback's mode is its own
//! `processing_mode`. Nothing of a body, signature, secret or identity is logged.

pub mod consumer;
pub mod fill;
pub mod forward;
pub mod replay;
pub mod signature;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::api_error::ApiError;
use crate::config::{CallbackSettings, Config, FillIds, WebhookSettings};
use crate::domain::Operation;
use crate::metrics::{CallbackOutcome, DecisionLabel, Metrics};
use crate::pseudo_ids::PseudoIds;
use crate::server::{ConnectionSettings, Shutdown};
use crate::shared_cache::RedisTarget;
use crate::upstream::{self, BoxError, GatewayBody, Upstream};
use replay::{ReplayError, ReplayGuard, SharedNonces};
use signature::{Refusal, Secrets};

/// One configured webhook with what it needs at run time.
struct Webhook {
    settings: WebhookSettings,
    secrets: Option<Secrets>,
    replay: Option<Arc<ReplayGuard>>,
}

/// The callback listener's state.
pub struct Callbacks {
    webhooks: Vec<Webhook>,
    client: Upstream,
    metrics: Arc<Metrics>,
    max_body: usize,
    body_idle: Duration,
    pseudo_ids: Option<PseudoIds>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("webhooks", &self.webhooks.len())
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(format!("environment variable {name} is empty")),
        Err(_) => Err(format!("environment variable {name} is not set")),
    }
}

/// Whether a webhook fills ids with pseudo ids.
fn fills_pseudo_ids(settings: &CallbackSettings) -> bool {
    settings
        .webhooks
        .iter()
        .any(|w| w.fill_ids == FillIds::Pseudo)
}

fn secrets(i: usize, w: &WebhookSettings) -> Result<Option<Secrets>, (String, String)> {
    w.secret_env
        .as_deref()
        .map(|name| {
            env(name)
                .and_then(|s| {
                    Secrets::parse(&s).map_err(|e| format!("environment variable {name} {e}"))
                })
                .map_err(|m| (format!("callbacks.webhook[{i}].secret_env"), m))
        })
        .transpose()
}

/// What keeps the callback listener from starting, from the environment: `(key, message)`
/// pairs for `check-config` (messages never quote a secret). The pseudo-id keys are the
/// gateway's, checked with the other start-time problems.
pub fn start_problems(settings: &CallbackSettings) -> Vec<(String, String)> {
    if settings.listen.is_none() {
        return Vec::new();
    }
    settings
        .webhooks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| secrets(i, w).err())
        .collect()
}

/// The callback listener, bound.
pub struct Listener {
    callbacks: Arc<Callbacks>,
    listener: tokio::net::TcpListener,
}

impl Listener {
    /// Its address.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// Serves the callback listener, if there is one, until `shutdown`, then drains.
pub async fn serve(listener: Option<Listener>, settings: ConnectionSettings, shutdown: Shutdown) {
    let Some(Listener {
        callbacks,
        listener,
    }) = listener
    else {
        return;
    };
    let service = callbacks.service();
    crate::server::serve(
        "callbacks",
        listener,
        move |_: crate::server::ConnectionInfo| service.clone(),
        settings,
        shutdown,
    )
    .await;
}

/// Seconds since `started`.
fn since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

impl Callbacks {
    /// The listener's state for `config` (`None` without `callbacks.listen`), reading secrets
    /// and keys from the environment; nonces are shared through `redis` when given.
    pub fn new(
        config: &Config,
        redis: Option<&RedisTarget>,
        metrics: Arc<Metrics>,
        pseudo_ids: Option<&PseudoIds>,
    ) -> Result<Option<Arc<Callbacks>>, String> {
        let settings = &config.callbacks;
        if settings.listen.is_none() {
            return Ok(None);
        }
        let shared = redis
            .map(|r| SharedNonces::new(r, metrics.clone()))
            .transpose()?;
        let mut webhooks = Vec::new();
        for (i, w) in settings.webhooks.iter().enumerate() {
            let secrets = secrets(i, w).map_err(|(k, m)| format!("{k}: {m}"))?;
            let replay = secrets
                .as_ref()
                .map(|_| ReplayGuard::new(&w.path, w.max_skew, w.timeout, shared.clone()));
            webhooks.push(Webhook {
                settings: w.clone(),
                secrets,
                replay,
            });
        }
        let longest = settings
            .webhooks
            .iter()
            .map(|w| w.timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        Ok(Some(Arc::new(Callbacks {
            webhooks,
            client: forward::client(&config.upstream, longest, config.server.http1_engine)?,
            metrics,
            max_body: config.server.max_policy_body_bytes,
            body_idle: config.server.body_idle_timeout,
            // The gateway's keys (read once at start, from `callbacks.id_key_env`), when a
            // webhook fills ids.
            pseudo_ids: match (pseudo_ids, fills_pseudo_ids(settings)) {
                (Some(keys), true) => Some(keys.clone()),
                (None, true) => {
                    return Err("callbacks.id_key_env: no keys to seal pseudo ids with".into())
                }
                (_, false) => None,
            },
        })))
    }

    /// The listener serving these callbacks on `listener`.
    pub fn listener(self: Arc<Self>, listener: tokio::net::TcpListener) -> Listener {
        Listener {
            callbacks: self,
            listener,
        }
    }

    /// The service for [`crate::server::serve`].
    pub fn service(
        self: Arc<Self>,
    ) -> impl tower::Service<
        Request<crate::server::ProxyBody>,
        Response = Response<GatewayBody>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<GatewayBody>, Infallible>> + Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |req: Request<crate::server::ProxyBody>| {
            let this = self.clone();
            async move { Ok(this.handle(req).await) }
        })
    }

    /// Answers one callback.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<GatewayBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let Some(webhook) = self
            .webhooks
            .iter()
            .find(|w| w.settings.path == parts.uri.path())
        else {
            self.metrics.record_request(
                Operation::Callback,
                DecisionLabel::Rejected,
                since(started),
            );
            return error(ApiError::new(
                StatusCode::NOT_FOUND,
                "no callback webhook is configured at this path",
            ));
        };
        if parts.method != Method::POST {
            self.metrics.record_request(
                Operation::Callback,
                DecisionLabel::Rejected,
                since(started),
            );
            let mut r = error(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed here; callbacks are POSTed", parts.method),
            ));
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let (outcome, response) = self.deliver(webhook, parts.headers, body).await;
        let seconds = since(started);
        let decision = match outcome {
            Some(CallbackOutcome::Filled) => DecisionLabel::Rewritten,
            Some(CallbackOutcome::Forwarded | CallbackOutcome::Unsigned) => {
                DecisionLabel::Forwarded
            }
            Some(
                CallbackOutcome::BadSignature | CallbackOutcome::Stale | CallbackOutcome::Replayed,
            )
            | None => DecisionLabel::Rejected,
            Some(CallbackOutcome::TargetError | CallbackOutcome::Unavailable) => {
                DecisionLabel::Error
            }
        };
        if let Some(outcome) = outcome {
            self.metrics.record_callback(outcome, seconds);
            if decision == DecisionLabel::Rejected {
                tracing::info!(
                    target: "modegate::decision",
                    decision_id = %crate::ids::hex_id(),
                    operation = Operation::Callback.as_str(),
                    webhook = %webhook.settings.path,
                    outcome = outcome.as_str(),
                    "callback refused"
                );
            }
        }
        self.metrics
            .record_request(Operation::Callback, decision, seconds);
        response
    }

    /// Steps 2–6 for one webhook; the outcome is `None` for a body that could not be read.
    async fn deliver<B>(
        &self,
        webhook: &Webhook,
        mut headers: HeaderMap,
        body: B,
    ) -> (Option<CallbackOutcome>, Response<GatewayBody>)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return (None, too_large(self.max_body));
        }
        let fills = webhook.settings.fill_ids == FillIds::Pseudo && self.pseudo_ids.is_some();
        let settings = &webhook.settings;
        if webhook.secrets.is_none() && !fills {
            // Nothing reads the body: it streams through, byte for byte.
            let body = upstream::boxed(Limited::new(body, self.max_body));
            let (outcome, response) = self
                .send(settings, forward::end_to_end(headers), body)
                .await;
            let outcome = if outcome {
                CallbackOutcome::Unsigned
            } else {
                CallbackOutcome::TargetError
            };
            return (Some(outcome), response);
        }
        let bytes = match read_whole(body, self.max_body, self.body_idle).await {
            Ok(bytes) => bytes,
            Err(e) => {
                if e.status == StatusCode::REQUEST_TIMEOUT {
                    self.metrics.body_idle_timeout("request");
                }
                return (None, error(e));
            }
        };
        let mut reservation = None;
        if let (Some(secrets), Some(replay)) = (&webhook.secrets, &webhook.replay) {
            let nonce = match secrets.check(
                &headers,
                &bytes,
                signature::unix_now(),
                settings.max_skew.as_secs(),
            ) {
                Ok(nonce) => nonce,
                Err(Refusal::BadSignature) => {
                    return unauthenticated(
                        CallbackOutcome::BadSignature,
                        "the callback's signature headers are missing or do not match its body",
                    )
                }
                Err(Refusal::Stale) => {
                    return unauthenticated(
                        CallbackOutcome::Stale,
                        "the callback's signature timestamp is outside the accepted window",
                    )
                }
            };
            match replay.reserve(nonce).await {
                Ok(r) => reservation = Some(r),
                Err(ReplayError::Replayed) => {
                    return unauthenticated(
                        CallbackOutcome::Replayed,
                        "the callback's nonce was already used",
                    )
                }
                Err(ReplayError::Unavailable) => {
                    let mut r = error(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the replay cache cannot be reached; retry later",
                    ));
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return (Some(CallbackOutcome::Unavailable), r);
                }
            }
        }
        let filled = if fills {
            self.pseudo_ids
                .as_ref()
                .and_then(|ids| fill::fill(&bytes, ids))
        } else {
            None
        };
        let changed = filled.is_some();
        let bytes = filled.map_or(bytes, Bytes::from);
        if let Some(secrets) = &webhook.secrets {
            // Replaces the sender's four headers: signed for exactly the bytes forwarded.
            for (name, value) in signature::signed_headers(secrets.signing(), &bytes) {
                headers.insert(name, value);
            }
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let (delivered, response) = self
            .send(
                settings,
                forward::end_to_end(headers),
                upstream::full(bytes),
            )
            .await;
        if let Some(r) = reservation {
            if delivered {
                r.confirm().await;
            } else {
                r.release().await;
            }
        }
        let outcome = match (delivered, changed, webhook.secrets.is_some()) {
            (false, _, _) => CallbackOutcome::TargetError,
            (true, true, _) => CallbackOutcome::Filled,
            (true, false, true) => CallbackOutcome::Forwarded,
            (true, false, false) => CallbackOutcome::Unsigned,
        };
        (Some(outcome), response)
    }

    /// Delivers to the target; true when it answered 2xx. The response is the target's answer,
    /// or 502 / 504.
    async fn send(
        &self,
        settings: &WebhookSettings,
        headers: HeaderMap,
        body: GatewayBody,
    ) -> (bool, Response<GatewayBody>) {
        let delivered = forward::deliver(
            &self.client,
            &settings.target,
            headers,
            body,
            settings.timeout,
            self.max_body,
        )
        .await;
        match delivered {
            Ok(answer) => {
                let ok = answer.status.is_success();
                if !ok {
                    tracing::warn!(webhook = %settings.path, status = answer.status.as_u16(), "callback target refused the callback");
                }
                let mut r = Response::new(upstream::full(answer.body));
                *r.status_mut() = answer.status;
                if let Some(ct) = answer.content_type {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                (ok, r)
            }
            Err(forward::DeliveryError::Timeout) => {
                tracing::warn!(webhook = %settings.path, timeout = ?settings.timeout, "callback target did not answer in time");
                (
                    false,
                    error(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the callback target did not answer in time",
                    )),
                )
            }
            Err(forward::DeliveryError::Unreachable(detail)) => {
                tracing::warn!(webhook = %settings.path, error = %detail, "callback target unreachable");
                (
                    false,
                    error(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "the callback target cannot be reached",
                    )),
                )
            }
        }
    }
}

/// Reads a body whole: at most `limit` bytes (413), each frame within `idle` (408).
async fn read_whole<B>(body: B, limit: usize, idle: Duration) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the callback body made no progress for the body idle timeout",
                ))
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(_))) => {
                return Err(ApiError::invalid_argument("the callback body was cut off"))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(too_large_error(limit));
            }
            out.extend_from_slice(&data);
        }
    }
}

fn error(e: ApiError) -> Response<GatewayBody> {
    e.into_response().map(upstream::full_body)
}

fn too_large_error(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the callback body is larger than {limit} bytes (server.max_policy_body_bytes)"),
    )
}

fn too_large(limit: usize) -> Response<GatewayBody> {
    error(too_large_error(limit))
}

fn unauthenticated(
    outcome: CallbackOutcome,
    message: &str,
) -> (Option<CallbackOutcome>, Response<GatewayBody>) {
    (
        Some(outcome),
        error(ApiError::new(StatusCode::UNAUTHORIZED, message)),
    )
}
