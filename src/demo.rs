//! The `demo` command: its built-in config and seed (so it runs from any directory, in a
//! container or as an installed binary), and the ready-to-paste curl commands it prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::simulator::seed::BUILT_IN_DIR;

/// The demo's config (`config/demo.toml`), built in: `modegate demo` reads no file unless
/// `--config` names one. Its `upstream.embedded_seed`, relative as in the file, resolves to the
/// built-in copy of `config/demo-seed.toml` (see [`BUILT_IN_DIR`]).
pub const CONFIG: &str = include_str!("../config/demo.toml");

/// The name the built-in config goes by (in messages, and for its relative paths).
pub fn built_in_path() -> PathBuf {
    Path::new(BUILT_IN_DIR).join("demo.toml")
}

/// The built-in config, validated.
pub fn built_in_config() -> Result<Config, ConfigError> {
    Config::parse(CONFIG, &built_in_path())
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
    use crate::config::UpstreamTarget;
    use crate::simulator::Seed;

    #[test]
    fn the_built_in_config_reads_only_built_in_files() {
        let config = built_in_config().expect("the built-in config is valid");
        let UpstreamTarget::Embedded { seed: Some(seed) } = &config.upstream.target else {
            panic!("the demo runs the embedded simulator with its seed");
        };
        assert_eq!(seed, &Path::new(BUILT_IN_DIR).join("demo-seed.toml"));
        let seed = Seed::load(seed).expect("the built-in seed");
        assert!(seed.projects.iter().any(|p| p.id == PROJECT), "{seed:?}");
        assert!(config.server.tls.is_none());
        assert!(config.upstream.ca_file.is_none());
        // Nothing else is built in, and a real file of that name is never read instead.
        let other = Path::new(BUILT_IN_DIR).join("other.toml");
        assert!(Seed::load(&other)
            .expect_err("no such built-in")
            .contains("no such built-in seed"));
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
