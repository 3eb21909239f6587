//! The `demo` command's instructions: ready-to-paste curl commands against the running demo.

use std::net::SocketAddr;

/// The demo project, app ids and key, as seeded by `config/demo-seed.toml`.
pub const PROJECT: &str = "demo-project";
/// An app created before 2025-04-16 without a mode: CONVERSATION.
pub const LEGACY_APP: &str = "legacy-app";
/// An app created after 2025-04-16 without a mode: DISPATCH.
pub const NEW_APP: &str = "new-app";
/// Demo access key (id:secret), accepted as Basic auth by the simulator.
pub const KEY: &str = "demo-key:demo-secret";

/// The text `modegate demo` prints once it is listening.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr) -> String {
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

6. What the gateway decided, as metrics
   curl -s http://{admin}/metrics | grep '^modegate_requests_total'

7. The migration report: what would break if {LEGACY_APP} were a DISPATCH app
   curl -s http://{admin}/report/migration
   cargo run --release -- report --admin http://{admin}

Press Ctrl-C to stop.
"#
    )
}
