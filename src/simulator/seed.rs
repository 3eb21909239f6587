//! The simulator's seed file: projects, apps (mode, retention, creation date), contacts,
//! credentials, and fault knobs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;

/// The folder built-in files are read from: no file system has it, so a config compiled into
/// the binary (`modegate demo` without `--config`, named `<built-in>/demo.toml`) resolves its
/// relative paths there, and nothing is read from the working directory.
pub const BUILT_IN_DIR: &str = "<built-in>";

/// The built-in seeds, by file name under [`BUILT_IN_DIR`].
const BUILT_IN_SEEDS: [(&str, &str); 1] = [(
    "demo-seed.toml",
    include_str!("../../config/demo-seed.toml"),
)];

/// A whole seed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Lifetime of issued access tokens (`expires_in`); default 3600.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// Access keys accepted by the token endpoint and by Basic auth.
    #[serde(default)]
    pub credentials: Vec<SeedCredential>,
    /// Projects and what they hold.
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    /// Fault injection.
    #[serde(default)]
    pub faults: Faults,
    /// How callbacks are delivered.
    #[serde(default)]
    pub callbacks: CallbackKnobs,
}

/// Callback delivery knobs (`[callbacks]` in a seed).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackKnobs {
    /// Retries after a 5xx, 429, timeout or connection failure (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Pause before the first retry, doubling after each (default 5000).
    #[serde(default = "default_retry_first")]
    pub retry_first_ms: u64,
    /// Time a webhook target has to answer (default 10000).
    #[serde(default = "default_callback_timeout")]
    pub timeout_ms: u64,
}

impl Default for CallbackKnobs {
    fn default() -> Self {
        CallbackKnobs {
            retries: default_retries(),
            retry_first_ms: default_retry_first(),
            timeout_ms: default_callback_timeout(),
        }
    }
}

fn default_retries() -> u32 {
    3
}
fn default_retry_first() -> u64 {
    5_000
}
fn default_callback_timeout() -> u64 {
    10_000
}

fn default_token_ttl() -> u64 {
    3_600
}

/// One access key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCredential {
    /// Key id (the Basic user name).
    pub key_id: String,
    /// Key secret.
    pub key_secret: String,
    /// Projects this key may use; empty means all.
    #[serde(default)]
    pub projects: Vec<String>,
}

/// One project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    /// Project id.
    pub id: String,
    /// Apps.
    #[serde(default)]
    pub apps: Vec<SeedApp>,
    /// Contacts (project-level).
    #[serde(default)]
    pub contacts: Vec<SeedContact>,
    /// Webhooks, as `POST /webhooks` would create them.
    #[serde(default)]
    pub webhooks: Vec<SeedWebhook>,
}

/// One webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedWebhook {
    /// The app whose callbacks it receives.
    pub app_id: String,
    /// Where callbacks are POSTed.
    pub target: String,
    /// Triggers (default MESSAGE_INBOUND, MESSAGE_DELIVERY, MESSAGE_SUBMIT).
    #[serde(default = "default_triggers")]
    pub triggers: Vec<String>,
    /// Signing secret: callbacks are signed when set.
    #[serde(default)]
    pub secret: Option<String>,
}

fn default_triggers() -> Vec<String> {
    ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "MESSAGE_SUBMIT"]
        .map(String::from)
        .to_vec()
}

/// One app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApp {
    /// App id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Explicit mode; absent means the creation-date default.
    #[serde(default)]
    pub processing_mode: Option<String>,
    /// RFC 3339 creation time; absent means now.
    #[serde(default)]
    pub created: Option<String>,
    /// CONVERSATION retention.
    #[serde(default)]
    pub retention_policy: Option<toml::Value>,
    /// DISPATCH retention.
    #[serde(default)]
    pub dispatch_retention_policy: Option<toml::Value>,
    /// Channels configured on the app (default SMS).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
}

/// One contact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedContact {
    /// Contact id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Identities.
    #[serde(default)]
    pub channel_identities: Vec<SeedIdentity>,
}

/// One channel identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedIdentity {
    /// Channel, e.g. SMS.
    pub channel: String,
    /// Identity on it, e.g. a phone number.
    pub identity: String,
}

/// Fault knobs, global and per operation (operation names as in metrics).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Defaults for every operation.
    #[serde(flatten)]
    pub all: FaultKnobs,
    /// Per-operation knobs, replacing the defaults for that operation.
    #[serde(default)]
    pub operations: BTreeMap<String, FaultKnobs>,
}

/// One set of fault knobs.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultKnobs {
    /// Added latency before answering.
    #[serde(default)]
    pub latency_ms: u64,
    /// Fraction (0..=1) of requests answered with `failure_status`, spread evenly.
    #[serde(default)]
    pub failure_ratio: f64,
    /// Status for failures (default 503).
    #[serde(default)]
    pub failure_status: Option<u16>,
    /// Fraction (0..=1) of requests answered 429 with `Retry-After: 1`.
    #[serde(default)]
    pub rate_limit_ratio: f64,
}

impl Seed {
    /// Reads a seed file.
    pub fn load(path: &Path) -> Result<Seed, String> {
        let text = match path.strip_prefix(BUILT_IN_DIR) {
            Ok(name) => BUILT_IN_SEEDS
                .iter()
                .find(|(file, _)| Path::new(file) == name)
                .map(|(_, text)| text.to_string())
                .ok_or_else(|| format!("{}: no such built-in seed", path.display()))?,
            Err(_) => std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read the seed: {e}", path.display()))?,
        };
        Seed::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks seed text.
    pub fn parse(text: &str) -> Result<Seed, String> {
        let seed: Seed = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
        let mut problems = Vec::new();
        for (name, knobs) in std::iter::once(("faults", &seed.faults.all))
            .chain(seed.faults.operations.iter().map(|(k, v)| (k.as_str(), v)))
        {
            for (what, ratio) in [
                ("failure_ratio", knobs.failure_ratio),
                ("rate_limit_ratio", knobs.rate_limit_ratio),
            ] {
                if !(0.0..=1.0).contains(&ratio) {
                    problems.push(format!("{name}.{what}: {ratio} is not within 0..=1"));
                }
            }
            if let Some(s) = knobs.failure_status {
                if !(400..=599).contains(&s) {
                    problems.push(format!("{name}.failure_status: {s} is not an error status"));
                }
            }
        }
        for name in seed.faults.operations.keys() {
            let known = crate::domain::Operation::ALL
                .iter()
                .any(|op| op.as_str() == name);
            if !known {
                problems.push(format!("faults.operations.{name}: unknown operation"));
            }
        }
        for p in &seed.projects {
            for a in &p.apps {
                if let Some(c) = &a.created {
                    if humantime::parse_rfc3339_weak(c).is_err() {
                        problems.push(format!(
                            "projects.{}.apps.{}.created: {c:?} is not an RFC 3339 time",
                            p.id, a.id
                        ));
                    }
                }
                if let Some(m) = &a.processing_mode {
                    if m.parse::<crate::policy::ProcessingMode>().is_err() {
                        problems.push(format!(
                            "projects.{}.apps.{}.processing_mode: {m:?} is not CONVERSATION or DISPATCH",
                            p.id, a.id
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(seed)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Parses an RFC 3339 time (as in seeds) into a `SystemTime`.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}
