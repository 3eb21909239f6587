//! modegate: a reverse-proxy policy gateway for the Sinch Conversation API.
//!
//! [`App::bind`] is the factory both `main.rs` and the tests use: it takes a validated
//! [`Config`], binds the listeners (and starts the embedded simulator when configured), and
//! [`App::run`] serves until shutdown, then drains. It and [`build`] (the gateway without
//! listeners) resolve the origins and assemble the state in one place.

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
    if let (UpstreamTarget::Embedded { seed }, None) = (&config.upstream.target, &deps.upstream) {
        let seed = match seed {
            Some(path) => Seed::load(path).map_err(StartError::Seed)?,
            None => Seed::default(),
        };
        deps.upstream = Some(Simulator::new(seed).upstream());
    }
    assemble(config, deps, Origins::of(config, None)).map(Arc::new)
}

/// Where the request path sends: the API origin, the token URL and the Batch origin.
struct Origins {
    api: Uri,
    token: Uri,
    batch: Option<Uri>,
}

impl Origins {
    /// The configured origins; with `upstream.base_url = "embedded"`, the embedded simulator's
    /// (`embedded`, or the in-process simulator's when `None`) under any `auth.token_url` /
    /// `upstream.batch_base_url` set.
    fn of(config: &Config, embedded: Option<Origins>) -> Origins {
        let defaults = match &config.upstream.target {
            UpstreamTarget::Url(uri) => Origins {
                api: uri.clone(),
                token: Uri::from_static(config::DEFAULT_TOKEN_URL),
                batch: None,
            },
            UpstreamTarget::Embedded { .. } => embedded.unwrap_or_else(|| Origins {
                api: Uri::from_static("http://simulator.embedded"),
                token: Uri::from_static("http://simulator.embedded/oauth2/token"),
                batch: Some(Uri::from_static("http://batch.simulator.embedded")),
            }),
        };
        Origins {
            api: defaults.api,
            token: config.auth.token_url.clone().unwrap_or(defaults.token),
            batch: config.upstream.batch_base_url.clone().or(defaults.batch),
        }
    }
}

/// The one assembly of the gateway's state, for [`build`] and [`App::bind_with`]: production
/// seams where none are given, the injected credentials, the origins.
fn assemble(config: &Config, mut deps: Deps, origins: Origins) -> Result<GatewayState, StartError> {
    with_production_deps(config, &mut deps)?;
    let secrets = inject_secrets(config)?;
    let api = origins.api;
    // The validated config guarantees an absolute http(s) URL here.
    let state = GatewayState::new(config, &api, origins.token, secrets, deps)
        .ok_or_else(|| StartError::Upstream(format!("upstream {api} is not usable")))?;
    with_batch(state, origins.batch)
}

/// The state with its Batch origin, when there is one.
fn with_batch(state: GatewayState, batch: Option<Uri>) -> Result<GatewayState, StartError> {
    match batch {
        Some(uri) => state.with_batch_origin(&uri).ok_or_else(|| {
            StartError::Upstream(format!("upstream.batch_base_url {uri} is not usable"))
        }),
        None => Ok(state),
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
        let mut embedded = match &config.upstream.target {
            UpstreamTarget::Embedded { seed } => {
                Some(EmbeddedSimulator::bind(seed.as_deref()).await?)
            }
            UpstreamTarget::Url(_) => None,
        };
        let origins = Origins::of(
            &config,
            embedded.as_ref().map(|(_, api, token)| Origins {
                api: api.clone(),
                token: token.clone(),
                // Bound below, after the gateway's own listeners.
                batch: None,
            }),
        );
        let upstream_uri = origins.api.clone();
        let redis = deps.shared_cache.clone();
        let mut state = assemble(&config, deps, origins)?;
        let listener_tls = config
            .server
            .tls
            .as_ref()
            .map(|f| tls::ServerTls::load(&f.cert_file, &f.key_file))
            .transpose()
            .map_err(StartError::ListenerTls)?;
        // Logged in this order: (simulator,) proxy, admin, then the Batch and callback listeners.
        let proxy = bind("proxy", config.server.listen).await?;
        let admin = bind("admin", config.server.admin_listen).await?;
        let callbacks = callbacks::Callbacks::new(
            &config,
            redis.as_ref(),
            state.metrics().clone(),
            state.pseudo_ids(),
        )
        .map_err(StartError::Secret)?;
        let batch = match config.server.batch_listen {
            Some(addr) => Some(bind("batch", addr).await?),
            None => None,
        };
        if let Some((embedded, _, _)) = embedded.as_mut() {
            let origin = embedded.bind_batch().await?;
            if config.upstream.batch_base_url.is_none() {
                state = with_batch(state, Some(origin))?;
            }
        }
        let embedded = embedded.map(|(embedded, _, _)| embedded);
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
        self.enable_reload_with(path, reload::Overrides::default())
    }

    /// [`App::enable_reload`] for a gateway some of whose settings came from the command line
    /// (listen addresses, the demo's webhook target): they stay in force on every reload.
    pub fn enable_reload_with(
        &mut self,
        path: std::path::PathBuf,
        overrides: reload::Overrides,
    ) -> Arc<reload::Reloader> {
        let reloader = Arc::new(
            reload::Reloader::new(
                path,
                self.config.clone(),
                self.state.clone(),
                self.state.metrics().clone(),
            )
            .with_overrides(overrides)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(toml: &str, embedded: Option<Origins>) -> (String, String, Option<String>) {
        let config = Config::parse(toml, std::path::Path::new("t.toml")).expect("config");
        let o = Origins::of(&config, embedded);
        (
            o.api.to_string(),
            o.token.to_string(),
            o.batch.map(|b| b.to_string()),
        )
    }

    #[test]
    fn origins_come_from_the_config_or_the_embedded_simulator_under_any_override() {
        let url = "[upstream]\nbase_url = \"https://eu.example.com\"\n";
        assert_eq!(
            origins(url, None),
            (
                "https://eu.example.com/".into(),
                config::DEFAULT_TOKEN_URL.into(),
                None
            )
        );
        let embedded = "[upstream]\nbase_url = \"embedded\"\n";
        assert_eq!(
            origins(embedded, None),
            (
                "http://simulator.embedded/".into(),
                "http://simulator.embedded/oauth2/token".into(),
                Some("http://batch.simulator.embedded/".into())
            )
        );
        let bound = Origins {
            api: Uri::from_static("http://127.0.0.1:1"),
            token: Uri::from_static("http://127.0.0.1:1/oauth2/token"),
            batch: None,
        };
        let overridden = "[upstream]\nbase_url = \"embedded\"\nbatch_base_url = \"http://b.example\"\n[auth]\ntoken_url = \"http://t.example/token\"\n";
        assert_eq!(
            origins(overridden, Some(bound)),
            (
                "http://127.0.0.1:1/".into(),
                "http://t.example/token".into(),
                Some("http://b.example/".into())
            )
        );
    }
}
