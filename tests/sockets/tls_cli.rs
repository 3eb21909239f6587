//! The TLS and egress settings as the `modegate` binary reads them from its environment:
//! `HTTPS_PROXY` with credentials, the system trust store (`SSL_CERT_FILE`), certificate
//! rotation on SIGHUP, and `check-config` catching unusable environment values.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use support::tls::*;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_modegate");
const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// `modegate serve` with `config` (written into `dir`) and `envs`; returns the child and its
/// proxy and admin addresses (from the `listening on` lines).
async fn serve(dir: &TempDir, config: &str, envs: &[(&str, &str)]) -> (Child, String, String) {
    let file = dir.write("modegate.toml", config);
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut addrs = Vec::new();
    while addrs.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("listening lines in time")
            .expect("read")
            .expect("a line before exit");
        if let Some(rest) = line.split("listening on ").nth(1) {
            addrs.push(
                rest.split(|c: char| c == '"' || c.is_whitespace())
                    .next()
                    .expect("addr")
                    .to_string(),
            );
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addrs[0].clone(), addrs[1].clone())
}

fn listen() -> &'static str {
    "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n"
}

async fn tls_simulator(ca: &Ca) -> TlsUpstream {
    let simulator = modegate::simulator::Simulator::new(demo_seed());
    TlsUpstream::start(server_config(&ca.localhost(), H2_H1), simulator.service()).await
}

#[tokio::test]
async fn https_proxy_from_the_environment_carries_its_credentials() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = tls_simulator(&ca).await;
    let proxy = ConnectProxy::start(Some("Basic dTpw")).await;
    let config = format!(
        "{}[upstream]\nbase_url = \"{}\"\nca_file = {:?}\n",
        listen(),
        upstream.url(),
        ca_file.display()
    );
    let https_proxy = format!("http://u:p@{}", proxy.addr);
    let (child, addr, _) = serve(&dir, &config, &[("HTTPS_PROXY", &https_proxy)]).await;
    let r = get(&format!("http://{addr}/v1/projects/demo-project/apps")).await;
    assert_eq!(
        r.status,
        http::StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(proxy.tunnels().len(), 1);
    assert_eq!(proxy.tunnels()[0].1.as_deref(), Some("Basic dTpw"));
    drop(child);

    // NO_PROXY naming the upstream: the proxy sees nothing more.
    let (child, addr, _) = serve(
        &dir,
        &config,
        &[("HTTPS_PROXY", &https_proxy), ("NO_PROXY", "localhost")],
    )
    .await;
    let r = get(&format!("http://{addr}/v1/projects/demo-project/apps")).await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert_eq!(proxy.tunnels().len(), 1);
    drop(child);
}

#[tokio::test]
async fn the_system_trust_store_is_read_as_openssl_tools_read_it() {
    let (ca, dir) = (Ca::new("test CA"), TempDir::new());
    let bundle = dir.write("bundle.pem", &ca.pem);
    let upstream = tls_simulator(&ca).await;
    let config = format!(
        "{}[upstream]\nbase_url = \"{}\"\ntls_roots = \"system\"\n",
        listen(),
        upstream.url()
    );
    let bundle = bundle.display().to_string();
    let (child, addr, _) = serve(&dir, &config, &[("SSL_CERT_FILE", &bundle)]).await;
    let r = get(&format!("http://{addr}/v1/projects/demo-project/apps")).await;
    assert_eq!(
        r.status,
        http::StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    drop(child);
}

async fn presented_certificate(ca: &Ca, addr: &str) -> Vec<u8> {
    tls_connect(ca, addr.parse().expect("addr"), &[b"http/1.1"])
        .await
        .1
}

#[tokio::test]
async fn sighup_rotates_the_listener_certificate() {
    let (ca, dir) = (Ca::new("listener CA"), TempDir::new());
    let first = ca.localhost();
    first.write(&dir, "listener");
    let upstream = Upstream::ok().await;
    let config = format!(
        "{}tls_cert_file = \"listener.crt\"\ntls_key_file = \"listener.key\"\n[upstream]\nbase_url = \"{}\"\n",
        listen(),
        upstream.url()
    );
    let (child, addr, admin) = serve(&dir, &config, &[]).await;
    assert_eq!(
        presented_certificate(&ca, &addr).await,
        first.cert_der.to_vec()
    );
    let second = ca.localhost();
    second.write(&dir, "listener");
    let pid = child.id().expect("pid").to_string();
    let status = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let admin: std::net::SocketAddr = admin.parse().expect("admin");
    let mut reloaded = false;
    for _ in 0..200 {
        let m = metrics(admin).await;
        if sample(
            &m,
            "modegate_config_reloads_total",
            &[("result", "success")],
        ) == 1.0
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reloaded, "SIGHUP reloaded within 5 s");
    assert_eq!(
        presented_certificate(&ca, &addr).await,
        second.cert_der.to_vec()
    );
    drop(child);
}

async fn check_config(dir: &TempDir, config: &str, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let file = dir.write("check.toml", config);
    let mut command = Command::new(BIN);
    command
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().await.expect("run");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn check_config_catches_unusable_environment_values() {
    let dir = TempDir::new();
    let (code, out) = check_config(
        &dir,
        "",
        &[("HTTPS_PROXY", "socks5://user:hunter2@proxy:1080")],
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("upstream.proxy_url: HTTPS_PROXY (from the environment)"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    let (code, out) = check_config(
        &dir,
        "[upstream]\ntls_roots = \"system\"\n",
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("upstream.tls_roots: the system trust store has no usable certificates"),
        "{out}"
    );

    let (code, out) = check_config(
        &dir,
        "[upstream]\nproxy_url = \"http://proxy.corp:3128\"\n",
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("egress proxy    proxy.corp:3128"), "{out}");
}
