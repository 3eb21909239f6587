//! The `demo` command: its built-in config and seed (so it runs from any directory, in a
//! container or as an installed binary), and the ready-to-paste curl commands it prints.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, ConfigError, UpstreamTarget};
use crate::simulator::Seed;

/// The demo's config (`config/demo.toml`), built in: `modegate demo` reads no file unless
/// `--config` names one.
pub const CONFIG: &str = include_str!("../config/demo.toml");
/// The demo's seed (`config/demo-seed.toml`, the built-in config's `upstream.embedded_seed`).
pub const SEED: &str = include_str!("../config/demo-seed.toml");
/// How messages name the built-in config.
pub const BUILT_IN: &str = "<built-in config/demo.toml>";

/// The built-in config, validated. Its one file reference, `upstream.embedded_seed`, is
/// [`SEED`]: see [`built_in_seed`] and [`with_simulator`].
pub fn built_in_config() -> Result<Config, ConfigError> {
    Config::parse(CONFIG, Path::new(BUILT_IN))
}

/// The built-in seed.
pub fn built_in_seed() -> Result<Seed, String> {
    Seed::parse(SEED)
}

/// `config` with its embedded simulator replaced by one already listening on `simulator` (the
/// built-in seed's), so nothing is read from the working directory.
pub fn with_simulator(mut config: Config, simulator: SocketAddr) -> Config {
    config.upstream.target = UpstreamTarget::Url(
        format!("http://{simulator}")
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1")),
    );
    if config.auth.token_url.is_none() {
        config.auth.token_url = format!("http://{simulator}/oauth2/token").parse().ok();
    }
    config
}

/// The demo project, app ids and key, as seeded by `config/demo-seed.toml`.
pub const PROJECT: &str = "demo-project";
/// An app created before 2025-04-16 without a mode: CONVERSATION.
pub const LEGACY_APP: &str = "legacy-app";
/// An app created after 2025-04-16 without a mode: DISPATCH.
pub const NEW_APP: &str = "new-app";
/// Demo access key (id:secret), accepted as Basic auth by the simulator.
pub const KEY: &str = "demo-key:demo-secret";

/// The text `modegate demo` prints once it is listening; `program` is how the binary was run.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr, program: &str) -> String {
    let base = format!("http://{proxy}/v1/projects/{PROJECT}");
    format!(
        r#"
modegate demo is running: gateway http://{proxy}, admin http://{admin}, upstream = built-in simulator.
Project {PROJECT}: app {LEGACY_APP} (created 2024, CONVERSATION) and app {NEW_APP} (created 2025-05, DISPATCH).

1. Forward: look up the DISPATCH app (answer comes from the simulator, x-modegate-decision: forwarded)
   curl -si -u {KEY} {base}/apps/{NEW_APP}

2. Reject: list messages of the DISPATCH app by contact_id (answered by the gateway, no upstream call)
   curl -si -u {KEY} '{base}/messages?app_id={NEW_APP}&contact_id=alice'

3. Rewrite: list messages of the DISPATCH app without messages_source (gateway adds DISPATCH_SOURCE)
   curl -si -u {KEY} '{base}/messages?app_id={NEW_APP}'

4. Send to the DISPATCH app with identified_by (forwarded and accepted)
   curl -si -u {KEY} -H 'content-type: application/json' {base}/messages:send \
     -d '{{"app_id":"{NEW_APP}","recipient":{{"identified_by":{{"channel_identities":[{{"channel":"SMS","identity":"+15550100"}}]}}}},"message":{{"text_message":{{"text":"hello"}}}}}}'

5. A legacy client on the CONVERSATION app lists by contact: fine today (forwarded), and
   recorded as a blocker for a move to DISPATCH
   curl -si -u {KEY} '{base}/messages?app_id={LEGACY_APP}&contact_id=alice'

6. What the gateway decided, as metrics (the counters that moved)
   curl -s http://{admin}/metrics | grep -E '^modegate_(requests|policy_decisions|migration_blockers)_total' | grep -v ' 0$'

7. The migration report: what DISPATCH mode would refuse or rewrite for {LEGACY_APP}, per request and per rule
   curl -s http://{admin}/report/migration
   {program} report --admin http://{admin}

Press Ctrl-C to stop.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_config_names_no_file_but_its_seed() {
        let config = built_in_config().expect("the built-in config is valid");
        match &config.upstream.target {
            UpstreamTarget::Embedded { seed: Some(seed) } => {
                assert_eq!(
                    seed.file_name().and_then(|n| n.to_str()),
                    Some("demo-seed.toml")
                );
            }
            other => panic!("the demo runs the embedded simulator, not {other:?}"),
        }
        assert!(config.server.tls.is_none());
        assert!(config.upstream.ca_file.is_none());
        let seed = built_in_seed().expect("the built-in seed is valid");
        assert!(seed.projects.iter().any(|p| p.id == PROJECT), "{seed:?}");
    }

    #[test]
    fn the_simulator_replaces_the_embedded_target() {
        let addr: SocketAddr = "127.0.0.1:3999".parse().expect("addr");
        let config = with_simulator(built_in_config().expect("config"), addr);
        assert_eq!(
            config.upstream.target,
            UpstreamTarget::Url(http::Uri::from_static("http://127.0.0.1:3999"))
        );
        assert_eq!(
            config.auth.token_url.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:3999/oauth2/token")
        );
    }

    #[test]
    fn the_metrics_step_shows_only_counters_that_moved() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let text = instructions(addr, addr, "modegate");
        assert!(text.contains("grep -v ' 0$'"), "{text}");
        assert!(
            text.contains("modegate report --admin http://127.0.0.1:9"),
            "{text}"
        );
    }
}
