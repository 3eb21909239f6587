//! The proxy: one tower stack per listener, layers in request order, and the core that checks
//! the request target, applies policy and forwards.
//!
//! ```text
//! sensitive headers → request id → observe (classify, span, metrics) → core (→ rescue)
//! ```
//!
//! The core's own future ends in [`rescue`], the one place a `GatewayError` becomes a response.

pub mod classify;
pub mod enforce;
pub mod forward;
pub mod headers;
pub mod lookup;
pub mod observe;
pub mod request_id;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::{header, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::auth::{InboundAuth, Secret, TokenSource};
use crate::config::{AuthMode, Config};
use crate::contact_cache::ContactCache;
use crate::error::{rescue, GatewayError};
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::mode_cache::ModeCache;
use crate::policy::{Disposition, RuleId};
use crate::report::MigrationReport;
use crate::server::framing::FramingFlag;
use classify::{classify, Classification, Operation};
use enforce::PolicyRuntime;
pub use forward::GatewayBody;
use forward::{Origin, UpstreamClient};
use lookup::UpstreamLookup;

/// What every gateway response is.
pub type GatewayResponse = Response<GatewayBody>;

/// What the proxy knows of a client connection, built once per connection and shared by its
/// requests (one request extension).
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its `x-forwarded-for` value.
    pub forwarded_for: http::HeaderValue,
    /// Raised when a request on this connection carried both framing headers.
    pub framing: FramingFlag,
}

impl Connection {
    /// From the server's connection info.
    pub fn new(info: crate::server::ConnectionInfo) -> Arc<Connection> {
        Arc::new(Connection {
            peer: info.peer,
            forwarded_for: headers::forwarded_for(info.peer.ip()),
            framing: info.framing,
        })
    }
}

/// What the gateway did, attached to a response for the observe layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The `x-modegate-decision`.
    pub disposition: Disposition,
    /// The `x-modegate-rule`, when a rule rewrote or rejected.
    pub rule: Option<RuleId>,
    /// Whether the gateway failed to complete the request (counted as decision `error`).
    pub error: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            disposition: Disposition::Forwarded,
            rule: None,
            error: false,
        }
    }
}

/// The secrets inject mode needs, read from the environment at start-up.
#[derive(Debug)]
pub struct InjectSecrets {
    /// Access key id.
    pub key_id: Secret,
    /// Access key secret.
    pub key_secret: Secret,
    /// Inbound shared secret, if configured.
    pub inbound: Option<Secret>,
}

/// Everything the request path shares.
#[derive(Debug)]
pub struct GatewayState {
    upstream: UpstreamClient,
    api_origin: Origin,
    token_uri: Uri,
    metrics: Arc<Metrics>,
    policy: RwLock<Arc<PolicyRuntime>>,
    modes: RwLock<Arc<ModeCache>>,
    lookup: Arc<UpstreamLookup>,
    contacts: ContactCache,
    report: Arc<MigrationReport>,
    max_policy_body_bytes: usize,
    /// Passthrough auth: a caller's credential must be seen to work before mode-based decisions.
    verify_credentials: bool,
    /// Inject auth: the gateway's own key.
    inject: Option<Inject>,
    /// `[log] access_log`.
    access_log: bool,
}

impl GatewayState {
    /// Creates the shared state from a validated config. `api` is the upstream origin,
    /// `token_uri` the absolute URL `POST /oauth2/token` is forwarded to.
    pub fn new(
        config: &Config,
        api: &Uri,
        token_uri: Uri,
        metrics: Arc<Metrics>,
        secrets: Option<InjectSecrets>,
    ) -> Option<Self> {
        let upstream = UpstreamClient::new(&config.upstream);
        let api_origin = Origin::from_uri(api)?;
        let lookup = Arc::new(UpstreamLookup::new(
            upstream.clone(),
            api_origin.clone(),
            metrics.clone(),
        ));
        let modes = RwLock::new(Arc::new(ModeCache::new(
            &config.mode_cache,
            lookup.clone(),
            metrics.clone(),
        )));
        let contacts = ContactCache::new(
            config.mode_cache.ttl,
            config.mode_cache.max_apps,
            lookup.clone(),
        );
        let inject = secrets.map(|secrets| Inject {
            tokens: TokenSource::new(
                upstream.clone(),
                token_uri.clone(),
                &secrets.key_id,
                &secrets.key_secret,
            ),
            inbound: InboundAuth::new(secrets.inbound),
        });
        Some(Self {
            upstream,
            api_origin,
            token_uri,
            metrics,
            policy: RwLock::new(Arc::new(PolicyRuntime::new(config.policy.clone()))),
            modes,
            lookup,
            contacts,
            report: Arc::default(),
            max_policy_body_bytes: config.server.max_policy_body_bytes,
            verify_credentials: config.auth.mode == AuthMode::Passthrough,
            inject,
            access_log: config.log.access_log,
        })
    }

    /// The metrics registry the gateway records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The mode cache in force.
    pub fn modes(&self) -> Arc<ModeCache> {
        self.modes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies the reloadable part of `new` (see [`crate::reload`]); `old` is the config in
    /// force. Returns whether the mode cache was replaced.
    pub fn apply(&self, new: &Config, old: &Config) -> bool {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(PolicyRuntime::new(new.policy.clone()));
        if old.mode_cache == new.mode_cache {
            return false;
        }
        let fresh = Arc::new(ModeCache::new(
            &new.mode_cache,
            self.lookup.clone(),
            self.metrics.clone(),
        ));
        let previous = std::mem::replace(
            &mut *self.modes.write().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        // The old cache's entries leave the gauge with it.
        for app in previous.known_apps() {
            self.metrics.add_cached_apps(app.mode, -1);
        }
        true
    }

    /// The migration report.
    pub fn report(&self) -> &Arc<MigrationReport> {
        &self.report
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<PolicyRuntime> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refuses targets that would make the gateway an open proxy or a tunnel.
    fn check_target<B>(&self, req: &Request<B>) -> Result<(), GatewayError> {
        if req.method() == http::Method::CONNECT {
            return Err(GatewayError::ConnectMethod);
        }
        // HTTP/2 always carries :authority; it plays the part of Host and chooses nothing. In
        // HTTP/1 an authority means absolute-form, acceptable only when it names the upstream.
        if req.version() < Version::HTTP_2 {
            if let Some(authority) = req.uri().authority() {
                if authority != self.api_origin.authority() {
                    return Err(GatewayError::ForeignTarget);
                }
            }
        }
        Ok(())
    }

    /// Handles one request after the outer layers.
    async fn handle(&self, req: Request<Incoming>) -> Result<GatewayResponse, GatewayError> {
        self.check_target(&req)?;
        check_framing(&req)?;
        let class = match req.extensions().get::<Classification>() {
            Some(c) => *c,
            None => classify(req.method(), req.uri().path()),
        };
        if let Some(inject) = &self.inject {
            if class.operation == Operation::OauthToken {
                return Ok(inject.token_answer(req.headers()));
            }
            if !inject.inbound.admits(req.headers()) {
                return Err(GatewayError::InboundUnauthenticated);
            }
        }
        let policy = self.policy();
        if policy.relevant(class.operation) {
            return self.enforce(policy, req, class).await;
        }
        let (parts, body) = req.into_parts();
        let body = self.replayable(body).await?;
        self.forward(parts, body, class.operation, Outcome::default())
            .await
    }

    /// In inject mode a request may have to be sent twice (after a 401 for an expired token),
    /// so small bodies are read whole; everything else streams.
    async fn replayable(&self, body: Incoming) -> Result<OutboundBody, GatewayError> {
        let small = hyper::body::Body::size_hint(&body)
            .exact()
            .is_some_and(|n| n <= self.max_policy_body_bytes as u64);
        if self.inject.is_some() && small {
            return Ok(OutboundBody::Bytes(
                enforce::read_body(body, self.max_policy_body_bytes).await?,
            ));
        }
        Ok(OutboundBody::Stream(body))
    }

    /// Sends the (possibly rewritten) request upstream and prepares the response for the client.
    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: OutboundBody,
        operation: Operation,
        outcome: Outcome,
    ) -> Result<GatewayResponse, GatewayError> {
        parts.uri = if operation == Operation::OauthToken {
            self.token_uri.clone()
        } else {
            let pq = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            self.api_origin.uri(&pq)
        };
        let client = parts
            .extensions
            .get::<Arc<Connection>>()
            .map(|c| c.forwarded_for.clone());
        headers::to_upstream(&mut parts.headers, client.as_ref());
        let mut response = match &self.inject {
            None => {
                self.send(parts, body.into_gateway(), operation, outcome)
                    .await?
            }
            Some(inject) => {
                let token = inject.authorization().await?;
                parts.headers.insert(header::AUTHORIZATION, token.clone());
                let replay = match &body {
                    OutboundBody::Bytes(bytes) => Some((
                        parts.method.clone(),
                        parts.uri.clone(),
                        parts.headers.clone(),
                        bytes.clone(),
                    )),
                    OutboundBody::Stream(_) => None,
                };
                let response = self
                    .send(parts, body.into_gateway(), operation, outcome)
                    .await?;
                match replay {
                    Some((method, uri, mut headers, bytes))
                        if response.status() == http::StatusCode::UNAUTHORIZED
                            && crate::auth::says_expired(response.headers()) =>
                    {
                        tracing::info!(
                            operation = operation.as_str(),
                            "upstream token expired; refreshing and retrying once"
                        );
                        inject.tokens.invalidate(&token);
                        headers.insert(header::AUTHORIZATION, inject.authorization().await?);
                        let mut retry =
                            Request::new(Either::Right(http_body_util::Full::new(bytes)));
                        *retry.method_mut() = method;
                        *retry.uri_mut() = uri;
                        *retry.headers_mut() = headers;
                        let (parts, body) = retry.into_parts();
                        self.send(parts, body, operation, outcome).await?
                    }
                    _ => response,
                }
            }
        };
        headers::to_client(response.headers_mut());
        *response.version_mut() = Version::HTTP_11;
        let mut response = response.map(Either::Left);
        response.extensions_mut().insert(outcome);
        Ok(response)
    }

    /// One upstream exchange, timed and counted.
    async fn send(
        &self,
        parts: http::request::Parts,
        body: GatewayBody,
        operation: Operation,
        outcome: Outcome,
    ) -> Result<Response<Incoming>, GatewayError> {
        let request = Request::from_parts(parts, body);
        let (response, elapsed) = self.upstream.send(request).await.map_err(|failure| {
            self.metrics.upstream_error(failure.kind);
            GatewayError::Upstream {
                kind: failure.kind,
                detail: failure.detail,
                attempted: outcome.disposition,
            }
        })?;
        self.metrics
            .record_upstream(operation, elapsed.as_secs_f64());
        if response.status().is_server_error() {
            self.metrics.upstream_error(UpstreamErrorKind::Status5xx);
        }
        Ok(response)
    }
}

/// A request body on its way upstream: streamed as received, or bytes the gateway holds
/// (read for a rule, rewritten, or kept for a replay).
#[derive(Debug)]
pub enum OutboundBody {
    /// Streamed from the client.
    Stream(Incoming),
    /// Held whole.
    Bytes(bytes::Bytes),
}

impl OutboundBody {
    fn into_gateway(self) -> GatewayBody {
        match self {
            OutboundBody::Stream(b) => Either::Left(b),
            OutboundBody::Bytes(b) => Either::Right(http_body_util::Full::new(b)),
        }
    }
}

/// Inject mode: the gateway's token source and who may use it.
#[derive(Debug)]
pub struct Inject {
    /// Upstream tokens.
    pub tokens: TokenSource,
    /// Inbound admission.
    pub inbound: InboundAuth,
}

impl Inject {
    async fn authorization(&self) -> Result<http::HeaderValue, GatewayError> {
        self.tokens
            .authorization()
            .await
            .map_err(|f| GatewayError::Token {
                kind: f.kind,
                detail: f.detail,
            })
    }

    /// `POST /oauth2/token` in inject mode: a local token for admitted callers.
    fn token_answer(&self, headers: &http::HeaderMap) -> GatewayResponse {
        let (status, body) = match self.inbound.issue_local_token(headers) {
            Some(token) => (http::StatusCode::OK, token),
            None => (
                http::StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "invalid_client", "error_description": "present the gateway's shared secret"}),
            ),
        };
        let mut response = Response::new(Either::Right(http_body_util::Full::new(
            bytes::Bytes::from(body.to_string()),
        )));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response.extensions_mut().insert(Outcome {
            disposition: if status.is_success() {
                Disposition::Rewritten
            } else {
                Disposition::Rejected
            },
            rule: None,
            error: false,
        });
        response
    }
}

/// RFC 9112 §6.1: a request with both `Content-Length` and `Transfer-Encoding` is a smuggling
/// vector; it is refused (and the connection closed) rather than normalised. The connection's
/// [`FramingFlag`] records what hyper no longer shows once it has normalised the head.
fn check_framing<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let raised = req
        .extensions()
        .get::<Arc<Connection>>()
        .is_some_and(|c| c.framing.is_raised());
    let h = req.headers();
    if raised
        || (h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH))
    {
        return Err(GatewayError::AmbiguousFraming);
    }
    Ok(())
}

/// The innermost service: the gateway's own work, its errors rescued into responses.
#[derive(Clone, Debug)]
pub struct Core {
    state: Arc<GatewayState>,
}

impl Service<Request<Incoming>> for Core {
    type Response = GatewayResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { rescue(state.handle(req).await) })
    }
}

/// The full proxy stack for one listener, in request order.
pub fn stack(
    state: Arc<GatewayState>,
) -> impl Service<
    Request<Incoming>,
    Response = GatewayResponse,
    Error = Infallible,
    Future = impl Future<Output = Result<GatewayResponse, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    let metrics = state.metrics.clone();
    let access_log = state.access_log;
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ]))
        .layer(request_id::RequestIdLayer)
        .layer(observe::ObserveLayer::new(metrics, access_log))
        .service(Core { state })
}
