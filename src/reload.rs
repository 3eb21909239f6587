//! Hot reload: `SIGHUP` or `POST /reload` (admin, loopback clients only) re-reads and validates
//! the config file. A valid one swaps in atomically: rules, per-app overrides and pins, the other
//! `[policy]` keys, and `[mode_cache]` (a changed cache starts empty and relearns). In-flight
//! requests keep the policy they started with; no connection is dropped. An invalid file is
//! refused, logged and counted, and the running config stays.
//!
//! Listener addresses, `[upstream]`, `[auth]`, the other `[server]` keys and `[log]` are not
//! reloadable: a change to them is reported and takes effect on the next restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::GatewayState;

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Whether the mode cache was replaced (its settings changed).
    pub mode_cache_replaced: bool,
    /// Changed keys that only a restart applies.
    pub needs_restart: Vec<&'static str>,
}

/// Re-reads one config file into a running gateway.
pub struct Reloader {
    path: PathBuf,
    state: Arc<GatewayState>,
    metrics: Arc<Metrics>,
    current: Mutex<Config>,
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
    let (a, b) = (&old.server, &new.server);
    if a.listen != b.listen {
        changed.push("server.listen");
    }
    if a.admin_listen != b.admin_listen {
        changed.push("server.admin_listen");
    }
    if a.shutdown_grace != b.shutdown_grace
        || a.max_policy_body_bytes != b.max_policy_body_bytes
        || a.header_read_timeout != b.header_read_timeout
        || a.max_connections != b.max_connections
        || a.http2_max_concurrent_streams != b.http2_max_concurrent_streams
    {
        changed.push("server");
    }
    if old.upstream.target != new.upstream.target
        || old.upstream.connect_timeout != new.upstream.connect_timeout
        || old.upstream.request_timeout != new.upstream.request_timeout
        || old.upstream.pool_max_idle_per_host != new.upstream.pool_max_idle_per_host
    {
        changed.push("upstream");
    }
    if old.auth.mode != new.auth.mode
        || old.auth.token_url != new.auth.token_url
        || old.auth.key_id_env != new.auth.key_id_env
        || old.auth.key_secret_env != new.auth.key_secret_env
        || old.auth.inbound_token_env != new.auth.inbound_token_env
    {
        changed.push("auth");
    }
    if old.log.format != new.log.format || old.log.level != new.log.level {
        changed.push("log");
    }
    changed
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
            current: Mutex::new(config),
        }
    }

    /// Re-reads and applies the file.
    pub fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.config_reload(false);
                tracing::error!(
                    problems = e.problems.len(),
                    "config reload refused; keeping the running config\n{e}"
                );
                return Err(e);
            }
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let needs_restart = restart_only_changes(&current, &new);
        let mode_cache_replaced = self.state.apply(&new, &current);
        for key in &needs_restart {
            tracing::warn!(
                key,
                "changed in the config file but only applied on restart"
            );
        }
        self.metrics.config_reload(true);
        tracing::info!(mode_cache_replaced, "config reloaded");
        *current = new;
        Ok(ReloadReport {
            mode_cache_replaced,
            needs_restart,
        })
    }
}
