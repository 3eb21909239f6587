//! Hot reload: `SIGHUP` or `POST /reload` (admin, loopback clients only) re-reads and validates
//! the config file. A valid one swaps in atomically: rules, per-app overrides and pins, the other
//! `[policy]` keys, and `[mode_cache]` (a changed cache starts empty and relearns). In-flight
//! requests keep the policy they started with; no connection is dropped. An invalid file is
//! refused, logged and counted, and the running config stays.
//!
//! The proxy listener's TLS certificate and key (`server.tls_cert_file` / `tls_key_file`) are
//! re-read on every reload, changed or not, so a rotated certificate (cert-manager rewrites the
//! files in place) is served to new connections; open connections keep theirs. A file that does
//! not load refuses the reload and the certificate in use stays.
//!
//! Listener addresses, `[upstream]`, `[auth]`, the other `[server]` keys (turning TLS on or
//! off included) and `[log]` are not reloadable: a change to them is reported and takes effect
//! on the next restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::GatewayState;
use crate::tls::ServerTls;

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Whether the mode cache was replaced (its settings changed).
    pub mode_cache_replaced: bool,
    /// Changed keys that only a restart applies.
    pub needs_restart: Vec<&'static str>,
    /// Whether the proxy listener's certificate and key were re-read.
    pub certificate_reloaded: bool,
}

/// Re-reads one config file into a running gateway.
pub struct Reloader {
    path: PathBuf,
    state: Arc<GatewayState>,
    metrics: Arc<Metrics>,
    /// What the process runs with where reloads cannot reach (listeners, upstream, auth, …):
    /// restart-only changes are judged against this, never against an earlier reload.
    running: Config,
    /// The config last applied (the policy and mode cache in force).
    current: Mutex<Config>,
    /// What the command line (and the demo) set over the file's values, on every reload.
    overrides: Overrides,
    /// The proxy listener's TLS, when it serves TLS.
    listener_tls: Option<ServerTls>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The non-reloadable settings that differ between two configs.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.server.admin_listen != new.server.admin_listen {
        changed.push("server.admin_listen");
    }
    if old.server.batch_listen != new.server.batch_listen {
        changed.push("server.batch_listen");
    }
    // The certificate files are re-read on reload; only turning TLS on or off needs a restart.
    if old.server.tls.is_some() != new.server.tls.is_some() {
        changed.push("server.tls_cert_file");
    }
    if old.mode_cache.redis_url_env != new.mode_cache.redis_url_env {
        changed.push("mode_cache.redis_url_env");
    }
    let other_server_keys_differ = crate::config::ServerSettings {
        listen: new.server.listen,
        admin_listen: new.server.admin_listen,
        tls: new.server.tls.clone(),
        batch_listen: new.server.batch_listen,
        ..old.server.clone()
    } != new.server;
    for (section, differs) in [
        ("server", other_server_keys_differ),
        ("upstream", old.upstream != new.upstream),
        ("auth", old.auth != new.auth),
        ("log", old.log != new.log),
        ("callbacks", old.callbacks != new.callbacks),
    ] {
        if differs {
            changed.push(section);
        }
    }
    changed
}

/// What the process sets over its file's values, at start and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// Webhook targets by webhook path (the demo points its webhook at its own consumer).
    pub webhook_targets: Vec<(String, http::Uri)>,
}

impl Overrides {
    /// Applies these over `config`.
    pub fn apply(&self, config: &mut Config) {
        apply_listen_overrides(config, self.listen, self.admin_listen);
        for w in &mut config.callbacks.webhooks {
            if let Some((_, target)) = self.webhook_targets.iter().find(|(p, _)| *p == w.path) {
                w.target = target.clone();
            }
        }
    }
}

/// Applies command-line listen addresses over the file's: `listen` and `admin_listen` replace
/// theirs, and a `listen` on port 0 gives the Batch and callback listeners (when set) ephemeral
/// ports too.
pub fn apply_listen_overrides(
    config: &mut Config,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) {
    config.server.listen = listen.unwrap_or(config.server.listen);
    config.server.admin_listen = admin_listen.unwrap_or(config.server.admin_listen);
    if let Some(l) = listen.filter(|l| l.port() == 0) {
        for other in [
            config.server.batch_listen.as_mut(),
            config.callbacks.listen.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            *other = SocketAddr::new(l.ip(), 0);
        }
    }
}

impl Reloader {
    /// A reloader for the gateway started from `config`, read from `path`.
    pub fn new(
        path: PathBuf,
        config: Config,
        state: Arc<GatewayState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            path,
            state,
            metrics,
            running: config.clone(),
            current: Mutex::new(config),
            overrides: Overrides::default(),
            listener_tls: None,
        }
    }

    /// Re-reads the proxy listener's certificate files on every reload.
    pub fn with_listener_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.listener_tls = tls;
        self
    }

    /// Keeps what the command line set (`demo --listen`, `--admin-listen`, the demo's webhook
    /// target) over the file's.
    pub fn with_overrides(mut self, overrides: Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Re-reads and applies the file.
    pub fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let new = match Config::load(&self.path) {
            Ok(mut c) => {
                self.overrides.apply(&mut c);
                c
            }
            Err(e) => {
                self.metrics.config_reload(false);
                tracing::error!(
                    problems = e.problems.len(),
                    "config reload refused; keeping the running config\n{e}"
                );
                return Err(e);
            }
        };
        let mut certificate_reloaded = false;
        if let (Some(tls), Some(files)) = (&self.listener_tls, &new.server.tls) {
            // Validation read these files a moment ago; a file rewritten in between is caught
            // here, and the certificate in use stays.
            if let Err(message) = tls.reload(&files.cert_file, &files.key_file) {
                self.metrics.config_reload(false);
                tracing::error!(
                    "config reload refused; keeping the running config and certificate: {message}"
                );
                return Err(ConfigError {
                    path: self.path.clone(),
                    problems: vec![crate::config::Problem {
                        key: "server.tls_cert_file".into(),
                        message,
                    }],
                });
            }
            certificate_reloaded = true;
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let needs_restart = restart_only_changes(&self.running, &new);
        let mode_cache_replaced = self.state.apply(&new, &current);
        for key in &needs_restart {
            tracing::warn!(
                key,
                "changed in the config file but only applied on restart"
            );
        }
        self.metrics.config_reload(true);
        tracing::info!(mode_cache_replaced, certificate_reloaded, "config reloaded");
        *current = new;
        Ok(ReloadReport {
            mode_cache_replaced,
            needs_restart,
            certificate_reloaded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn restart_only_keys_are_reported_by_section() {
        let base = config("");
        assert!(restart_only_changes(&base, &config("")).is_empty());
        assert!(restart_only_changes(&base, &config("[policy]\nmax_ttl_days = 30\n")).is_empty());
        assert!(restart_only_changes(&base, &config("[mode_cache]\nttl_secs = 5\n")).is_empty());
        assert_eq!(
            restart_only_changes(&base, &config("[server]\nlisten = \"127.0.0.1:1\"\n")),
            ["server.listen"]
        );
        assert_eq!(
            restart_only_changes(&base, &config("[server]\nmax_connections = 5\n")),
            ["server"]
        );
        assert_eq!(
            restart_only_changes(&base, &config("[upstream]\nrequest_timeout_ms = 5\n")),
            ["upstream"]
        );
        assert_eq!(
            restart_only_changes(
                &base,
                &config("[callbacks]\nlisten = \"127.0.0.1:1\"\n[[callbacks.webhook]]\npath = \"/e\"\ntarget = \"http://t\"\n")
            ),
            ["callbacks"]
        );
        assert_eq!(
            restart_only_changes(&base, &config("[log]\naccess_log = true\n")),
            ["log"]
        );
        assert_eq!(
            restart_only_changes(
                &base,
                &config("[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ntoken_url = \"http://a/t\"\n")
            ),
            ["server.listen", "auth"]
        );
    }
}
