//! `[callbacks]` and `[[callbacks.webhook]]`: the raw keys and their validation into
//! [`CallbackSettings`].

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::values::{http_url, range, socket_addr};
use super::Problems;

/// `[callbacks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallbacks {
    /// Callback listener (HTTP/1.1 and h2c, TLS with `server.tls_*`); unset: none.
    pub(super) listen: Option<String>,
    /// Environment variable with the pseudo-id keys (64 hex characters each, comma-separated;
    /// minted with the first, resolved with any).
    pub(super) id_key_env: Option<String>,
    /// Where Sinch posts, and where each callback goes.
    #[serde(default)]
    pub(super) webhook: Vec<RawWebhook>,
}

/// One `[[callbacks.webhook]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    /// The path Sinch posts to (the app's webhook target points here).
    pub(super) path: String,
    /// The consumer each callback is forwarded to (http:// or https:// URL).
    pub(super) target: String,
    /// Environment variable with the webhook secret(s): verify with any, sign with the first.
    pub(super) secret_env: Option<String>,
    /// Seconds a signed callback's timestamp may be off from now.
    #[serde(default = "default_skew")]
    pub(super) max_skew_secs: u64,
    /// "off" or "pseudo": fill empty ids of DISPATCH callbacks with pseudo ids.
    #[serde(default = "default_fill")]
    pub(super) fill_ids: String,
    /// Milliseconds the target has to answer, else 504.
    #[serde(default = "default_timeout")]
    pub(super) timeout_ms: u64,
}

fn default_skew() -> u64 {
    300
}
fn default_fill() -> String {
    "off".into()
}
fn default_timeout() -> u64 {
    10_000
}

/// `[callbacks]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackSettings {
    /// The callback listener (`None`: no listener).
    pub listen: Option<SocketAddr>,
    /// Environment variable with the pseudo-id keys.
    pub id_key_env: Option<String>,
    /// Webhooks by path.
    pub webhooks: Vec<WebhookSettings>,
}

/// Whether empty ids of DISPATCH callbacks are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillIds {
    /// Callbacks keep their ids as sent.
    Off,
    /// Empty `contact_id` / `conversation_id` become pseudo ids.
    Pseudo,
}

/// One `[[callbacks.webhook]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Path served.
    pub path: String,
    /// Consumer URL.
    pub target: Uri,
    /// Environment variable with the secret(s) (`None`: callbacks pass unverified).
    pub secret_env: Option<String>,
    /// Timestamp window.
    pub max_skew: Duration,
    /// Pseudo ids.
    pub fill_ids: FillIds,
    /// Target answer deadline.
    pub timeout: Duration,
}

/// Whether `name` can name an environment variable.
pub(super) fn env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
}

/// Validates `[callbacks]`, collecting every problem.
pub(super) fn callbacks(raw: RawCallbacks, problems: &mut Problems) -> CallbackSettings {
    let listen = raw
        .listen
        .as_deref()
        .and_then(|l| socket_addr("callbacks.listen", l, problems));
    let env_problem = "must name an environment variable (letters, digits and _, not starting with a digit); the secret itself never goes in the file";
    if let Some(name) = &raw.id_key_env {
        if !env_name(name) {
            problems.add("callbacks.id_key_env", env_problem);
        }
    }
    if raw.listen.is_some() && raw.webhook.is_empty() {
        problems.add(
            "callbacks.listen",
            "no [[callbacks.webhook]] is configured: add one with path and target, or remove listen",
        );
    }
    if raw.listen.is_none() && !raw.webhook.is_empty() {
        problems.add(
            "callbacks.webhook",
            "webhooks need a callback listener: set callbacks.listen",
        );
    }
    let mut webhooks: Vec<WebhookSettings> = Vec::new();
    for (i, w) in raw.webhook.into_iter().enumerate() {
        let key = |field: &str| format!("callbacks.webhook[{i}].{field}");
        if !w.path.starts_with('/') || w.path.contains(['?', '#']) || w.path.parse::<Uri>().is_err()
        {
            problems.add(
                key("path"),
                format!(
                    "{:?} must be an absolute path such as /sinch/events",
                    w.path
                ),
            );
        } else if webhooks.iter().any(|o| o.path == w.path) {
            problems.add(key("path"), format!("{:?} is listed twice", w.path));
        }
        let target = http_url(&key("target"), &w.target, problems);
        if let Some(name) = &w.secret_env {
            if !env_name(name) {
                problems.add(key("secret_env"), env_problem);
            }
        }
        let fill_ids = match w.fill_ids.as_str() {
            "off" => FillIds::Off,
            "pseudo" => {
                if raw.id_key_env.is_none() {
                    problems.add(
                        key("fill_ids"),
                        "\"pseudo\" needs callbacks.id_key_env (the keys pseudo ids are sealed with)",
                    );
                }
                FillIds::Pseudo
            }
            other => {
                problems.add(
                    key("fill_ids"),
                    format!("{other:?} is not one of off, pseudo"),
                );
                FillIds::Off
            }
        };
        webhooks.push(WebhookSettings {
            max_skew: Duration::from_secs(range(
                &key("max_skew_secs"),
                w.max_skew_secs,
                1,
                86_400,
                problems,
            )),
            timeout: Duration::from_millis(range(
                &key("timeout_ms"),
                w.timeout_ms,
                1,
                600_000,
                problems,
            )),
            path: w.path,
            target: target.unwrap_or_else(|| Uri::from_static("http://invalid")),
            secret_env: w.secret_env,
            fill_ids,
        });
    }
    CallbackSettings {
        listen,
        id_key_env: raw.id_key_env,
        webhooks,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, FillIds};

    fn problems(text: &str) -> Vec<(String, String)> {
        Config::parse(text, Path::new("t.toml"))
            .expect_err("rejected")
            .problems
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn a_full_section_is_read_with_its_defaults() {
        let c = Config::parse(
            "[callbacks]\nlisten = \"127.0.0.1:8082\"\nid_key_env = \"MODEGATE_ID_KEY\"\n\
             [[callbacks.webhook]]\npath = \"/sinch/events\"\ntarget = \"http://127.0.0.1:3000/e\"\n\
             [[callbacks.webhook]]\npath = \"/b\"\ntarget = \"https://c.example/b\"\nsecret_env = \"S\"\n\
             fill_ids = \"pseudo\"\nmax_skew_secs = 60\ntimeout_ms = 500\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        let cb = &c.callbacks;
        assert_eq!(cb.listen, Some("127.0.0.1:8082".parse().expect("addr")));
        let a = &cb.webhooks[0];
        assert_eq!(
            (a.max_skew.as_secs(), a.timeout.as_millis(), a.fill_ids),
            (300, 10_000, FillIds::Off)
        );
        assert_eq!(a.secret_env, None);
        let b = &cb.webhooks[1];
        assert_eq!(
            (b.max_skew.as_secs(), b.timeout.as_millis(), b.fill_ids),
            (60, 500, FillIds::Pseudo)
        );
        assert!(Config::parse("", Path::new("t.toml"))
            .expect("defaults")
            .callbacks
            .listen
            .is_none());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let p = problems(
            "[callbacks]\nlisten = \"nope\"\nid_key_env = \"1BAD\"\n\
             [[callbacks.webhook]]\npath = \"relative\"\ntarget = \"ftp://x\"\nsecret_env = \"a b\"\n\
             fill_ids = \"maybe\"\nmax_skew_secs = 0\ntimeout_ms = 0\ncolour = 1\n\
             [[callbacks.webhook]]\npath = \"/a\"\ntarget = \"http://t\"\n\
             [[callbacks.webhook]]\npath = \"/a\"\ntarget = \"http://t\"\n",
        );
        for key in [
            "callbacks.listen",
            "callbacks.id_key_env",
            "callbacks.webhook[0].path",
            "callbacks.webhook[0].target",
            "callbacks.webhook[0].secret_env",
            "callbacks.webhook[0].fill_ids",
            "callbacks.webhook[0].max_skew_secs",
            "callbacks.webhook[0].timeout_ms",
            "callbacks.webhook[0].colour",
            "callbacks.webhook[2].path",
        ] {
            assert!(p.iter().any(|(k, _)| k == key), "{key} missing from {p:?}");
        }
    }

    #[test]
    fn pseudo_needs_keys_and_webhooks_need_a_listener() {
        let p = problems(
            "[[callbacks.webhook]]\npath = \"/a\"\ntarget = \"http://t\"\nfill_ids = \"pseudo\"\n",
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "callbacks.webhook" && m.contains("listen")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "callbacks.webhook[0].fill_ids" && m.contains("id_key_env")),
            "{p:?}"
        );
        let p = problems("[callbacks]\nlisten = \"127.0.0.1:0\"\n");
        assert!(p.iter().any(|(k, _)| k == "callbacks.listen"), "{p:?}");
    }
}
