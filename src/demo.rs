//! The `demo` command: its built-in config and seed (so it runs from any directory, in a
//! container or as an installed binary), and the ready-to-paste curl commands it prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;

use crate::callbacks::consumer::Consumer;
use crate::config::{Config, ConfigError};
use crate::pseudo_ids::PseudoIds;
use crate::server::{self, ConnectionInfo, ConnectionSettings};
use crate::simulator::seed::BUILT_IN_DIR;
use crate::simulator::Simulator;

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

/// The demo's built-in callback consumer, on its socket.
#[derive(Debug)]
pub struct DemoConsumer {
    /// What it received.
    pub consumer: Arc<Consumer>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The webhook (path) now pointed at it, and its target.
    pub webhook: (String, Uri),
}

/// Starts the built-in callback consumer where the config's first webhook points (an `http`
/// URL with a literal IP; on an ephemeral port of that IP instead when `ephemeral`), and points
/// the webhook at it. `None` when the config has no callback listener, no webhook, or a webhook
/// that points elsewhere. The consumer serves until the process ends.
pub async fn start_consumer(
    config: &mut Config,
    ephemeral: bool,
) -> std::io::Result<Option<DemoConsumer>> {
    if config.callbacks.listen.is_none() {
        return Ok(None);
    }
    let Some(hook) = config.callbacks.webhooks.first_mut() else {
        return Ok(None);
    };
    let Some(mut bind) = hook
        .target
        .authority()
        .filter(|_| hook.target.scheme_str() == Some("http"))
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        return Ok(None);
    };
    if ephemeral {
        bind.set_port(0);
    }
    // Not `server::bind`: the gateway's own "listening on" lines keep their order.
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    if let Ok(target) = format!("http://{addr}{}", hook.target.path()).parse::<Uri>() {
        hook.target = target;
    }
    let webhook = (hook.path.clone(), hook.target.clone());
    let consumer = Consumer::new(None);
    let service = consumer.clone().service();
    let (trigger, shutdown) = server::shutdown_channel();
    tokio::spawn(async move {
        let _serves_until_the_process_ends = trigger;
        server::serve(
            "consumer",
            listener,
            move |_: ConnectionInfo| service.clone(),
            ConnectionSettings::default(),
            shutdown,
        )
        .await;
    });
    tracing::info!(
        listener = "consumer",
        "the demo's callback consumer is at {addr}"
    );
    Ok(Some(DemoConsumer {
        consumer,
        addr,
        webhook,
    }))
}

/// The keys the demo seals pseudo ids with: `None` when the variable `callbacks.id_key_env`
/// names is set (the gateway reads it), otherwise a key made for this run (its pseudo ids open
/// only while it runs).
pub fn pseudo_ids(config: &Config) -> Option<PseudoIds> {
    let name = config.callbacks.id_key_env.as_deref()?;
    if std::env::var_os(name).is_some() {
        return None;
    }
    let key = format!("{}{}", crate::ids::hex_id(), crate::ids::hex_id());
    PseudoIds::from_keys(&key).ok()
}

/// Subscribes the simulator's DISPATCH app to its message callbacks, delivered to `target` (the
/// gateway's callback listener and webhook path).
pub async fn subscribe(simulator: &Simulator, target: &str) -> Result<(), String> {
    let body = serde_json::json!({
        "app_id": NEW_APP,
        "target": target,
        "target_type": "HTTP",
        "triggers": ["MESSAGE_INBOUND", "MESSAGE_SUBMIT", "MESSAGE_DELIVERY"],
    });
    let request = Request::post(format!("/v1/projects/{PROJECT}/webhooks"))
        .header(
            header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(KEY)
            ),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let answer = simulator.handle(request).await;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("the simulator answered {}", answer.status()))
    }
}

/// The callback steps of the demo (they take the place of the closing line of the text before
/// them, which they end with). `simulator` is the embedded simulator's URL.
pub fn callback_instructions(
    proxy: SocketAddr,
    callbacks: SocketAddr,
    consumer: SocketAddr,
    simulator: &Uri,
) -> String {
    let sim = simulator.to_string();
    let sim = sim.trim_end_matches('/');
    let base = format!("http://{proxy}/v1/projects/{PROJECT}");
    format!(
        r#"Callbacks, on their own port (http://{callbacks}): the simulator delivers {NEW_APP}'s callbacks through the
gateway to a small built-in consumer at http://{consumer}, written for CONVERSATION mode.

11. A phone writes to the DISPATCH app. In DISPATCH mode its callback carries contact_id ""; the
    gateway fills in a pseudo contact id (mgpc_…) that stands for the phone, sealed, not readable
   curl -s -X POST {sim}/_simulator/inbound -H 'content-type: application/json'      -d '{{"project_id":"{PROJECT}","app_id":"{NEW_APP}","channel":"SMS","identity":"+15550123","text":"hello"}}'

12. What the consumer received: the MO, with that contact_id
   curl -s http://{consumer}/received

13. The consumer replies the CONVERSATION way, to the contact_id: the gateway opens the pseudo id
    and sends to the phone (x-modegate-decision: rewritten)
   ID=$(curl -s http://{consumer}/received | grep -o 'mgpc_[A-Za-z0-9_-]*' | head -1)
   curl -si -u {KEY} -H 'content-type: application/json' {base}/messages:send      -d '{{"app_id":"{NEW_APP}","recipient":{{"contact_id":"'"$ID"'"}},"message":{{"text_message":{{"text":"hi back"}}}}}}'

Press Ctrl-C to stop."#
    )
}

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

/// The Batch API steps of the demo (they take the place of the closing line of
/// [`instructions`], which they end with).
pub fn batch_instructions(batch: SocketAddr, admin: SocketAddr) -> String {
    let url = format!("http://{batch}/v1/projects/{PROJECT}/messages");
    let ann = r#"{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"parameters":{"name":"Ann"}}"#;
    format!(
        r#"Batch API, on its own port (http://{batch}, forwarded to the simulator's Batch origin):

8. Reject: a batch to the DISPATCH app whose recipients 1 and 2 are contact_ids (one 400 naming both)
   curl -si -u {KEY} -H 'content-type: application/json' {url} \
     -d '{{"app_id":"{NEW_APP}","message":{{"text_message":{{"text":"Hi ${{name}}"}}}},"recipient_and_params":[{ann},{{"recipient":{{"contact_id":"alice"}}}},{{"recipient":{{"contact_id":"bob"}}}}]}}'

9. Rewrite: _batch_id is reserved (the API overwrites it); this demo sets batch.reserved_metadata = "rewrite",
   so the gateway drops it and forwards (answer: {{"batch_id","send_after"}})
   curl -si -u {KEY} -H 'content-type: application/json' {url} \
     -d '{{"app_id":"{NEW_APP}","message":{{"text_message":{{"text":"Hi ${{name}}"}}}},"message_metadata":{{"campaign":"winter","_batch_id":"mine"}},"recipient_and_params":[{ann}]}}'

10. Recipients by what the gateway did with them
   curl -s http://{admin}/metrics | grep '^modegate_batch_recipients_total'

Press Ctrl-C to stop."#
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
