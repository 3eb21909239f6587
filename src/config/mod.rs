//! Configuration: raw TOML structs (`deny_unknown_fields`, a `///` on every key) validated into
//! typed runtime settings before any port is bound.
//!
//! Each top-level section is deserialised on its own so that one typo does not hide the
//! problems of the other sections, and semantic checks collect every problem before failing.
//! A misspelt rule id or action is an error, never a silently open policy.
//!
//! - [`raw`]: the file's shape (serde structs, defaults);
//! - [`typed`]: one table into its raw struct, every problem under its full key path;
//! - [`validate`]: raw → runtime settings, every problem collected with its key;
//! - [`summary`]: the one-screen text `check-config` prints.

pub use crate::tls::TlsRoots;
pub use callbacks::{CallbackSettings, FillIds, WebhookSettings};

mod batch;
mod callbacks;
mod raw;
mod summary;
pub mod transport;
mod typed;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use crate::policy::{ProcessingMode, RuleSet};

/// Default config path of `serve` and `check-config`.
pub const DEFAULT_CONFIG_PATH: &str = "config/modegate.toml";
/// The token endpoint used when `[auth] token_url` is not set.
pub const DEFAULT_TOKEN_URL: &str = "https://auth.sinch.com/oauth2/token";

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
    /// `[callbacks]`.
    pub callbacks: CallbackSettings,
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
    /// Request-head read timeout (also the first-byte deadline of a new connection).
    pub header_read_timeout: Duration,
    /// How long a body may make no progress before it is abandoned.
    pub body_idle_timeout: Duration,
    /// Concurrent connection cap.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// TLS on the proxy listener.
    pub tls: Option<ListenerTls>,
    /// Batch API listener (`None`: off).
    pub batch_listen: Option<SocketAddr>,
    /// Body buffering limit on the Batch listener.
    pub max_batch_body_bytes: usize,
    /// The HTTP/1.1 engine of the proxy listeners (`server.http1_engine`).
    pub http1_engine: Http1Engine,
}

/// Which HTTP/1.1 implementation serves the proxy listeners (Conversation, Batch, callbacks).
/// h2, TLS, the admin listener and the simulator are served by hyper whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Http1Engine {
    /// hyper's HTTP/1.1 server.
    #[default]
    Hyper,
    /// modegate's own HTTP/1.1 server (`server::h1`).
    Native,
}

/// The proxy listener's certificate files (re-read on every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Whether upstream connections go through an HTTP proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySetting {
    /// `HTTPS_PROXY` / `https_proxy` for https upstreams, minus `NO_PROXY` / `no_proxy`.
    Environment,
    /// Direct connections whatever the environment says (`proxy_url = "none"`).
    Disabled,
    /// This proxy for every upstream connection (a CONNECT tunnel).
    Url(Uri),
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
    /// Trust anchors for https upstreams.
    pub tls_roots: TlsRoots,
    /// Extra PEM trust anchors.
    pub ca_file: Option<PathBuf>,
    /// Egress proxy.
    pub proxy: ProxySetting,
    /// The Batch API origin: explicit, or the Batch origin of the base URL's region; `None`
    /// when neither (with `base_url = "embedded"`: the embedded simulator's).
    pub batch_base_url: Option<Uri>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeCacheSettings {
    /// Trust period; zero disables caching.
    pub ttl: Duration,
    /// Stale-if-error window.
    pub stale_if_error: Duration,
    /// Capacity.
    pub max_apps: u64,
    /// Message ids remembered (0: the message index is off).
    pub max_messages: u64,
    /// How long a remembered message id is kept.
    pub message_ttl: Duration,
    /// Environment variable holding the Redis URL replicas share modes through (`None`: each
    /// replica keeps its own).
    pub redis_url_env: Option<String>,
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
    /// Refuse (404) canonical paths under `/v1/projects/` that name no known operation.
    pub reject_unrecognized_routes: bool,
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

/// Every problem found so far.
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
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

/// Every problem, grouped by section in the order the sections are documented (stable within
/// one).
fn sorted(path: &Path, mut problems: Vec<Problem>) -> ConfigError {
    problems.sort_by_key(|p| {
        let section = p.key.split(['.', '[']).next().unwrap_or("");
        validate::SECTIONS
            .iter()
            .position(|s| *s == section)
            .unwrap_or(validate::SECTIONS.len())
    });
    ConfigError {
        path: path.to_path_buf(),
        problems,
    }
}

/// The text of a config file, or the error that names it.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Config::parse(&text, path)
    }

    /// Validates TOML text; `path` is only used in messages (and to resolve relative seed paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = validate::read(text, path)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(sorted(path, problems))
        }
    }

    /// What `check-config` runs: reads and validates a file, then applies `start_checks` (what
    /// `serve` would fail on at start) to the config as far as it could be read, so one run
    /// reports schema and start-time problems together. A key the file already has a problem
    /// with is not reported twice.
    pub fn check(
        path: &Path,
        start_checks: impl FnOnce(&Config) -> Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        let (config, mut problems) = validate::read(&text, path)?;
        for p in start_checks(&config) {
            if !problems.iter().any(|q| q.key == p.key) {
                problems.push(p);
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(sorted(path, problems))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, RuleId};

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
        assert_eq!(c.mode_cache.max_messages, 100_000);
        assert_eq!(c.mode_cache.message_ttl, Duration::from_secs(604_800));
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
        assert!(
            has(&p, "server.lisen", "unknown key (expected listen,"),
            "{p:?}"
        );
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
        let p = problems("[mode_cache]\nttl_secs = \"five\"\nmax_apps = 5\n");
        assert!(
            has(
                &p,
                "mode_cache.ttl_secs",
                "expected a non-negative integer, found the string \"five\""
            ),
            "{p:?}"
        );
        assert_eq!(p.len(), 1, "the rest of the section still applies: {p:?}");
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

    #[test]
    fn request_rules_take_only_what_they_mean() {
        let p = problems("[policy.rules]\n\"request.canonical\" = \"off\"\n");
        assert!(
            has(
                &p,
                "policy.rules.\"request.canonical\"",
                "enforce or shadow"
            ),
            "{p:?}"
        );
        let p = problems("[policy.rules]\n\"request.unrecognized_route\" = \"enforce\"\n");
        assert!(
            has(
                &p,
                "policy.rules.\"request.unrecognized_route\"",
                "policy.unrecognized_route"
            ),
            "{p:?}"
        );
        let p = problems("[policy]\nunrecognized_route = \"maybe\"\n");
        assert!(
            has(&p, "policy.unrecognized_route", "forward, reject"),
            "{p:?}"
        );
        let c = parse("[policy]\nunrecognized_route = \"reject\"\n[policy.rules]\n\"request.canonical\" = \"shadow\"\n")
            .expect("valid");
        assert!(c.policy.reject_unrecognized_routes);
        assert_eq!(
            c.policy.rules.action(RuleId::UnrecognizedRoute),
            Action::Enforce
        );
        assert_eq!(c.policy.rules.action(RuleId::Canonical), Action::Shadow);
        let c = parse("").expect("defaults");
        assert!(!c.policy.reject_unrecognized_routes);
        assert_eq!(c.policy.rules.action(RuleId::Canonical), Action::Enforce);
    }
}
