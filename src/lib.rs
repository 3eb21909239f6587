//! modegate: a reverse-proxy policy gateway for the Sinch Conversation API.
//!
//! [`App::bind`] is the factory both `main.rs` and the tests use: it takes a validated
//! [`Config`], binds the listeners (and starts the embedded simulator when configured), and
//! [`App::run`] serves until shutdown, then drains.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api_error;
pub mod auth;
pub mod callbacks;
pub mod clock;
pub mod config;
pub mod contact_cache;
pub mod credentials;
pub mod demo;
pub mod domain;
mod embedded;
pub mod error;
pub mod generations;
pub mod ids;
pub mod logging;
pub mod message_index;
pub mod metrics;
pub mod mode_cache;
pub mod policy;
pub mod proxy;
pub mod pseudo_ids;
pub mod reload;
pub mod report;
pub mod schema;
pub mod server;
pub mod shared_cache;
pub mod simulator;
pub mod start;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use http::Uri;
use tokio::net::TcpListener;

use admin::{AdminState, Readiness};
pub use config::Config;
use config::UpstreamTarget;
use embedded::EmbeddedSimulator;
pub use embedded::{bind_batch_simulator, bind_simulator, serve_batch_simulator, serve_simulator};
use metrics::Metrics;
pub use proxy::Deps;
use proxy::GatewayState;
use server::{ConnectionSettings, Shutdown, ShutdownTrigger};
use simulator::{Seed, Simulator};
use start::{inject_secrets, with_production_deps};
pub use start::{start_problems, StartError};

/// The gateway without listeners, for callers that drive its stack in-process: `deps.upstream`
/// receives every upstream request (with `upstream.base_url = "embedded"` and no upstream
/// given, the simulator answers in-process). [`proxy::stack`] serves requests over it.
pub fn build(config: &Config, mut deps: Deps) -> Result<Arc<GatewayState>, StartError> {
    let (api, token) = match &config.upstream.target {
        UpstreamTarget::Url(uri) => (
            uri.clone(),
            config
                .auth
                .token_url
                .clone()
                .unwrap_or_else(|| Uri::from_static(config::DEFAULT_TOKEN_URL)),
        ),
        UpstreamTarget::Embedded { seed } => {
            if deps.upstream.is_none() {
                let seed = match seed {
                    Some(path) => Seed::load(path).map_err(StartError::Seed)?,
                    None => Seed::default(),
                };
                deps.upstream = Some(Simulator::new(seed).upstream());
            }
            let base = Uri::from_static("http://simulator.embedded");
            let token = config
                .auth
                .token_url
                .clone()
                .unwrap_or_else(|| Uri::from_static("http://simulator.embedded/oauth2/token"));
            (base, token)
        }
    };
    let batch = match (&config.upstream.batch_base_url, &config.upstream.target) {
        (Some(url), _) => Some(url.clone()),
        (None, UpstreamTarget::Embedded { .. }) => {
            Some(Uri::from_static("http://batch.simulator.embedded"))
        }
        (None, UpstreamTarget::Url(_)) => None,
    };
    with_production_deps(config, &mut deps)?;
    let secrets = inject_secrets(config)?;
    GatewayState::new(config, &api, token, secrets, deps)
        .and_then(|state| with_batch(state, batch.as_ref()))
        .map(Arc::new)
        .ok_or_else(|| StartError::Upstream(format!("upstream {api} is not usable")))
}

/// The state with its Batch origin, when there is one.
fn with_batch(state: GatewayState, batch: Option<&Uri>) -> Option<GatewayState> {
    match batch {
        Some(uri) => state.with_batch_origin(uri),
        None => Some(state),
    }
}

/// A gateway with its listeners bound, ready to [`run`](App::run).
pub struct App {
    config: Config,
    proxy: TcpListener,
    /// The Batch API listener (`server.batch_listen`).
    batch: Option<TcpListener>,
    admin: TcpListener,
    state: Arc<GatewayState>,
    readiness: Readiness,
    embedded: Option<EmbeddedSimulator>,
    upstream_uri: Uri,
    reloader: Option<Arc<reload::Reloader>>,
    listener_tls: Option<tls::ServerTls>,
    callbacks: Option<callbacks::Listener>,
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    server::bind(name, addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl App {
    /// Binds every listener for `config`. Nothing is served until [`App::run`].
    pub async fn bind(config: Config) -> Result<App, StartError> {
        App::bind_with(config, Deps::default()).await
    }

    /// [`App::bind`] with the request path's seams replaced (see [`Deps`]).
    pub async fn bind_with(config: Config, mut deps: Deps) -> Result<App, StartError> {
        with_production_deps(&config, &mut deps)?;
        let mut batch_uri = config.upstream.batch_base_url.clone();
        let (mut embedded, upstream_uri, token_uri) = match &config.upstream.target {
            UpstreamTarget::Embedded { seed } => {
                let (embedded, base, token) = EmbeddedSimulator::bind(seed.as_deref()).await?;
                let token = config.auth.token_url.clone().unwrap_or(token);
                (Some(embedded), base, token)
            }
            UpstreamTarget::Url(uri) => {
                let token = config
                    .auth
                    .token_url
                    .clone()
                    .unwrap_or_else(|| Uri::from_static(config::DEFAULT_TOKEN_URL));
                (None, uri.clone(), token)
            }
        };
        let secrets = inject_secrets(&config)?;
        let redis = deps.shared_cache.clone();
        let listener_tls = config
            .server
            .tls
            .as_ref()
            .map(|f| tls::ServerTls::load(&f.cert_file, &f.key_file))
            .transpose()
            .map_err(StartError::ListenerTls)?;
        // The validated config guarantees an absolute http(s) URL here.
        let state = GatewayState::new(&config, &upstream_uri, token_uri, secrets, deps)
            .ok_or_else(|| {
                StartError::Upstream(format!("upstream {upstream_uri} is not usable"))
            })?;
        // Logged in this order: (simulator,) proxy, admin, then the Batch and callback listeners.
        let proxy = bind("proxy", config.server.listen).await?;
        let admin = bind("admin", config.server.admin_listen).await?;
        let callbacks = callbacks::Callbacks::new(&config, redis.as_ref(), state.metrics().clone())
            .map_err(StartError::Secret)?;
        let batch = match config.server.batch_listen {
            Some(addr) => Some(bind("batch", addr).await?),
            None => None,
        };
        if let Some(embedded) = embedded.as_mut() {
            let origin = embedded.bind_batch().await?;
            batch_uri = batch_uri.or(Some(origin));
        }
        let state = with_batch(state, batch_uri.as_ref()).ok_or_else(|| {
            let uri = batch_uri.as_ref().map(ToString::to_string);
            StartError::Upstream(format!(
                "upstream.batch_base_url {} is not usable",
                uri.unwrap_or_default()
            ))
        })?;
        let callbacks = match (callbacks, config.callbacks.listen) {
            (Some(c), Some(addr)) => Some(c.listener(bind("callbacks", addr).await?)),
            _ => None,
        };
        Ok(App {
            config,
            proxy,
            batch,
            admin,
            state: Arc::new(state),
            readiness: Readiness::default(),
            embedded,
            upstream_uri,
            reloader: None,
            listener_tls,
            callbacks,
        })
    }

    /// Makes `path` (the file this config came from) reloadable through `POST /reload`; the
    /// returned handle reloads it too (`serve` calls it on SIGHUP).
    pub fn enable_reload(&mut self, path: std::path::PathBuf) -> Arc<reload::Reloader> {
        self.enable_reload_with(path, None, None)
    }

    /// [`App::enable_reload`] for a gateway whose listen addresses came from the command line:
    /// they stay in force on every reload.
    pub fn enable_reload_with(
        &mut self,
        path: std::path::PathBuf,
        listen: Option<SocketAddr>,
        admin_listen: Option<SocketAddr>,
    ) -> Arc<reload::Reloader> {
        let reloader = Arc::new(
            reload::Reloader::new(
                path,
                self.config.clone(),
                self.state.clone(),
                self.state.metrics().clone(),
            )
            .with_listen_overrides(listen, admin_listen)
            .with_listener_tls(self.listener_tls.clone()),
        );
        self.reloader = Some(reloader.clone());
        reloader
    }

    /// The proxy listener's address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.local_addr().unwrap_or(self.config.server.listen)
    }

    /// The Batch API listener's address, when `server.batch_listen` is set.
    pub fn batch_addr(&self) -> Option<SocketAddr> {
        self.batch.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or(self.config.server.admin_listen)
    }

    /// The callback listener's address, when `callbacks.listen` is set.
    pub fn callbacks_addr(&self) -> Option<SocketAddr> {
        self.callbacks.as_ref().and_then(callbacks::Listener::addr)
    }

    /// The upstream origin requests go to (the embedded simulator's address when embedded).
    pub fn upstream_uri(&self) -> &Uri {
        &self.upstream_uri
    }

    /// The embedded simulator, when `upstream.base_url = "embedded"`.
    pub fn simulator(&self) -> Option<Arc<Simulator>> {
        self.embedded.as_ref().map(|e| e.simulator.clone())
    }

    /// The shared gateway state (mode cache, policy, report).
    pub fn state(&self) -> Arc<GatewayState> {
        self.state.clone()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics().clone()
    }

    /// Serves until `shutdown`: readiness turns 503, the proxy stops accepting and drains for
    /// up to `shutdown_grace`, then the admin listener and embedded simulator stop.
    pub async fn run(self, mut shutdown: Shutdown) {
        let App {
            config,
            proxy,
            batch,
            admin,
            state,
            readiness,
            embedded,
            reloader,
            listener_tls,
            callbacks,
            ..
        } = self;
        let (inner_trigger, inner) = server::shutdown_channel();
        let (aux_trigger, aux) = server::shutdown_channel();
        let settings = ConnectionSettings {
            header_read_timeout: config.server.header_read_timeout,
            write_stall_timeout: None,
            on_write_stall: None,
            on_close: Some(Metrics::on_close(state.metrics())),
            max_connections: config.server.max_connections,
            http2_max_concurrent_streams: config.server.http2_max_concurrent_streams,
            shutdown_grace: config.server.shutdown_grace,
            tls: None,
            http1_engine: config::Http1Engine::Hyper,
        };
        // Proxy clients that stop reading a response are cut off after the body idle timeout.
        let proxy_settings = ConnectionSettings {
            write_stall_timeout: Some(config.server.body_idle_timeout),
            on_write_stall: Some({
                let metrics = state.metrics().clone();
                Arc::new(move || {
                    tracing::warn!(
                        direction = "response",
                        "a client read nothing of its response for the body idle timeout; closing its connection"
                    );
                    metrics.body_idle_timeout("response");
                })
            }),
            tls: listener_tls,
            http1_engine: config.server.http1_engine,
            ..settings.clone()
        };
        let admin_service = AdminState {
            metrics: state.metrics().clone(),
            readiness: readiness.clone(),
            gateway: state.clone(),
            reloader,
            peer: None,
        };
        let admin_task = tokio::spawn(server::serve(
            "admin",
            admin,
            move |conn: server::ConnectionInfo| admin_service.for_peer(conn.peer),
            ConnectionSettings {
                shutdown_grace: std::time::Duration::from_secs(1),
                ..settings.clone()
            },
            aux.clone(),
        ));
        // Certificate files rotated on disk are picked up without a signal.
        let certificate_watch = match (&proxy_settings.tls, &config.server.tls) {
            (Some(tls), Some(files)) => Some(tokio::spawn(tls.clone().watch(
                files.cert_file.clone(),
                files.key_file.clone(),
                tls::CERTIFICATE_CHECK_INTERVAL,
            ))),
            _ => None,
        };
        let simulator_task = embedded.map(|e| {
            if let Some(listener) = e.batch_listener {
                tokio::spawn(serve_batch_simulator(
                    e.simulator.clone(),
                    listener,
                    aux.clone(),
                ));
            }
            tokio::spawn(serve_simulator(e.simulator, e.listener, aux.clone()))
        });
        readiness.set_ready();
        let drain = {
            let readiness = readiness.clone();
            async move {
                shutdown.wait().await;
                tracing::info!("shutdown requested; draining");
                readiness.set_draining();
                inner_trigger.trigger();
            }
        };
        // The Batch listener: the same stack and state; its connections classify and forward
        // as the Batch API.
        let serve_batch = batch.map(|listener| {
            let state = state.clone();
            server::serve(
                "batch",
                listener,
                move |info: server::ConnectionInfo| {
                    proxy::stack::<server::ProxyBody>(
                        state.clone(),
                        proxy::Connection::for_api(info, schema::Api::Batch),
                    )
                },
                proxy_settings.clone(),
                inner.clone(),
            )
        });
        // The callback listener shares the proxy's slow-peer limits, TLS and drain.
        let callbacks_serve = callbacks::serve(callbacks, proxy_settings.clone(), inner.clone());
        let serve = server::serve(
            "proxy",
            proxy,
            move |info: server::ConnectionInfo| {
                proxy::stack::<server::ProxyBody>(state.clone(), proxy::Connection::new(info))
            },
            proxy_settings,
            inner,
        );
        let serve_batch = async move {
            if let Some(serve_batch) = serve_batch {
                serve_batch.await;
            }
        };
        tokio::join!(drain, serve, serve_batch, callbacks_serve);
        if let Some(watch) = certificate_watch {
            watch.abort();
        }
        aux_trigger.trigger();
        let _ = admin_task.await;
        if let Some(t) = simulator_task {
            let _ = t.await;
        }
        tracing::info!("stopped");
    }

    /// Runs in a background task; the handle stops it.
    pub fn spawn(self) -> RunningApp {
        let proxy_addr = self.proxy_addr();
        let batch_addr = self.batch_addr();
        let admin_addr = self.admin_addr();
        let callbacks_addr = self.callbacks_addr();
        let simulator = self.simulator();
        let metrics = self.metrics();
        let state = self.state();
        let (trigger, shutdown) = server::shutdown_channel();
        let task = tokio::spawn(self.run(shutdown));
        RunningApp {
            proxy_addr,
            batch_addr,
            admin_addr,
            callbacks_addr,
            simulator,
            metrics,
            state,
            trigger,
            task,
        }
    }
}

/// A gateway serving in the background.
pub struct RunningApp {
    /// Proxy address.
    pub proxy_addr: SocketAddr,
    /// Batch API listener address, when `server.batch_listen` is set.
    pub batch_addr: Option<SocketAddr>,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// Callback listener address, when one is configured.
    pub callbacks_addr: Option<SocketAddr>,
    /// The embedded simulator, if any.
    pub simulator: Option<Arc<Simulator>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Shared gateway state.
    pub state: Arc<GatewayState>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl RunningApp {
    /// Starts draining without waiting.
    pub fn begin_shutdown(&self) {
        self.trigger.trigger();
    }

    /// Drains and waits until everything stopped.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}
