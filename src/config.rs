//! Configuration: raw TOML structs (`deny_unknown_fields`, a `///` on every key) validated into
//! typed runtime settings before any port is bound.
//!
//! Each top-level section is deserialised on its own so that one typo does not hide the
//! problems of the other sections, and semantic checks collect every problem before failing.
//! A misspelt rule id or action is an error, never a silently open policy.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use crate::policy::{Action, ProcessingMode, RuleId, RuleSet};

/// Default config path of `serve` and `check-config`.
pub const DEFAULT_CONFIG_PATH: &str = "config/modegate.toml";
/// The token endpoint used when `[auth] token_url` is not set.
pub const DEFAULT_TOKEN_URL: &str = "https://auth.sinch.com/oauth2/token";

// ---------------------------------------------------------------------------------------------
// Raw layer
// ---------------------------------------------------------------------------------------------

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Proxy listener (HTTP/1.1 and h2c).
    #[serde(default = "default_listen")]
    listen: String,
    /// Admin listener: /metrics, /healthz, /readyz, /apps, /report/migration.
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[serde(default = "default_grace")]
    shutdown_grace_secs: u64,
    /// Largest body buffered on routes whose rules read it; above it, 413.
    #[serde(default = "default_max_body")]
    max_policy_body_bytes: u64,
    /// Seconds a client has to send a complete request head (slowloris guard).
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout_secs: u64,
    /// Concurrent client connections accepted; further ones wait in the kernel backlog.
    #[serde(default = "default_max_connections")]
    max_connections: u64,
    /// Concurrent HTTP/2 streams per client connection.
    #[serde(default = "default_h2_streams")]
    http2_max_concurrent_streams: u64,
}

/// `[upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    /// `https://{us|eu|br}.conversation.api.sinch.com`, any http(s) URL, or "embedded".
    #[serde(default = "default_base_url")]
    base_url: String,
    /// Seed file for the embedded simulator (only with base_url = "embedded").
    embedded_seed: Option<PathBuf>,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
    /// Time allowed until the upstream's response head arrives.
    #[serde(default = "default_request_timeout")]
    request_timeout_ms: u64,
    /// Idle upstream connections kept per host.
    #[serde(default = "default_pool_idle")]
    pool_max_idle_per_host: u64,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    /// "passthrough" forwards the caller's Authorization; "inject" sets the gateway's own token.
    #[serde(default = "default_auth_mode")]
    mode: String,
    /// OAuth2 token endpoint; `POST /oauth2/token` on the gateway is forwarded here.
    token_url: Option<String>,
    /// Environment variable holding the access key id (inject mode).
    #[serde(default = "default_key_id_env")]
    key_id_env: String,
    /// Environment variable holding the access key secret (inject mode).
    #[serde(default = "default_key_secret_env")]
    key_secret_env: String,
    /// Environment variable holding a shared secret inbound callers must present (inject mode).
    inbound_token_env: Option<String>,
}

/// `[mode_cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModeCache {
    /// Seconds a learned mode is trusted; 0 disables caching.
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
    /// Seconds a stale mode may be served while the upstream lookup fails.
    #[serde(default = "default_stale")]
    stale_if_error_secs: u64,
    /// Most apps remembered.
    #[serde(default = "default_max_apps")]
    max_apps: u64,
}

/// One `[[policy.app]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    /// Project id.
    project_id: String,
    /// App id.
    app_id: String,
    /// Pin the mode instead of looking it up.
    processing_mode: Option<String>,
    /// This app may use processing_strategy = DISPATCH_ONLY.
    #[serde(default)]
    allow_dispatch_only: bool,
    /// Per-app rule actions over the global ones.
    #[serde(default)]
    rules: BTreeMap<String, String>,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// "forward" (fail open) or "reject" (fail closed) when an app's mode cannot be learned.
    #[serde(default = "default_unknown_mode")]
    unknown_mode: String,
    /// "keep", "CONVERSATION" or "DISPATCH": pin processing_mode on app create when absent.
    #[serde(default = "default_keep")]
    create_app_default_mode: String,
    /// "off" or "DISPATCH": evaluate DISPATCH rules in shadow on CONVERSATION apps.
    #[serde(default = "default_off")]
    what_if_mode: String,
    /// Organisation cap on any retention ttl_days.
    #[serde(default = "default_max_ttl")]
    max_ttl_days: u64,
    /// Global rule actions.
    #[serde(default)]
    rules: BTreeMap<String, String>,
    /// Per-app overrides and static modes.
    #[serde(default)]
    app: Vec<toml::Value>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// "text" or "json".
    #[serde(default = "default_log_format")]
    format: String,
    /// Default level filter (RUST_LOG overrides it).
    #[serde(default = "default_log_level")]
    level: String,
    /// One info line per request (target modegate::access).
    #[serde(default)]
    access_log: bool,
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_admin_listen() -> String {
    "0.0.0.0:9090".into()
}
fn default_grace() -> u64 {
    20
}
fn default_max_body() -> u64 {
    1_048_576
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_max_connections() -> u64 {
    10_000
}
fn default_h2_streams() -> u64 {
    256
}
fn default_base_url() -> String {
    "https://us.conversation.api.sinch.com".into()
}
fn default_connect_timeout() -> u64 {
    2_000
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_pool_idle() -> u64 {
    512
}
fn default_auth_mode() -> String {
    "passthrough".into()
}
fn default_key_id_env() -> String {
    "SINCH_KEY_ID".into()
}
fn default_key_secret_env() -> String {
    "SINCH_KEY_SECRET".into()
}
fn default_ttl() -> u64 {
    300
}
fn default_stale() -> u64 {
    3_600
}
fn default_max_apps() -> u64 {
    100_000
}
fn default_unknown_mode() -> String {
    "forward".into()
}
fn default_keep() -> String {
    "keep".into()
}
fn default_off() -> String {
    "off".into()
}
fn default_max_ttl() -> u64 {
    3_650
}
fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    "info".into()
}

// ---------------------------------------------------------------------------------------------
// Runtime layer
// ---------------------------------------------------------------------------------------------

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[upstream]`.
    pub upstream: UpstreamSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[mode_cache]`.
    pub mode_cache: ModeCacheSettings,
    /// `[policy]`.
    pub policy: PolicySettings,
    /// `[log]`.
    pub log: LogSettings,
}

/// Listener and limit settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Drain budget on shutdown.
    pub shutdown_grace: Duration,
    /// Body buffering limit on policy routes.
    pub max_policy_body_bytes: usize,
    /// Request-head read timeout.
    pub header_read_timeout: Duration,
    /// Concurrent connection cap.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// The built-in simulator, started in-process.
    Embedded {
        /// Its seed file, if any.
        seed: Option<PathBuf>,
    },
    /// A real (or external) Conversation API origin.
    Url(Uri),
}

/// `[upstream]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// The origin.
    pub target: UpstreamTarget,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout to response head.
    pub request_timeout: Duration,
    /// Pool size per host.
    pub pool_max_idle_per_host: usize,
}

/// How the gateway authenticates upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Forward the caller's Authorization.
    Passthrough,
    /// Obtain tokens with the gateway's own key and set Authorization itself.
    Inject,
}

/// `[auth]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Mode.
    pub mode: AuthMode,
    /// Token endpoint; `None` means "the embedded simulator's" (base_url = "embedded").
    pub token_url: Option<Uri>,
    /// Env var names.
    pub key_id_env: String,
    /// Env var names.
    pub key_secret_env: String,
    /// Env var holding the inbound shared secret.
    pub inbound_token_env: Option<String>,
}

/// `[mode_cache]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeCacheSettings {
    /// Trust period; zero disables caching.
    pub ttl: Duration,
    /// Stale-if-error window.
    pub stale_if_error: Duration,
    /// Capacity.
    pub max_apps: u64,
}

/// What to do when an app's mode cannot be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownMode {
    /// Fail open.
    Forward,
    /// Fail closed with 503.
    Reject,
}

/// One `[[policy.app]]`.
#[derive(Debug, Clone)]
pub struct AppOverride {
    /// Project id.
    pub project_id: String,
    /// App id.
    pub app_id: String,
    /// Pinned mode.
    pub processing_mode: Option<ProcessingMode>,
    /// May use DISPATCH_ONLY.
    pub allow_dispatch_only: bool,
    /// The effective rule actions for this app (global ones with this app's overrides applied).
    pub rules: RuleSet,
}

/// `[policy]`, validated.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Fallback when a mode cannot be learned.
    pub unknown_mode: UnknownMode,
    /// Mode pinned on create when absent (`None` = keep).
    pub create_app_default_mode: Option<ProcessingMode>,
    /// Evaluate DISPATCH rules in shadow on CONVERSATION apps.
    pub what_if_dispatch: bool,
    /// Cap on ttl_days.
    pub max_ttl_days: u32,
    /// Global actions.
    pub rules: RuleSet,
    /// Per-app overrides.
    pub apps: Vec<AppOverride>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Format.
    pub format: LogFormat,
    /// Default filter directive.
    pub level: String,
    /// Log one line per request.
    pub access_log: bool,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `server.listen` or `policy.rules."x.y"`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The problems, in file order of sections.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {} problem{}",
            self.path.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.key.is_empty() {
                write!(f, "\n  - {}", p.message)?;
            } else {
                write!(f, "\n  - {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Takes one section out of the document and deserialises it, recording a problem if it fails.
fn section<T: for<'de> Deserialize<'de>>(
    doc: &mut toml::Table,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    let value = doc
        .remove(name)
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    if !value.is_table() {
        problems.add(name, "must be a table");
        return None;
    }
    match value.try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.add(name, e.message().trim().to_string());
            None
        }
    }
}

fn socket_addr(key: &str, value: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.add(
                key,
                format!(
                    "{value:?} is not a socket address (expected IP:PORT such as 0.0.0.0:8080)"
                ),
            );
            None
        }
    }
}

fn http_url(key: &str, value: &str, problems: &mut Problems) -> Option<Uri> {
    let uri = match value.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => {
            problems.add(key, format!("{value:?} is not a URL"));
            return None;
        }
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            problems.add(
                key,
                format!("{value:?} must start with http:// or https://"),
            );
            return None;
        }
    }
    if uri.host().map_or(true, str::is_empty) {
        problems.add(key, format!("{value:?} has no host"));
        return None;
    }
    if uri.query().is_some() {
        problems.add(key, format!("{value:?} must not have a query"));
        return None;
    }
    Some(uri)
}

fn range(key: &str, value: u64, lo: u64, hi: u64, problems: &mut Problems) -> u64 {
    if value < lo || value > hi {
        problems.add(key, format!("{value} is out of range ({lo}..={hi})"));
    }
    value.clamp(lo, hi)
}

fn one_of<'a>(key: &str, value: &str, allowed: &[&'a str], problems: &mut Problems) -> &'a str {
    match allowed.iter().find(|a| **a == value) {
        Some(a) => a,
        None => {
            problems.add(
                key,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            );
            allowed[0]
        }
    }
}

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

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::parse(&text, path)
    }

    /// Validates TOML text; `path` is only used in messages (and to resolve relative seed paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
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
        for unknown in doc.keys() {
            problems.add(
                unknown.clone(),
                "unknown section (expected server, upstream, auth, mode_cache, policy, log)",
            );
        }

        let server = server.map(|s| ServerSettings {
            listen: socket_addr("server.listen", &s.listen, &mut problems)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            admin_listen: socket_addr("server.admin_listen", &s.admin_listen, &mut problems)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            shutdown_grace: Duration::from_secs(range(
                "server.shutdown_grace_secs",
                s.shutdown_grace_secs,
                0,
                3_600,
                &mut problems,
            )),
            max_policy_body_bytes: range(
                "server.max_policy_body_bytes",
                s.max_policy_body_bytes,
                1_024,
                64 * 1_048_576,
                &mut problems,
            ) as usize,
            header_read_timeout: Duration::from_secs(range(
                "server.header_read_timeout_secs",
                s.header_read_timeout_secs,
                1,
                300,
                &mut problems,
            )),
            max_connections: range(
                "server.max_connections",
                s.max_connections,
                1,
                1_000_000,
                &mut problems,
            ) as usize,
            http2_max_concurrent_streams: range(
                "server.http2_max_concurrent_streams",
                s.http2_max_concurrent_streams,
                1,
                10_000,
                &mut problems,
            ) as u32,
        });
        if let Some(s) = &server {
            if s.listen == s.admin_listen && s.listen.port() != 0 {
                problems.add(
                    "server.admin_listen",
                    format!("{} is also server.listen; use another port", s.admin_listen),
                );
            }
        }

        let base_dir = path.parent().unwrap_or(Path::new("."));
        let upstream = upstream.and_then(|u| {
            let target = if u.base_url == "embedded" {
                UpstreamTarget::Embedded {
                    seed: u.embedded_seed.map(|p| {
                        if p.is_absolute() || p.exists() {
                            p
                        } else {
                            base_dir.join(p)
                        }
                    }),
                }
            } else {
                if u.embedded_seed.is_some() {
                    problems.add(
                        "upstream.embedded_seed",
                        "only applies when upstream.base_url = \"embedded\"",
                    );
                }
                UpstreamTarget::Url(http_url("upstream.base_url", &u.base_url, &mut problems)?)
            };
            Some(UpstreamSettings {
                target,
                connect_timeout: Duration::from_millis(range(
                    "upstream.connect_timeout_ms",
                    u.connect_timeout_ms,
                    1,
                    600_000,
                    &mut problems,
                )),
                request_timeout: Duration::from_millis(range(
                    "upstream.request_timeout_ms",
                    u.request_timeout_ms,
                    1,
                    3_600_000,
                    &mut problems,
                )),
                pool_max_idle_per_host: range(
                    "upstream.pool_max_idle_per_host",
                    u.pool_max_idle_per_host,
                    0,
                    100_000,
                    &mut problems,
                ) as usize,
            })
        });

        let auth = auth.map(|a| {
            let mode = match one_of(
                "auth.mode",
                &a.mode,
                &["passthrough", "inject"],
                &mut problems,
            ) {
                "inject" => AuthMode::Inject,
                _ => AuthMode::Passthrough,
            };
            let token_url = match a.token_url.as_deref() {
                Some(url) => http_url("auth.token_url", url, &mut problems),
                None => match upstream.as_ref().map(|u| &u.target) {
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
            AuthSettings {
                mode,
                token_url,
                key_id_env: a.key_id_env,
                key_secret_env: a.key_secret_env,
                inbound_token_env: a.inbound_token_env,
            }
        });
        if let Some(a) = &auth {
            if a.inbound_token_env.is_some() && a.mode != AuthMode::Inject {
                problems.add(
                    "auth.inbound_token_env",
                    "only applies when auth.mode = \"inject\"",
                );
            }
            if a.inbound_token_env.as_deref() == Some("") {
                problems.add(
                    "auth.inbound_token_env",
                    "must name an environment variable",
                );
            }
            // A key-holding gateway must not be an open door to the key.
            let loopback_only = server.as_ref().is_some_and(|s| s.listen.ip().is_loopback());
            if a.mode == AuthMode::Inject && a.inbound_token_env.is_none() && !loopback_only {
                problems.add(
                    "auth.mode",
                    "\"inject\" makes the gateway hold an API key: bind server.listen to a loopback address, or set auth.inbound_token_env so callers must present a shared secret",
                );
            }
        }

        let mode_cache = cache.map(|c| ModeCacheSettings {
            ttl: Duration::from_secs(range(
                "mode_cache.ttl_secs",
                c.ttl_secs,
                0,
                86_400 * 30,
                &mut problems,
            )),
            stale_if_error: Duration::from_secs(range(
                "mode_cache.stale_if_error_secs",
                c.stale_if_error_secs,
                0,
                86_400 * 30,
                &mut problems,
            )),
            max_apps: range(
                "mode_cache.max_apps",
                c.max_apps,
                1,
                10_000_000,
                &mut problems,
            ),
        });

        let policy = policy.map(|p| {
            let unknown_mode = match one_of(
                "policy.unknown_mode",
                &p.unknown_mode,
                &["forward", "reject"],
                &mut problems,
            ) {
                "reject" => UnknownMode::Reject,
                _ => UnknownMode::Forward,
            };
            let create_app_default_mode = match one_of(
                "policy.create_app_default_mode",
                &p.create_app_default_mode,
                &["keep", "CONVERSATION", "DISPATCH"],
                &mut problems,
            ) {
                "CONVERSATION" => Some(ProcessingMode::Conversation),
                "DISPATCH" => Some(ProcessingMode::Dispatch),
                _ => None,
            };
            let what_if_dispatch = one_of(
                "policy.what_if_mode",
                &p.what_if_mode,
                &["off", "DISPATCH"],
                &mut problems,
            ) == "DISPATCH";
            let max_ttl_days = range(
                "policy.max_ttl_days",
                p.max_ttl_days,
                1,
                3_650,
                &mut problems,
            ) as u32;
            let mut rules = RuleSet::default();
            apply_rules("policy.rules", &p.rules, &mut rules, &mut problems);
            let mut apps: Vec<AppOverride> = Vec::new();
            for (i, value) in p.app.into_iter().enumerate() {
                let key = format!("policy.app[{i}]");
                let raw: RawApp = match value.try_into() {
                    Ok(r) => r,
                    Err(e) => {
                        problems.add(key, e.message().trim().to_string());
                        continue;
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
                        &key,
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
                    &mut problems,
                );
                apps.push(AppOverride {
                    project_id: raw.project_id,
                    app_id: raw.app_id,
                    processing_mode,
                    allow_dispatch_only: raw.allow_dispatch_only,
                    rules: app_rules,
                });
            }
            PolicySettings {
                unknown_mode,
                create_app_default_mode,
                what_if_dispatch,
                max_ttl_days,
                rules,
                apps,
            }
        });

        let log = log.map(|l| LogSettings {
            format: match one_of("log.format", &l.format, &["text", "json"], &mut problems) {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            },
            level: {
                if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
                    problems.add("log.level", format!("{:?} is not a log filter", l.level));
                }
                l.level
            },
            access_log: l.access_log,
        });

        match (server, upstream, auth, mode_cache, policy, log) {
            (
                Some(server),
                Some(upstream),
                Some(auth),
                Some(mode_cache),
                Some(policy),
                Some(log),
            ) if problems.0.is_empty() => Ok(Config {
                server,
                upstream,
                auth,
                mode_cache,
                policy,
                log,
            }),
            _ => Err(fail(problems.0)),
        }
    }

    /// A config with every default and the given upstream; what tests and `demo` start from.
    pub fn with_upstream(target: UpstreamTarget) -> Config {
        // The empty document is valid by construction.
        let mut config = Config::parse("", Path::new("<defaults>"))
            .unwrap_or_else(|e| unreachable!("default config must be valid: {e}"));
        config.upstream.target = target;
        if matches!(config.upstream.target, UpstreamTarget::Embedded { .. }) {
            config.auth.token_url = None;
        }
        config
    }

    /// A one-screen human summary (for `check-config`).
    pub fn summary(&self) -> String {
        let upstream = match &self.upstream.target {
            UpstreamTarget::Embedded { seed } => format!(
                "embedded simulator (seed: {})",
                seed.as_ref()
                    .map_or_else(|| "none".to_string(), |p| p.display().to_string())
            ),
            UpstreamTarget::Url(u) => u.to_string(),
        };
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("listen          {}", self.server.listen));
        line(format!("admin_listen    {}", self.server.admin_listen));
        line(format!("upstream        {upstream}"));
        line(format!(
            "timeouts        connect {:?}, request {:?}, shutdown grace {:?}",
            self.upstream.connect_timeout,
            self.upstream.request_timeout,
            self.server.shutdown_grace
        ));
        line(format!(
            "auth            {}",
            match self.auth.mode {
                AuthMode::Passthrough => "passthrough",
                AuthMode::Inject => "inject",
            }
        ));
        line(format!(
            "mode cache      ttl {:?}, stale-if-error {:?}, max {} apps",
            self.mode_cache.ttl, self.mode_cache.stale_if_error, self.mode_cache.max_apps
        ));
        line(format!(
            "policy          unknown_mode {:?}, create_app_default_mode {}, what_if {}, max_ttl_days {}",
            self.policy.unknown_mode,
            self.policy
                .create_app_default_mode
                .map_or("keep", ProcessingMode::as_str),
            if self.policy.what_if_dispatch { "DISPATCH" } else { "off" },
            self.policy.max_ttl_days
        ));
        line("rules".to_string());
        for rule in RuleId::ALL {
            line(format!(
                "  {:<40} {}",
                rule.as_str(),
                self.policy.rules.action(*rule)
            ));
        }
        line(format!("per-app entries {}", self.policy.apps.len()));
        for app in &self.policy.apps {
            line(format!(
                "  {}/{} mode {} dispatch_only {}",
                app.project_id,
                app.app_id,
                app.processing_mode.map_or("lookup", ProcessingMode::as_str),
                app.allow_dispatch_only
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse(text).expect_err("config should be rejected").problems
    }

    fn has(problems: &[Problem], key: &str, needle: &str) -> bool {
        problems
            .iter()
            .any(|p| p.key == key && p.message.contains(needle))
    }

    #[test]
    fn empty_file_gives_interface_defaults() {
        let c = parse("").expect("defaults valid");
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(c.server.admin_listen, "0.0.0.0:9090".parse().expect("addr"));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.server.max_policy_body_bytes, 1_048_576);
        assert_eq!(
            c.upstream.target,
            UpstreamTarget::Url(Uri::from_static("https://us.conversation.api.sinch.com"))
        );
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(2000));
        assert_eq!(c.upstream.request_timeout, Duration::from_millis(30000));
        assert_eq!(c.auth.mode, AuthMode::Passthrough);
        assert_eq!(c.auth.token_url, Some(Uri::from_static(DEFAULT_TOKEN_URL)));
        assert_eq!(c.mode_cache.ttl, Duration::from_secs(300));
        assert_eq!(c.mode_cache.stale_if_error, Duration::from_secs(3600));
        assert_eq!(c.mode_cache.max_apps, 100_000);
        assert_eq!(c.policy.unknown_mode, UnknownMode::Forward);
        assert_eq!(c.policy.create_app_default_mode, None);
        assert!(!c.policy.what_if_dispatch);
        assert_eq!(c.policy.max_ttl_days, 3650);
        assert_eq!(c.policy.rules, RuleSet::default());
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn shipped_configs_are_valid() {
        for file in ["config/modegate.toml", "config/demo.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let p = problems("[server]\nlisen = \"0.0.0.0:1\"\n");
        assert!(has(&p, "server", "unknown field `lisen`"), "{p:?}");
    }

    #[test]
    fn unknown_section_is_named() {
        let p = problems("[sever]\nlisten = \"0.0.0.0:1\"\n");
        assert!(has(&p, "sever", "unknown section"), "{p:?}");
    }

    #[test]
    fn bad_address_is_named() {
        let p = problems("[server]\nlisten = \"localhost:99999\"\n");
        assert!(has(&p, "server.listen", "not a socket address"), "{p:?}");
    }

    #[test]
    fn bad_url_is_named() {
        let p = problems("[upstream]\nbase_url = \"ftp://x\"\n");
        assert!(has(&p, "upstream.base_url", "http:// or https://"), "{p:?}");
        let p = problems("[auth]\ntoken_url = \"not a url\"\n");
        assert!(has(&p, "auth.token_url", "not a URL"), "{p:?}");
    }

    #[test]
    fn out_of_range_number_is_named() {
        let p = problems("[policy]\nmax_ttl_days = 4000\n");
        assert!(
            has(&p, "policy.max_ttl_days", "out of range (1..=3650)"),
            "{p:?}"
        );
        let p = problems("[mode_cache]\nmax_apps = 0\n");
        assert!(has(&p, "mode_cache.max_apps", "out of range"), "{p:?}");
    }

    #[test]
    fn wrong_type_is_named() {
        let p = problems("[mode_cache]\nttl_secs = \"five\"\n");
        assert!(has(&p, "mode_cache", "invalid type"), "{p:?}");
    }

    #[test]
    fn unknown_rule_id_is_named() {
        let p = problems("[policy.rules]\n\"dispatch.send.contact_recipent\" = \"enforce\"\n");
        assert!(
            has(
                &p,
                "policy.rules.\"dispatch.send.contact_recipent\"",
                "unknown rule id"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_and_unsupported_actions_are_named() {
        let p = problems(
            "[policy.rules]\n\"dispatch.list_messages.contact_filter\" = \"rewrite\"\n\
             \"dispatch.messages_source\" = \"enforc\"\n",
        );
        assert!(
            has(
                &p,
                "policy.rules.\"dispatch.list_messages.contact_filter\"",
                "does not support \"rewrite\""
            ),
            "{p:?}"
        );
        assert!(
            has(
                &p,
                "policy.rules.\"dispatch.messages_source\"",
                "unknown action"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn per_app_rules_are_validated_and_layered_on_global() {
        let c = parse(
            "[policy.rules]\n\"dispatch.messages_source\" = \"shadow\"\n\
             [[policy.app]]\nproject_id = \"p\"\napp_id = \"a\"\nprocessing_mode = \"DISPATCH\"\n\
             rules = { \"dispatch.send.contact_recipient\" = \"shadow\" }\n",
        )
        .expect("valid");
        let app = &c.policy.apps[0];
        assert_eq!(app.processing_mode, Some(ProcessingMode::Dispatch));
        assert_eq!(
            app.rules.action(RuleId::SendContactRecipient),
            Action::Shadow
        );
        assert_eq!(app.rules.action(RuleId::MessagesSource), Action::Shadow);
        assert_eq!(
            c.policy.rules.action(RuleId::SendContactRecipient),
            Action::Enforce
        );

        let p = problems(
            "[[policy.app]]\nproject_id = \"p\"\napp_id = \"a\"\nprocessing_mode = \"dispatch\"\n\
             rules = { \"nope\" = \"off\" }\n",
        );
        assert!(
            has(
                &p,
                "policy.app[0].processing_mode",
                "unknown processing mode"
            ),
            "{p:?}"
        );
        assert!(
            has(&p, "policy.app[0].rules.\"nope\"", "unknown rule id"),
            "{p:?}"
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let p = problems(
            "[server]\nlisten = \"nope\"\nadmin_listen = \"also nope\"\n\
             [upstream]\nbase_url = \"ftp://x\"\n[policy]\nunknown_mode = \"maybe\"\n\
             [log]\nformat = \"xml\"\n[extra]\n",
        );
        for key in [
            "server.listen",
            "server.admin_listen",
            "upstream.base_url",
            "policy.unknown_mode",
            "log.format",
            "extra",
        ] {
            assert!(p.iter().any(|x| x.key == key), "{key} missing from {p:?}");
        }
    }

    #[test]
    fn error_display_names_file_and_key() {
        let e = parse("[server]\nlisten = \"nope\"\n").expect_err("invalid");
        let text = e.to_string();
        assert!(text.starts_with("test.toml: 1 problem"), "{text}");
        assert!(text.contains("server.listen"), "{text}");
    }

    #[test]
    fn invalid_toml_is_reported() {
        let p = problems("[server\n");
        assert!(p[0].message.contains("not valid TOML"), "{p:?}");
    }

    #[test]
    fn duplicate_app_is_an_error() {
        let p = problems(
            "[[policy.app]]\nproject_id = \"p\"\napp_id = \"a\"\n\
             [[policy.app]]\nproject_id = \"p\"\napp_id = \"a\"\n",
        );
        assert!(has(&p, "policy.app[1]", "listed twice"), "{p:?}");
    }

    #[test]
    fn embedded_upstream_has_no_default_token_url() {
        let c = parse("[upstream]\nbase_url = \"embedded\"\n").expect("valid");
        assert!(matches!(
            c.upstream.target,
            UpstreamTarget::Embedded { seed: None }
        ));
        assert_eq!(c.auth.token_url, None);
    }

    #[test]
    fn inject_needs_a_loopback_listener_or_an_inbound_secret() {
        let p = problems("[auth]\nmode = \"inject\"\n");
        assert!(has(&p, "auth.mode", "loopback"), "{p:?}");
        let c = parse("[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nmode = \"inject\"\n")
            .expect("loopback");
        assert_eq!(c.auth.mode, AuthMode::Inject);
        let c = parse("[auth]\nmode = \"inject\"\ninbound_token_env = \"MODEGATE_INBOUND\"\n")
            .expect("secret");
        assert_eq!(
            c.auth.inbound_token_env.as_deref(),
            Some("MODEGATE_INBOUND")
        );
        let p = problems("[auth]\ninbound_token_env = \"X\"\n");
        assert!(has(&p, "auth.inbound_token_env", "only applies"), "{p:?}");
    }

    #[test]
    fn ttl_one_and_zero_are_valid() {
        for ttl in [0, 1] {
            let c = parse(&format!("[mode_cache]\nttl_secs = {ttl}\n")).expect("valid");
            assert_eq!(c.mode_cache.ttl, Duration::from_secs(ttl));
        }
    }
}
