//! Hot reload through `POST /reload`: valid files swap in atomically, invalid ones are refused
//! and counted, in-flight requests are unaffected.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use support::*;

struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("modegate-reload-{}.toml", modegate::ids::hex_id()));
        std::fs::write(&path, text).expect("write");
        ConfigFile(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("write");
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config_text(upstream: &str, range_action: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [upstream]\nbase_url = \"{upstream}\"\n\
         [policy.rules]\n\"app.retention.range\" = \"{range_action}\"\n"
    )
}

async fn start(file: &ConfigFile) -> modegate::RunningApp {
    support::quiet_logs();
    let config = modegate::Config::load(&file.0).expect("valid");
    let mut app = modegate::App::bind(config).await.expect("bind");
    app.enable_reload(file.0.clone());
    app.spawn()
}

async fn reload(admin: std::net::SocketAddr) -> Reply {
    send(Method::POST, &format!("http://{admin}/reload"), &[], "").await
}

const BAD_RETENTION: &str = r#"{"display_name":"x","retention_policy":{"ttl_days":0}}"#;

#[tokio::test]
async fn a_valid_file_swaps_the_rules_in() {
    let upstream = Upstream::ok().await;
    let file = ConfigFile::new(&config_text(&upstream.url(), "enforce"));
    let gw = start(&file).await;
    let url = format!("http://{}/v1/projects/p/apps", gw.proxy_addr);
    assert_rejected(&post(&url, BAD_RETENTION).await, "app.retention.range");

    file.write(&config_text(&upstream.url(), "shadow"));
    let r = reload(gw.admin_addr).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["reloaded"], true);
    let after = post(&url, BAD_RETENTION).await;
    assert_eq!(after.header("x-modegate-decision"), Some("shadow"));
    assert_eq!(upstream.seen().len(), 1);
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            "modegate_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_is_refused_counted_and_the_old_config_stays() {
    let upstream = Upstream::ok().await;
    let file = ConfigFile::new(&config_text(&upstream.url(), "enforce"));
    let gw = start(&file).await;
    file.write(
        "[policy.rules]\n\"app.retention.range\" = \"rewrite\"\n[server]\nlisten = \"nope\"\n",
    );
    let r = reload(gw.admin_addr).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let (_, message, _) = r.api_error();
    assert!(
        message.contains("app.retention.range") && message.contains("server.listen"),
        "{message}"
    );
    let url = format!("http://{}/v1/projects/p/apps", gw.proxy_addr);
    assert_rejected(&post(&url, BAD_RETENTION).await, "app.retention.range");
    let m = metrics(gw.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            "modegate_config_reloads_total",
            &[("result", "failure")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "modegate_config_reloads_total",
            &[("result", "success")]
        ),
        0.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn in_flight_requests_survive_a_reload_and_restart_only_keys_are_reported() {
    let upstream = Upstream::start(Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Response::new(Full::new(Bytes::from_static(b"done")))
        })
    }))
    .await;
    let file = ConfigFile::new(&config_text(&upstream.url(), "enforce"));
    let gw = start(&file).await;
    let url = format!("http://{}/v1/projects/p/elsewhere", gw.proxy_addr);
    let in_flight = tokio::spawn(async move { send(Method::GET, &url, &[], "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    file.write(&format!(
        "{}[mode_cache]\nttl_secs = 5\n",
        config_text(&upstream.url(), "shadow")
            .replace("127.0.0.1:0\"\nadmin", "127.0.0.1:1\"\nadmin")
    ));
    let r = reload(gw.admin_addr).await;
    assert_eq!(r.status, StatusCode::OK);
    let report = &r.json()["report"];
    assert_eq!(report["mode_cache_replaced"], true);
    assert_eq!(
        report["needs_restart"],
        serde_json::json!(["server.listen"])
    );
    let done = in_flight.await.expect("join");
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(&done.body[..], b"done");
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_config_file_there_is_nothing_to_reload() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let r = reload(gw.admin_addr).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send(
        Method::GET,
        &format!("http://{}/reload", gw.admin_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    gw.shutdown().await;
}
