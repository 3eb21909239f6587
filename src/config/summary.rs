//! The one-screen summary `check-config` prints.

use super::*;
use crate::policy::RuleId;

impl Config {
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
        line(format!(
            "listener tls    {}",
            self.server.tls.as_ref().map_or_else(
                || "off (plain HTTP/1.1 and h2c)".to_string(),
                |t| format!(
                    "cert {}, key {} (ALPN h2, http/1.1; re-read on reload)",
                    t.cert_file.display(),
                    t.key_file.display()
                )
            )
        ));
        line(format!("upstream        {upstream}"));
        line(format!(
            "batch listen    {}",
            self.server.batch_listen.map_or_else(
                || "off".to_string(),
                |a| format!(
                    "{a} → {} (bodies up to {} bytes)",
                    self.upstream
                        .batch_base_url
                        .as_ref()
                        .map_or_else(|| "embedded simulator".to_string(), ToString::to_string),
                    self.server.max_batch_body_bytes
                )
            )
        ));
        line(format!(
            "upstream trust  {}{}",
            match self.upstream.tls_roots {
                TlsRoots::Webpki => "webpki (bundled roots)",
                TlsRoots::System => "system store",
            },
            self.upstream
                .ca_file
                .as_ref()
                .map_or_else(String::new, |p| format!(" + {}", p.display()))
        ));
        line(format!(
            "egress proxy    {}",
            match &self.upstream.proxy {
                ProxySetting::Environment => "from HTTPS_PROXY / NO_PROXY when set".to_string(),
                ProxySetting::Disabled => "none".to_string(),
                ProxySetting::Url(u) => u.authority().map_or_else(String::new, |a| a.to_string()),
            }
        ));
        line(format!(
            "timeouts        connect {:?}, request {:?}, header read {:?}, body idle {:?}, shutdown grace {:?}",
            self.upstream.connect_timeout,
            self.upstream.request_timeout,
            self.server.header_read_timeout,
            self.server.body_idle_timeout,
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
            "mode cache      ttl {:?}, stale-if-error {:?}, max {} apps, {} message ids for {:?}",
            self.mode_cache.ttl,
            self.mode_cache.stale_if_error,
            self.mode_cache.max_apps,
            self.mode_cache.max_messages,
            self.mode_cache.message_ttl
        ));
        line(format!(
            "shared cache    {}",
            self.mode_cache.redis_url_env.as_ref().map_or_else(
                || "none (each replica learns modes on its own)".to_string(),
                |name| format!(
                    "Redis at the URL in ${name} (modes shared, invalidations published)"
                )
            )
        ));
        line(format!(
            "policy          unknown_mode {}, unrecognized_route {}, create_app_default_mode {}, what_if {}, max_ttl_days {}",
            match self.policy.unknown_mode {
                UnknownMode::Forward => "forward",
                UnknownMode::Reject => "reject",
            },
            if self.policy.reject_unrecognized_routes { "reject" } else { "forward" },
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
            for rule in RuleId::ALL {
                let (global, own) = (self.policy.rules.action(*rule), app.rules.action(*rule));
                if global != own {
                    line(format!(
                        "    {:<38} {own} (global: {global})",
                        rule.as_str()
                    ));
                }
            }
        }
        line(format!(
            "callbacks       {}",
            self.callbacks.listen.map_or_else(
                || "off (no callback listener)".to_string(),
                |a| format!("listen {a}, {} webhook(s)", self.callbacks.webhooks.len())
            )
        ));
        for w in &self.callbacks.webhooks {
            line(format!(
                "  {} -> {} ({}, max skew {:?}, fill ids {}, timeout {:?})",
                w.path,
                w.target,
                w.secret_env.as_ref().map_or_else(
                    || "unsigned: passed byte for byte".to_string(),
                    |n| format!("verified and re-signed with ${n}")
                ),
                w.max_skew,
                match w.fill_ids {
                    FillIds::Off => "off",
                    FillIds::Pseudo => "pseudo",
                },
                w.timeout
            ));
        }
        line(format!(
            "log             format {}, level {}, access_log {}",
            match self.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            self.log.level,
            self.log.access_log
        ));
        out
    }
}
