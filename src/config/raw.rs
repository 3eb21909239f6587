//! The raw layer: the file's shape, one serde struct per section with `deny_unknown_fields`
//! and a `///` on every key, and the interface's defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    /// Proxy listener (HTTP/1.1 and h2c).
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    /// Admin listener: /metrics, /healthz, /readyz, /apps, /report/migration.
    #[serde(default = "default_admin_listen")]
    pub(super) admin_listen: String,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[serde(default = "default_grace")]
    pub(super) shutdown_grace_secs: u64,
    /// Largest body buffered on routes whose rules read it; above it, 413.
    #[serde(default = "default_max_body")]
    pub(super) max_policy_body_bytes: u64,
    /// Seconds a client has to send a complete request head (slowloris guard).
    #[serde(default = "default_header_read_timeout")]
    pub(super) header_read_timeout_secs: u64,
    /// Seconds a request or response body may make no progress before it is abandoned.
    #[serde(default = "default_body_idle_timeout")]
    pub(super) body_idle_timeout_secs: u64,
    /// Concurrent client connections accepted; further ones wait in the kernel backlog.
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: u64,
    /// Concurrent HTTP/2 streams per client connection.
    #[serde(default = "default_h2_streams")]
    pub(super) http2_max_concurrent_streams: u64,
    /// PEM certificate chain: the proxy listener serves TLS (with `tls_key_file`).
    pub(super) tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub(super) tls_key_file: Option<PathBuf>,
    /// Batch API listener (off unless set).
    pub(super) batch_listen: Option<String>,
    /// Largest batch body buffered for policy; above it, 413.
    #[serde(default = "default_max_batch_body")]
    pub(super) max_batch_body_bytes: u64,
    /// The HTTP/1.1 engine of the proxy listeners: "hyper" or "native".
    #[serde(default = "default_http1_engine")]
    pub(super) http1_engine: String,
}

/// `[upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// `https://{us|eu|br}.conversation.api.sinch.com`, any http(s) URL, or "embedded".
    #[serde(default = "default_base_url")]
    pub(super) base_url: String,
    /// Seed file for the embedded simulator (only with base_url = "embedded").
    pub(super) embedded_seed: Option<PathBuf>,
    /// The Batch API origin (default: the Batch origin of base_url's region).
    pub(super) batch_base_url: Option<String>,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub(super) connect_timeout_ms: u64,
    /// Time allowed until the upstream's response head arrives.
    #[serde(default = "default_request_timeout")]
    pub(super) request_timeout_ms: u64,
    /// Idle upstream connections kept per host.
    #[serde(default = "default_pool_idle")]
    pub(super) pool_max_idle_per_host: u64,
    /// Trust anchors for https upstreams: "webpki" (bundled) or "system" (the OS store).
    #[serde(default = "default_tls_roots")]
    pub(super) tls_roots: String,
    /// Extra PEM trust anchors (a private or TLS-inspecting CA).
    pub(super) ca_file: Option<PathBuf>,
    /// HTTP proxy for all upstream traffic; unset: HTTPS_PROXY / NO_PROXY; "none": no proxy.
    pub(super) proxy_url: Option<String>,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    /// "passthrough" forwards the caller's Authorization; "inject" sets the gateway's own token.
    #[serde(default = "default_auth_mode")]
    pub(super) mode: String,
    /// OAuth2 token endpoint; `POST /oauth2/token` on the gateway is forwarded here.
    pub(super) token_url: Option<String>,
    /// Environment variable holding the access key id (inject mode).
    #[serde(default = "default_key_id_env")]
    pub(super) key_id_env: String,
    /// Environment variable holding the access key secret (inject mode).
    #[serde(default = "default_key_secret_env")]
    pub(super) key_secret_env: String,
    /// Environment variable holding a shared secret inbound callers must present (inject mode).
    pub(super) inbound_token_env: Option<String>,
}

/// `[mode_cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModeCache {
    /// Seconds a learned mode is trusted; 0 disables caching.
    #[serde(default = "default_ttl")]
    pub(super) ttl_secs: u64,
    /// Seconds a stale mode may be served while the upstream lookup fails.
    #[serde(default = "default_stale")]
    pub(super) stale_if_error_secs: u64,
    /// Most apps remembered.
    #[serde(default = "default_max_apps")]
    pub(super) max_apps: u64,
    /// Most message ids remembered with the app (and store) that sent them; 0 turns it off.
    #[serde(default = "default_max_messages")]
    pub(super) max_messages: u64,
    /// Seconds a remembered message id is kept (DISPATCH retention is at most 7 days).
    #[serde(default = "default_message_ttl")]
    pub(super) message_ttl_secs: u64,
    /// Environment variable holding a Redis URL: replicas share learned modes through it.
    pub(super) redis_url_env: Option<String>,
}

/// One `[[policy.app]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    /// Project id.
    pub(super) project_id: String,
    /// App id.
    pub(super) app_id: String,
    /// Pin the mode instead of looking it up.
    pub(super) processing_mode: Option<String>,
    /// This app may use processing_strategy = DISPATCH_ONLY.
    #[serde(default)]
    pub(super) allow_dispatch_only: bool,
    /// Per-app rule actions over the global ones.
    #[serde(default)]
    pub(super) rules: BTreeMap<String, String>,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    /// "forward" (fail open) or "reject" (fail closed) when an app's mode cannot be learned.
    #[serde(default = "default_unknown_mode")]
    pub(super) unknown_mode: String,
    /// "keep", "CONVERSATION" or "DISPATCH": pin processing_mode on app create when absent.
    #[serde(default = "default_keep")]
    pub(super) create_app_default_mode: String,
    /// "forward" or "reject": a canonical path under /v1/projects/ that names no known operation.
    #[serde(default = "default_forward")]
    pub(super) unrecognized_route: String,
    /// "off" or "DISPATCH": evaluate DISPATCH rules in shadow on CONVERSATION apps.
    #[serde(default = "default_off")]
    pub(super) what_if_mode: String,
    /// Organisation cap on any retention ttl_days.
    #[serde(default = "default_max_ttl")]
    pub(super) max_ttl_days: u64,
    /// Global rule actions.
    #[serde(default)]
    pub(super) rules: BTreeMap<String, String>,
    /// Per-app overrides and static modes.
    #[serde(default)]
    pub(super) app: Vec<toml::Value>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    /// "text" or "json".
    #[serde(default = "default_log_format")]
    pub(super) format: String,
    /// Default level filter (RUST_LOG overrides it).
    #[serde(default = "default_log_level")]
    pub(super) level: String,
    /// One info line per request (target modegate::access).
    #[serde(default)]
    pub(super) access_log: bool,
}

pub(super) fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
pub(super) fn default_admin_listen() -> String {
    "0.0.0.0:9090".into()
}
pub(super) fn default_grace() -> u64 {
    20
}
pub(super) fn default_max_body() -> u64 {
    1_048_576
}
pub(super) fn default_max_batch_body() -> u64 {
    8_388_608
}
pub(super) fn default_http1_engine() -> String {
    "hyper".to_string()
}

pub(super) fn default_header_read_timeout() -> u64 {
    10
}
pub(super) fn default_max_connections() -> u64 {
    10_000
}
pub(super) fn default_h2_streams() -> u64 {
    256
}
pub(super) fn default_base_url() -> String {
    "https://us.conversation.api.sinch.com".into()
}
pub(super) fn default_connect_timeout() -> u64 {
    2_000
}
pub(super) fn default_request_timeout() -> u64 {
    30_000
}
pub(super) fn default_pool_idle() -> u64 {
    512
}
pub(super) fn default_tls_roots() -> String {
    "webpki".into()
}
pub(super) fn default_auth_mode() -> String {
    "passthrough".into()
}
pub(super) fn default_key_id_env() -> String {
    "SINCH_KEY_ID".into()
}
pub(super) fn default_key_secret_env() -> String {
    "SINCH_KEY_SECRET".into()
}
pub(super) fn default_ttl() -> u64 {
    300
}
pub(super) fn default_stale() -> u64 {
    3_600
}
pub(super) fn default_body_idle_timeout() -> u64 {
    30
}
pub(super) fn default_max_messages() -> u64 {
    100_000
}
pub(super) fn default_message_ttl() -> u64 {
    604_800
}
pub(super) fn default_max_apps() -> u64 {
    100_000
}
pub(super) fn default_unknown_mode() -> String {
    "forward".into()
}
pub(super) fn default_forward() -> String {
    "forward".into()
}
pub(super) fn default_keep() -> String {
    "keep".into()
}
pub(super) fn default_off() -> String {
    "off".into()
}
pub(super) fn default_max_ttl() -> u64 {
    3_650
}
pub(super) fn default_log_format() -> String {
    "text".into()
}
pub(super) fn default_log_level() -> String {
    "info".into()
}
