//! What the gateway needs before it can start, resolved from the config and the environment:
//! secrets (inject-mode keys, the shared cache's Redis URL, pseudo-id keys), the production
//! upstream client, and every start-time problem `check-config` reports beside the file's own.

use std::net::SocketAddr;

use crate::config::{self, Config, UpstreamTarget};
use crate::proxy::{Deps, InjectSecrets};
use crate::simulator::Seed;
use crate::{auth, callbacks, pseudo_ids, shared_cache, upstream};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The embedded simulator's seed is unusable.
    #[error("{0}")]
    Seed(String),
    /// The upstream URL cannot be used (validation normally catches this first).
    #[error("{0}")]
    Upstream(String),
    /// A secret named in config is missing from the environment.
    #[error("{0}")]
    Secret(String),
    /// The proxy listener's certificate or key cannot be used.
    #[error("server.tls_cert_file / server.tls_key_file: {0}")]
    ListenerTls(String),
}

impl StartError {
    /// The process exit code: 2 for configuration problems, 1 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Bind { .. } => 1,
            StartError::Seed(_)
            | StartError::Upstream(_)
            | StartError::Secret(_)
            | StartError::ListenerTls(_) => 2,
        }
    }
}

/// The secrets inject mode needs, from the environment named in config.
pub(crate) fn inject_secrets(config: &Config) -> Result<Option<InjectSecrets>, StartError> {
    match config.auth.mode {
        config::AuthMode::Passthrough => Ok(None),
        config::AuthMode::Inject => {
            let read = |name: &str, key: &str| {
                auth::secret_from_env(name)
                    .map_err(|e| StartError::Secret(format!("auth.{key}: {e}")))
            };
            Ok(Some(InjectSecrets {
                key_id: read(&config.auth.key_id_env, "key_id_env")?,
                key_secret: read(&config.auth.key_secret_env, "key_secret_env")?,
                inbound: config
                    .auth
                    .inbound_token_env
                    .as_deref()
                    .map(|name| read(name, "inbound_token_env"))
                    .transpose()?,
            }))
        }
    }
}

/// The Redis the mode cache shares through, from the variable `mode_cache.redis_url_env`
/// names; `Ok(None)` without the key. The message never quotes the URL.
fn shared_cache_target(config: &Config) -> Result<Option<shared_cache::RedisTarget>, String> {
    let Some(name) = &config.mode_cache.redis_url_env else {
        return Ok(None);
    };
    let url = auth::secret_from_env(name)?;
    shared_cache::RedisTarget::parse(url.expose())
        .map(Some)
        .map_err(|e| format!("environment variable {name}: {e}"))
}

/// Start-time problems that can be known from the config and the environment without binding
/// anything: an unreadable embedded seed, unset inject-mode key variables. `check-config`
/// reports them with the file's own problems; `serve` would fail on them at start.
pub fn start_problems(config: &Config) -> Vec<config::Problem> {
    let mut problems = Vec::new();
    if let UpstreamTarget::Embedded { seed: Some(path) } = &config.upstream.target {
        if let Err(e) = Seed::load(path) {
            problems.push(config::Problem {
                key: "upstream.embedded_seed".into(),
                message: e,
            });
        }
    }
    for (key, message) in upstream::HyperUpstream::problems(&config.upstream) {
        problems.push(config::Problem {
            key: key.into(),
            message,
        });
    }
    if let Err(message) = shared_cache_target(config) {
        problems.push(config::Problem {
            key: "mode_cache.redis_url_env".into(),
            message,
        });
    }
    for (key, message) in callbacks::start_problems(&config.callbacks) {
        problems.push(config::Problem { key, message });
    }
    // The gateway reads the pseudo-id keys whenever they are named: the proxy opens pseudo ids
    // (rule dispatch.pseudo_ids) and the callback listener seals them with the same keys.
    if let Some(name) = &config.callbacks.id_key_env {
        if let Err(message) = pseudo_ids::PseudoIds::from_env(name) {
            problems.push(config::Problem {
                key: "callbacks.id_key_env".into(),
                message,
            });
        }
    }
    if config.auth.mode == config::AuthMode::Inject {
        let vars = [
            ("auth.key_id_env", Some(&config.auth.key_id_env)),
            ("auth.key_secret_env", Some(&config.auth.key_secret_env)),
            (
                "auth.inbound_token_env",
                config.auth.inbound_token_env.as_ref(),
            ),
        ];
        for (key, var) in vars {
            if let Some(Err(e)) = var.map(|v| auth::secret_from_env(v)) {
                problems.push(config::Problem {
                    key: key.into(),
                    message: e,
                });
            }
        }
    }
    problems
}

/// The production upstream client and the shared mode cache's Redis (from the environment),
/// each unless `deps` brings one.
pub(crate) fn with_production_deps(config: &Config, deps: &mut Deps) -> Result<(), StartError> {
    if deps.upstream.is_none() {
        let client = upstream::HyperUpstream::new(&config.upstream, config.server.http1_engine)
            .map_err(|e| StartError::Upstream(format!("upstream: {e}")))?;
        deps.upstream = Some(client.into_upstream());
    }
    if deps.shared_cache.is_none() {
        deps.shared_cache = shared_cache_target(config)
            .map_err(|e| StartError::Secret(format!("mode_cache.redis_url_env: {e}")))?;
    }
    if let (None, Some(name)) = (&deps.pseudo_ids, &config.callbacks.id_key_env) {
        deps.pseudo_ids = Some(
            pseudo_ids::PseudoIds::from_env(name)
                .map_err(|e| StartError::Secret(format!("callbacks.id_key_env: {e}")))?,
        );
    }
    Ok(())
}
