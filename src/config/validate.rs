//! The validation layer: raw sections into runtime settings. Every problem is collected with
//! the key it belongs to, so one run of `check-config` reports them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Uri;

use super::callbacks;
use super::raw::*;
use super::transport;
use super::typed::typed;
use super::*;
use crate::policy::{Action, ProcessingMode, RuleId, RuleSet};

use super::values::{http_url, range, socket_addr};
use super::values::{log_filter, one_of, section};

fn apply_rules(
    prefix: &str,
    raw: &BTreeMap<String, String>,
    set: &mut RuleSet,
    problems: &mut Problems,
) {
    for (id, action) in raw {
        let key = format!("{prefix}.\"{id}\"");
        let rule = match id.parse::<RuleId>() {
            Ok(r) => r,
            Err(e) => {
                let known: Vec<_> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
                problems.add(key, format!("{e}; known rules: {}", known.join(", ")));
                continue;
            }
        };
        let action = match action.parse::<Action>() {
            Ok(a) => a,
            Err(e) => {
                problems.add(key, e);
                continue;
            }
        };
        if rule == RuleId::UnrecognizedRoute {
            problems.add(
                key,
                "set by policy.unrecognized_route (\"forward\" or \"reject\"), not in a rules table",
            );
            continue;
        }
        if rule == RuleId::Canonical && action == Action::Off {
            problems.add(
                key,
                "request.canonical takes enforce or shadow: an ambiguous request is refused, or forwarded unchanged and recorded, never ignored",
            );
            continue;
        }
        if !rule.supports(action) {
            problems.add(
                key,
                format!(
                    "rule {rule} does not support {action:?} (supported: {})",
                    rule.supported_actions().join(", "),
                    action = action.as_str()
                ),
            );
            continue;
        }
        set.set(rule, action);
    }
}

/// The sections in file-documentation order, which problems are listed in.
pub(super) const SECTIONS: [&str; 7] = [
    "server",
    "upstream",
    "auth",
    "mode_cache",
    "policy",
    "log",
    "callbacks",
];

/// Validates TOML text; `path` is only used in messages (and to resolve relative seed paths).
/// The config as far as `text` could be read (a section that could not be is at its defaults,
/// a bad value at a fallback), with every problem found. Only text that is not TOML fails.
pub(super) fn read(text: &str, path: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        path: path.to_path_buf(),
        problems,
    };
    let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        fail(vec![Problem {
            key: String::new(),
            message: format!("not valid TOML: {}", e.to_string().trim()),
        }])
    })?;
    let mut problems = Problems(Vec::new());

    let server: Option<RawServer> = section(&mut doc, "server", &mut problems);
    let upstream: Option<RawUpstream> = section(&mut doc, "upstream", &mut problems);
    let auth: Option<RawAuth> = section(&mut doc, "auth", &mut problems);
    let cache: Option<RawModeCache> = section(&mut doc, "mode_cache", &mut problems);
    let policy: Option<RawPolicy> = section(&mut doc, "policy", &mut problems);
    let log: Option<RawLog> = section(&mut doc, "log", &mut problems);
    let callbacks: Option<callbacks::RawCallbacks> = section(&mut doc, "callbacks", &mut problems);
    for unknown in doc.keys() {
        problems.add(
            unknown.clone(),
            "unknown section (expected server, upstream, auth, mode_cache, policy, log, callbacks)",
        );
    }

    let base_dir = path.parent().unwrap_or(Path::new("."));
    let server = server.map(|s| server_section(s, base_dir, &mut problems));

    let upstream = upstream.and_then(|u| upstream_section(u, base_dir, &mut problems));
    if let (Some(s), Some(u)) = (&server, &upstream) {
        super::batch::check(s, u, &mut problems);
    }

    let auth = auth.map(|a| auth_section(a, upstream.as_ref(), server.as_ref(), &mut problems));

    let mode_cache = cache.map(|c| mode_cache_section(c, &mut problems));

    let policy = policy.map(|p| policy_section(p, &mut problems));

    let log = log.map(|l| log_section(l, &mut problems));

    let callbacks = callbacks.map(|c| callbacks::callbacks(c, &mut problems));
    let defaults = || {
        // The empty document has no problems, so this cannot recurse further.
        read("", Path::new("<defaults>")).map(|(c, _)| c)
    };
    let config = match (server, upstream, auth, mode_cache, policy, log, callbacks) {
        (
            Some(server),
            Some(upstream),
            Some(auth),
            Some(mode_cache),
            Some(policy),
            Some(log),
            Some(callbacks),
        ) => Config {
            server,
            upstream,
            auth,
            mode_cache,
            policy,
            log,
            callbacks,
        },
        (server, upstream, auth, mode_cache, policy, log, callbacks) => {
            let d = defaults()?;
            Config {
                server: server.unwrap_or(d.server),
                upstream: upstream.unwrap_or(d.upstream),
                auth: auth.unwrap_or(d.auth),
                mode_cache: mode_cache.unwrap_or(d.mode_cache),
                policy: policy.unwrap_or(d.policy),
                log: log.unwrap_or(d.log),
                callbacks: callbacks.unwrap_or(d.callbacks),
            }
        }
    };
    Ok((config, problems.0))
}

/// `[server]`: listeners, limits and timeouts.
fn server_section(s: RawServer, base_dir: &Path, problems: &mut Problems) -> ServerSettings {
    let server = ServerSettings {
        tls: transport::listener_tls(s.tls_cert_file, s.tls_key_file, base_dir, problems),
        listen: socket_addr("server.listen", &s.listen, problems)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        admin_listen: socket_addr("server.admin_listen", &s.admin_listen, problems)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        shutdown_grace: Duration::from_secs(range(
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs,
            0,
            3_600,
            problems,
        )),
        max_policy_body_bytes: range(
            "server.max_policy_body_bytes",
            s.max_policy_body_bytes,
            1_024,
            64 * 1_048_576,
            problems,
        ) as usize,
        header_read_timeout: Duration::from_secs(range(
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
            1,
            300,
            problems,
        )),
        body_idle_timeout: Duration::from_secs(range(
            "server.body_idle_timeout_secs",
            s.body_idle_timeout_secs,
            1,
            3_600,
            problems,
        )),
        max_connections: range(
            "server.max_connections",
            s.max_connections,
            1,
            1_000_000,
            problems,
        ) as usize,
        http2_max_concurrent_streams: range(
            "server.http2_max_concurrent_streams",
            s.http2_max_concurrent_streams,
            1,
            10_000,
            problems,
        ) as u32,
        batch_listen: s
            .batch_listen
            .as_deref()
            .and_then(|a| socket_addr("server.batch_listen", a, problems)),
        max_batch_body_bytes: range(
            "server.max_batch_body_bytes",
            s.max_batch_body_bytes,
            1_024,
            256 * 1_048_576,
            problems,
        ) as usize,
        http1_engine: match one_of(
            "server.http1_engine",
            &s.http1_engine,
            &["hyper", "native"],
            problems,
        ) {
            "native" => super::Http1Engine::Native,
            _ => super::Http1Engine::Hyper,
        },
    };
    if server.listen == server.admin_listen && server.listen.port() != 0 {
        problems.add(
            "server.admin_listen",
            format!(
                "{} is also server.listen; use another port",
                server.admin_listen
            ),
        );
    }
    server
}

/// `[upstream]`: the origin (or the embedded simulator), timeouts, pool, TLS roots, egress
/// proxy and Batch origin. `None` when the origin is not a usable URL.
fn upstream_section(
    u: RawUpstream,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<UpstreamSettings> {
    let tls_roots = transport::tls_roots(&u.tls_roots, problems);
    let ca_file = transport::ca_file(u.ca_file, base_dir, problems);
    let proxy = transport::proxy(u.proxy_url.as_deref(), problems);
    let target = if u.base_url == "embedded" {
        UpstreamTarget::Embedded {
            seed: u
                .embedded_seed
                .map(|p| transport::config_relative(base_dir, p)),
        }
    } else {
        if u.embedded_seed.is_some() {
            problems.add(
                "upstream.embedded_seed",
                "only applies when upstream.base_url = \"embedded\"",
            );
        }
        UpstreamTarget::Url(http_url("upstream.base_url", &u.base_url, problems)?)
    };
    let batch_base_url = super::batch::base_url(u.batch_base_url.as_deref(), &target, problems);
    Some(UpstreamSettings {
        target,
        connect_timeout: Duration::from_millis(range(
            "upstream.connect_timeout_ms",
            u.connect_timeout_ms,
            1,
            600_000,
            problems,
        )),
        request_timeout: Duration::from_millis(range(
            "upstream.request_timeout_ms",
            u.request_timeout_ms,
            1,
            3_600_000,
            problems,
        )),
        pool_max_idle_per_host: range(
            "upstream.pool_max_idle_per_host",
            u.pool_max_idle_per_host,
            0,
            100_000,
            problems,
        ) as usize,
        tls_roots,
        ca_file,
        proxy,
        batch_base_url,
    })
}

/// `[auth]`: passthrough or inject, the token URL and the credentials' variables. An
/// inject gateway must be loopback-only or demand an inbound token.
fn auth_section(
    a: RawAuth,
    upstream: Option<&UpstreamSettings>,
    server: Option<&ServerSettings>,
    problems: &mut Problems,
) -> AuthSettings {
    let mode = match one_of("auth.mode", &a.mode, &["passthrough", "inject"], problems) {
        "inject" => AuthMode::Inject,
        _ => AuthMode::Passthrough,
    };
    let token_url = match a.token_url.as_deref() {
        Some(url) => http_url("auth.token_url", url, problems),
        None => match upstream.map(|u| &u.target) {
            Some(UpstreamTarget::Embedded { .. }) => None,
            _ => Some(Uri::from_static(DEFAULT_TOKEN_URL)),
        },
    };
    for (key, value) in [
        ("auth.key_id_env", &a.key_id_env),
        ("auth.key_secret_env", &a.key_secret_env),
    ] {
        if value.is_empty() {
            problems.add(key, "must name an environment variable");
        }
    }
    let auth = AuthSettings {
        mode,
        token_url,
        key_id_env: a.key_id_env,
        key_secret_env: a.key_secret_env,
        inbound_token_env: a.inbound_token_env,
    };
    if auth.inbound_token_env.is_some() && auth.mode != AuthMode::Inject {
        problems.add(
            "auth.inbound_token_env",
            "only applies when auth.mode = \"inject\"",
        );
    }
    if auth.inbound_token_env.as_deref() == Some("") {
        problems.add(
            "auth.inbound_token_env",
            "must name an environment variable",
        );
    }
    // A key-holding gateway must not be an open door to the key.
    let loopback_only = server.is_some_and(super::batch::loopback_only);
    if auth.mode == AuthMode::Inject && auth.inbound_token_env.is_none() && !loopback_only {
        problems.add(
            "auth.mode",
            "\"inject\" makes the gateway hold an API key: bind server.listen (and server.batch_listen) to a loopback address, or set auth.inbound_token_env so callers must present a shared secret",
        );
    }
    auth
}

/// `[mode_cache]`: TTLs, sizes, and the variable naming the shared Redis.
fn mode_cache_section(c: RawModeCache, problems: &mut Problems) -> ModeCacheSettings {
    if let Some(name) = c.redis_url_env.as_deref() {
        let is_name = name.bytes().enumerate().all(|(i, b)| {
            b == b'_'
                || b.is_ascii_uppercase()
                || b.is_ascii_lowercase()
                || (i > 0 && b.is_ascii_digit())
        });
        if name.is_empty() || !is_name {
            problems.add(
                "mode_cache.redis_url_env",
                "must name an environment variable (letters, digits and _, not starting with a digit); the URL itself, which may hold a password, never goes in the file",
            );
        }
    }
    ModeCacheSettings {
        ttl: Duration::from_secs(range(
            "mode_cache.ttl_secs",
            c.ttl_secs,
            0,
            86_400 * 30,
            problems,
        )),
        stale_if_error: Duration::from_secs(range(
            "mode_cache.stale_if_error_secs",
            c.stale_if_error_secs,
            0,
            86_400 * 30,
            problems,
        )),
        max_apps: range("mode_cache.max_apps", c.max_apps, 1, 10_000_000, problems),
        max_messages: range(
            "mode_cache.max_messages",
            c.max_messages,
            0,
            10_000_000,
            problems,
        ),
        message_ttl: Duration::from_secs(range(
            "mode_cache.message_ttl_secs",
            c.message_ttl_secs,
            1,
            86_400 * 30,
            problems,
        )),
        redis_url_env: c.redis_url_env,
    }
}

/// `[policy]`: what an unknown mode does, defaults, the rule actions and the per-app
/// overrides (`[[policy.app]]`).
fn policy_section(p: RawPolicy, problems: &mut Problems) -> PolicySettings {
    let unknown_mode = match one_of(
        "policy.unknown_mode",
        &p.unknown_mode,
        &["forward", "reject"],
        problems,
    ) {
        "reject" => UnknownMode::Reject,
        _ => UnknownMode::Forward,
    };
    let create_app_default_mode = match one_of(
        "policy.create_app_default_mode",
        &p.create_app_default_mode,
        &["keep", "CONVERSATION", "DISPATCH"],
        problems,
    ) {
        "CONVERSATION" => Some(ProcessingMode::Conversation),
        "DISPATCH" => Some(ProcessingMode::Dispatch),
        _ => None,
    };
    let reject_unrecognized_routes = one_of(
        "policy.unrecognized_route",
        &p.unrecognized_route,
        &["forward", "reject"],
        problems,
    ) == "reject";
    let what_if_dispatch = one_of(
        "policy.what_if_mode",
        &p.what_if_mode,
        &["off", "DISPATCH"],
        problems,
    ) == "DISPATCH";
    let max_ttl_days = range("policy.max_ttl_days", p.max_ttl_days, 1, 3_650, problems) as u32;
    let mut rules = RuleSet::default();
    // Set by its own key, so every view of the policy agrees with it.
    rules.set(
        RuleId::UnrecognizedRoute,
        if reject_unrecognized_routes {
            Action::Enforce
        } else {
            Action::Off
        },
    );
    apply_rules("policy.rules", &p.rules, &mut rules, problems);
    let mut apps: Vec<AppOverride> = Vec::new();
    for (i, value) in p.app.into_iter().enumerate() {
        if let Some(app) = app_override(&format!("policy.app[{i}]"), value, rules, &apps, problems)
        {
            apps.push(app);
        }
    }
    PolicySettings {
        unknown_mode,
        create_app_default_mode,
        what_if_dispatch,
        reject_unrecognized_routes,
        max_ttl_days,
        rules,
        apps,
    }
}

/// `[log]`: format, filter and the access log.
fn log_section(l: RawLog, problems: &mut Problems) -> LogSettings {
    LogSettings {
        format: match one_of("log.format", &l.format, &["text", "json"], problems) {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        },
        level: {
            if let Err(message) = log_filter(&l.level) {
                problems.add("log.level", message);
            }
            l.level
        },
        access_log: l.access_log,
    }
}

/// One `[[policy.app]]` entry (at `key`): ids, pinned mode and rule overrides on top of the
/// global `rules`; `None` when it cannot be used.
fn app_override(
    key: &str,
    value: toml::Value,
    rules: RuleSet,
    apps: &[AppOverride],
    problems: &mut Problems,
) -> Option<AppOverride> {
    let raw: RawApp = match value {
        toml::Value::Table(t) => typed(key, t, problems)?,
        _ => {
            problems.add(key, "must be a table");
            return None;
        }
    };
    for (field, v) in [("project_id", &raw.project_id), ("app_id", &raw.app_id)] {
        if v.is_empty() || v.contains('/') {
            problems.add(format!("{key}.{field}"), format!("{v:?} is not a valid id"));
        }
    }
    if apps
        .iter()
        .any(|a| a.project_id == raw.project_id && a.app_id == raw.app_id)
    {
        problems.add(
            key,
            format!("app {}/{} is listed twice", raw.project_id, raw.app_id),
        );
    }
    let processing_mode = raw.processing_mode.as_deref().and_then(|m| {
        m.parse::<ProcessingMode>()
            .map_err(|e| problems.add(format!("{key}.processing_mode"), e))
            .ok()
    });
    let mut app_rules = rules;
    apply_rules(
        &format!("{key}.rules"),
        &raw.rules,
        &mut app_rules,
        problems,
    );
    Some(AppOverride {
        project_id: raw.project_id,
        app_id: raw.app_id,
        processing_mode,
        allow_dispatch_only: raw.allow_dispatch_only,
        rules: app_rules,
    })
}
