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

/// The peer address of the client connection, set per connection by the server.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

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

/// Everything the request path shares.
#[derive(Debug)]
pub struct GatewayState {
    upstream: UpstreamClient,
    api_origin: Origin,
    token_uri: Uri,
    metrics: Arc<Metrics>,
    policy: RwLock<Arc<PolicyRuntime>>,
    modes: Arc<ModeCache>,
    contacts: ContactCache,
    report: Arc<MigrationReport>,
    max_policy_body_bytes: usize,
    /// Passthrough auth: a caller's credential must be seen to work before mode-based decisions.
    verify_credentials: bool,
}

impl GatewayState {
    /// Creates the shared state from a validated config. `api` is the upstream origin,
    /// `token_uri` the absolute URL `POST /oauth2/token` is forwarded to.
    pub fn new(config: &Config, api: &Uri, token_uri: Uri, metrics: Arc<Metrics>) -> Option<Self> {
        let upstream = UpstreamClient::new(&config.upstream);
        let api_origin = Origin::from_uri(api)?;
        let lookup = Arc::new(UpstreamLookup::new(
            upstream.clone(),
            api_origin.clone(),
            metrics.clone(),
        ));
        let modes = Arc::new(ModeCache::new(
            &config.mode_cache,
            lookup.clone(),
            metrics.clone(),
        ));
        let contacts = ContactCache::new(config.mode_cache.ttl, config.mode_cache.max_apps, lookup);
        Some(Self {
            upstream,
            api_origin,
            token_uri,
            metrics,
            policy: RwLock::new(Arc::new(PolicyRuntime::new(config.policy.clone()))),
            modes,
            contacts,
            report: Arc::default(),
            max_policy_body_bytes: config.server.max_policy_body_bytes,
            verify_credentials: config.auth.mode == AuthMode::Passthrough,
        })
    }

    /// The metrics registry the gateway records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The mode cache.
    pub fn modes(&self) -> &Arc<ModeCache> {
        &self.modes
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
        let policy = self.policy();
        if policy.relevant(class.operation) {
            return self.enforce(policy, req, class).await;
        }
        let (parts, body) = req.into_parts();
        self.forward(
            parts,
            Either::Left(body),
            class.operation,
            Outcome::default(),
        )
        .await
    }

    /// Sends the (possibly rewritten) request upstream and prepares the response for the client.
    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: GatewayBody,
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
        let client_ip = parts.extensions.get::<ClientAddr>().map(|a| a.0.ip());
        headers::to_upstream(&mut parts.headers, client_ip);
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
        let (mut head, body) = response.into_parts();
        headers::to_client(&mut head.headers);
        head.version = Version::HTTP_11;
        let mut response = Response::from_parts(head, Either::Left(body));
        response.extensions_mut().insert(outcome);
        Ok(response)
    }
}

/// RFC 9112 §6.1: a request with both `Content-Length` and `Transfer-Encoding` is a smuggling
/// vector; it is refused (and the connection closed) rather than normalised. The connection's
/// [`FramingFlag`] records what hyper no longer shows once it has normalised the head.
fn check_framing<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let raised = req
        .extensions()
        .get::<FramingFlag>()
        .is_some_and(FramingFlag::is_raised);
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
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ]))
        .layer(request_id::RequestIdLayer)
        .layer(observe::ObserveLayer::new(metrics))
        .service(Core { state })
}
