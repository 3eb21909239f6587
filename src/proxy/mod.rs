//! The proxy: one tower stack per connection, layers in request order, over the request
//! handler ([`handler`]), whose phases read top to bottom.
//!
//! ```text
//! sensitive headers → connection info → request id → canonical target
//!   → observe (classify, span, metrics)
//!   → rescue (GatewayError → API-shaped answer) → handler:
//!     snapshot → admit → facts → decide → act → forward → learn
//! ```
//!
//! [`GatewayState`] is everything requests share; [`Deps`] are the seams tests replace: the
//! upstream service, the mode and contact lookups and the clock.

pub mod admit;
pub mod batch;
pub mod body;
pub mod canonical;
pub mod classify;
pub mod connection;
pub mod contact;
pub mod ctx;
pub mod decide;
pub mod enforce;
pub mod facts;
pub mod forward;
pub mod handler;
pub mod headers;
pub mod idle;
pub mod json;
pub mod learn;
pub mod lookup;
pub mod meta;
pub mod observe;
pub mod pseudo;
pub mod query;
pub mod request_id;
pub mod rescue;
pub mod snapshot;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, RwLock};

use http::{header, Request, Response, Uri};
use tower::{Service, ServiceBuilder};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::auth::{InboundAuth, Secret, TokenSource};
use crate::clock::Clock;
use crate::config::{AuthMode, Config};
use crate::contact_cache::{ContactCache, ContactLookup};
use crate::message_index::MessageIndex;
use crate::metrics::Metrics;
use crate::mode_cache::{ModeCache, ModeLookup};
use crate::report::MigrationReport;
use crate::shared_cache::SharedModes;
use crate::upstream::{self as upstream, Origin};
pub use crate::upstream::{BoxError, GatewayBody, Upstream};
pub use connection::Connection;
pub use ctx::{Outcome, RuleList};
use snapshot::{PolicyRuntime, Snapshot};

/// What every gateway response is.
pub type GatewayResponse = Response<GatewayBody>;

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

/// The seams of the request path. `Deps::default()` is production: the pooled hyper client,
/// lookups through it, and the system clock.
#[derive(Default)]
pub struct Deps {
    /// Where every upstream request goes (forwarded calls, lookups, token fetches).
    pub upstream: Option<Upstream>,
    /// App-mode lookups (default: `GET app` through the upstream).
    pub mode_lookup: Option<Arc<dyn ModeLookup>>,
    /// Contact lookups for the recipient rewrite (default: `GET contact` through the upstream).
    pub contact_lookup: Option<Arc<dyn ContactLookup>>,
    /// The clock caches age by.
    pub clock: Clock,
    /// The Redis replicas share modes through (`build` reads it from the environment).
    pub shared_cache: Option<crate::shared_cache::RedisTarget>,
    /// The keys pseudo ids are opened with (`build` reads them from `callbacks.id_key_env`).
    pub pseudo_ids: Option<crate::pseudo_ids::PseudoIds>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("upstream", &self.upstream.is_some())
            .field("mode_lookup", &self.mode_lookup.is_some())
            .field("contact_lookup", &self.contact_lookup.is_some())
            .field("clock", &self.clock)
            .field("shared_cache", &self.shared_cache)
            .field("pseudo_ids", &self.pseudo_ids)
            .finish()
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

/// Everything the request path shares.
pub struct GatewayState {
    upstream: Upstream,
    api_origin: Origin,
    /// The Batch API origin (`upstream.batch_base_url`), when a batch listener forwards there.
    batch_origin: Option<Origin>,
    token_uri: Uri,
    metrics: Arc<Metrics>,
    clock: Clock,
    policy: RwLock<Arc<PolicyRuntime>>,
    modes: Arc<RwLock<Arc<ModeCache>>>,
    shared: Option<Arc<SharedModes>>,
    messages: RwLock<Arc<MessageIndex>>,
    mode_lookup: Arc<dyn ModeLookup>,
    contacts: ContactCache,
    report: Arc<MigrationReport>,
    max_policy_body_bytes: usize,
    /// `server.max_batch_body_bytes`.
    max_batch_body_bytes: usize,
    /// `server.body_idle_timeout_secs`.
    body_idle_timeout: std::time::Duration,
    /// Passthrough auth: a caller's credential must be seen to work before mode-based decisions.
    verify_credentials: bool,
    /// Inject auth: the gateway's own key.
    inject: Option<Inject>,
    /// Rule `dispatch.pseudo_ids`: the keys pseudo ids are opened with.
    pseudo_ids: Option<crate::pseudo_ids::PseudoIds>,
    /// `[log] access_log`.
    access_log: bool,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("api_origin", &self.api_origin)
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// The body to forward when no rule reads it (see [`body::replayable`]): held whole in
    /// inject mode when small, so it can be sent again after an expired-token 401.
    pub(crate) async fn replayable(
        &self,
        body: GatewayBody,
    ) -> Result<body::OutboundBody, crate::error::GatewayError> {
        body::replayable(body, self.inject.is_some(), self.max_policy_body_bytes).await
    }

    /// The keys pseudo ids are opened with, when `callbacks.id_key_env` is set.
    pub fn pseudo_ids(&self) -> Option<&crate::pseudo_ids::PseudoIds> {
        self.pseudo_ids.as_ref()
    }

    /// Creates the shared state from a validated config. `api` is the upstream origin,
    /// `token_uri` the absolute URL `POST /oauth2/token` is forwarded to. `None` when `api` is
    /// not an absolute URL (validation normally guarantees it is).
    pub fn new(
        config: &Config,
        api: &Uri,
        token_uri: Uri,
        secrets: Option<InjectSecrets>,
        deps: Deps,
    ) -> Option<Self> {
        let metrics = Arc::new(Metrics::new());
        let api_origin = Origin::from_uri(api)?;
        let upstream = deps.upstream?;
        let lookups = Arc::new(lookup::UpstreamLookup::new(
            upstream.clone(),
            api_origin.clone(),
            metrics.clone(),
        ));
        let mode_lookup: Arc<dyn ModeLookup> = deps.mode_lookup.unwrap_or_else(|| lookups.clone());
        let contact_lookup: Arc<dyn ContactLookup> = deps.contact_lookup.unwrap_or(lookups);
        let clock = deps.clock;
        let shared = match deps.shared_cache {
            Some(target) if tokio::runtime::Handle::try_current().is_ok() => {
                match SharedModes::new(target, metrics.clone()) {
                    Ok(shared) => Some(shared),
                    Err(e) => {
                        tracing::error!(error = %e, "shared mode cache disabled");
                        None
                    }
                }
            }
            Some(_) => {
                tracing::error!("shared mode cache disabled: not started inside a runtime");
                None
            }
            None => None,
        };
        let modes = Arc::new(RwLock::new(Arc::new(
            ModeCache::new(
                &config.mode_cache,
                mode_lookup.clone(),
                metrics.clone(),
                clock.clone(),
            )
            .with_shared(shared.clone()),
        )));
        if let Some(shared) = &shared {
            tracing::info!(redis = shared.describe(), "mode cache shared through Redis");
            let modes = Arc::downgrade(&modes);
            shared.subscribe(move |invalidation| {
                let cache = modes
                    .upgrade()
                    .map(|m| m.read().unwrap_or_else(|p| p.into_inner()).clone());
                async move {
                    if let Some(cache) = cache {
                        cache.apply_invalidation(invalidation).await;
                    }
                }
            });
        }
        let contacts = ContactCache::new(
            config.mode_cache.ttl,
            config.mode_cache.max_apps,
            contact_lookup,
        );
        let inject = secrets.map(|secrets| Inject {
            tokens: TokenSource::new(
                upstream.clone(),
                metrics.clone(),
                clock.clone(),
                token_uri.clone(),
                &secrets.key_id,
                &secrets.key_secret,
            ),
            inbound: InboundAuth::new(secrets.inbound),
        });
        Some(Self {
            upstream,
            api_origin,
            batch_origin: None,
            token_uri,
            metrics,
            clock: clock.clone(),
            policy: RwLock::new(Arc::new(PolicyRuntime::new(config.policy.clone()))),
            modes,
            shared,
            messages: RwLock::new(Arc::new(MessageIndex::new(
                config.mode_cache.max_messages,
                config.mode_cache.message_ttl,
                clock,
            ))),
            mode_lookup,
            contacts,
            report: Arc::default(),
            max_policy_body_bytes: config.server.max_policy_body_bytes,
            max_batch_body_bytes: config.server.max_batch_body_bytes,
            body_idle_timeout: config.server.body_idle_timeout,
            verify_credentials: config.auth.mode == AuthMode::Passthrough,
            inject,
            access_log: config.log.access_log,
            pseudo_ids: deps.pseudo_ids,
        })
    }

    /// Sends the Batch listener's requests to `batch` (`None` when `batch` is not an absolute
    /// URL). App and contact lookups stay on the Conversation origin.
    pub fn with_batch_origin(mut self, batch: &Uri) -> Option<Self> {
        self.batch_origin = Some(Origin::from_uri(batch)?);
        Some(self)
    }

    /// The origin requests of a listener serving `api` go to (the Conversation origin when no
    /// Batch origin is set).
    pub(crate) fn origin(&self, api: crate::schema::Api) -> &Origin {
        match (api, &self.batch_origin) {
            (crate::schema::Api::Batch, Some(batch)) => batch,
            _ => &self.api_origin,
        }
    }

    /// The largest body buffered for policy on a listener serving `api`.
    pub(crate) fn body_limit(&self, api: crate::schema::Api) -> usize {
        match api {
            crate::schema::Api::Batch => self.max_batch_body_bytes,
            crate::schema::Api::Conversation => self.max_policy_body_bytes,
        }
    }

    /// The metrics registry the gateway records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The mode cache in force.
    pub fn modes(&self) -> Arc<ModeCache> {
        self.modes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<PolicyRuntime> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Policy and mode cache, taken once per request.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            policy: self.policy(),
            modes: self.modes(),
            messages: self
                .messages
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Applies the reloadable part of `new` (see [`crate::reload`]); `old` is the config in
    /// force. Returns whether the mode cache was replaced.
    pub fn apply(&self, new: &Config, old: &Config) -> bool {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(PolicyRuntime::new(new.policy.clone()));
        if old.mode_cache == new.mode_cache {
            return false;
        }
        let fresh = Arc::new(
            ModeCache::new(
                &new.mode_cache,
                self.mode_lookup.clone(),
                self.metrics.clone(),
                self.clock.clone(),
            )
            .with_shared(self.shared.clone()),
        );
        let previous = std::mem::replace(
            &mut *self.modes.write().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        *self.messages.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(MessageIndex::new(
            new.mode_cache.max_messages,
            new.mode_cache.message_ttl,
            self.clock.clone(),
        ));
        // The old cache's entries leave the gauge with it.
        for app in previous.known_apps() {
            self.metrics.add_cached_apps(app.mode, -1);
        }
        true
    }

    /// The Redis level of the mode cache, when `mode_cache.redis_url_env` is set.
    pub fn shared_cache(&self) -> Option<&Arc<SharedModes>> {
        self.shared.as_ref()
    }

    /// The migration report.
    pub fn report(&self) -> &Arc<MigrationReport> {
        &self.report
    }
}

/// The full proxy stack for one connection, in request order. The connection's own facts (peer,
/// framing flag) enter as the first layer, so the stack alone is the whole request path.
pub fn stack<B>(
    state: Arc<GatewayState>,
    connection: Arc<Connection>,
) -> impl Service<
    Request<B>,
    Response = GatewayResponse,
    Error = Infallible,
    Future = impl Future<Output = Result<GatewayResponse, Infallible>> + Send,
> + Clone
       + Send
       + 'static
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let metrics = state.metrics.clone();
    let access_log = state.access_log;
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ]))
        .layer(connection::ConnectionLayer::new(connection))
        .layer(request_id::RequestIdLayer)
        .layer(canonical::CanonicalLayer)
        .layer(observe::ObserveLayer::new(metrics, access_log))
        .layer(rescue::RescueLayer)
        .service(handler::Handler::new(state))
}

impl Inject {
    /// The gateway's upstream `Authorization`.
    pub(crate) async fn authorization(
        &self,
    ) -> Result<http::HeaderValue, crate::error::GatewayError> {
        self.tokens
            .authorization()
            .await
            .map_err(|f| crate::error::GatewayError::Token {
                kind: f.kind,
                detail: f.detail,
            })
    }

    /// `POST /oauth2/token` in inject mode: a local token for admitted callers.
    fn token_answer(&self, headers: &http::HeaderMap) -> GatewayResponse {
        let (status, body, disposition) = match self.inbound.issue_local_token(headers) {
            Some(token) => (
                http::StatusCode::OK,
                token,
                crate::domain::Disposition::Rewritten,
            ),
            None => (
                http::StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "invalid_client", "error_description": "present the gateway's shared secret"}),
                crate::domain::Disposition::Rejected,
            ),
        };
        let mut response = Response::new(upstream::full(body.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
            .extensions_mut()
            .insert(Outcome::answered(disposition));
        response
    }
}
