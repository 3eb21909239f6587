//! The `modegate` binary: exit codes, check-config output, ephemeral ports, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_modegate");

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(text)
}

/// A minimal temp-file helper (no extra crate for a few lines).
#[allow(unreachable_pub)]
mod tempfile_path {
    use std::path::{Path, PathBuf};

    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn with(text: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("modegate-test-{}.toml", modegate::ids::hex_id()));
            std::fs::write(&path, text).expect("write");
            TempPath(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "config/modegate.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("dispatch.send.contact_recipient"), "{text}");
}

#[test]
fn check_config_names_file_and_key_and_exits_2() {
    let file = write_config(
        "[server]\nlisten = \"nowhere\"\n[policy.rules]\n\"no.such.rule\" = \"enforce\"\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.path().display().to_string()), "{err}");
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("no.such.rule"), "{err}");
}

#[test]
fn missing_config_and_bad_usage_exit_2() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/modegate.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["serve", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    for cmd in ["serve", "check-config", "simulate", "demo"] {
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(cmd),
            "{cmd} missing from help"
        );
    }
}

#[test]
fn config_path_comes_from_the_environment() {
    let file = write_config("[server]\nlisten = \"bad\"\n");
    let out = Command::new(BIN)
        .arg("check-config")
        .env("MODEGATE_CONFIG", file.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

/// Starts `serve`, returns the child and the addresses from its `listening on` lines.
fn serve(
    config: &str,
    envs: &[(&str, &str)],
    prefix: &[&str],
) -> (std::process::Child, Vec<String>, tempfile_path::TempPath) {
    let file = write_config(config);
    let mut command = if prefix.is_empty() {
        Command::new(BIN)
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(BIN);
        c
    };
    command
        .args(["serve", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut addrs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addrs.len() < 3 && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("listening on ").nth(1) {
            addrs.push(rest.split_whitespace().next().expect("addr").to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addrs, file)
}

fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(mut child: std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("modegate did not exit after SIGTERM");
}

const EMBEDDED: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 2\n\
[upstream]\nbase_url = \"embedded\"\n";

#[test]
fn serve_logs_ephemeral_addresses_serves_and_exits_0_on_sigterm() {
    let (child, addrs, _file) = serve(EMBEDDED, &[], &[]);
    assert_eq!(
        addrs.len(),
        3,
        "simulator, proxy and admin lines: {addrs:?}"
    );
    let (proxy, admin) = (&addrs[1], &addrs[2]);
    assert!(!proxy.ends_with(":0") && !admin.ends_with(":0"));
    assert!(get(admin, "/healthz").starts_with("HTTP/1.1 200"));
    let reply = get(proxy, "/v1/projects/p/apps");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(reply.contains("x-modegate-decision: forwarded"), "{reply}");
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
}

#[test]
fn serve_works_on_one_worker_thread_pinned_to_one_cpu() {
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    let prefix: &[&str] = if taskset {
        &["taskset", "-c", "0"]
    } else {
        &[]
    };
    let (child, addrs, _file) = serve(EMBEDDED, &[("TOKIO_WORKER_THREADS", "1")], prefix);
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    for _ in 0..20 {
        assert!(get(&addrs[1], "/v1/projects/p/apps").starts_with("HTTP/1.1 401"));
    }
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
}

#[test]
fn port_in_use_is_a_runtime_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let file = write_config(&format!(
        "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"http://127.0.0.1:9\"\n"
    ));
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(file.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn json_decision_logs_carry_every_field_and_no_secrets() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-seed.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n\
         [upstream]\nbase_url = \"embedded\"\nembedded_seed = \"{}\"\n[log]\nformat = \"json\"\n",
        seed.display()
    );
    let file = write_config(&config);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addrs = Vec::new();
    let mut lines = Vec::new();
    while addrs.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("listening lines");
        let v: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        if let Some(rest) = v["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("listening on "))
        {
            addrs.push(rest.to_string());
        }
        lines.push(line);
    }
    let proxy = &addrs[1];
    let secret_token = "Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=";
    let phone = "+15550100";
    let body = format!(
        r#"{{"app_id":"new-app","recipient":{{"contact_id":"alice"}},"message":{{"text_message":{{"text":"{phone}"}}}}}}"#
    );
    let request = format!(
        "POST /v1/projects/demo-project/messages:send HTTP/1.1\r\nHost: x\r\nAuthorization: {secret_token}\r\n\
         x-request-id: req-42\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
    lines.extend(rx.try_iter());
    let decision = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "modegate::decision")
        .expect("a decision line");
    for field in [
        "decision_id",
        "request_id",
        "rule",
        "action",
        "mode",
        "project_id",
        "app_id",
        "operation",
        "outcome",
    ] {
        assert!(
            decision.get(field).is_some(),
            "{field} missing from {decision}"
        );
    }
    assert_eq!(decision["request_id"], "req-42");
    assert_eq!(decision["rule"], "dispatch.send.contact_recipient");
    assert_eq!(decision["action"], "enforce");
    assert_eq!(decision["mode"], "DISPATCH");
    assert_eq!(decision["outcome"], "rejected");
    let all = lines.join("\n");
    for secret in [
        secret_token,
        "ZGVtby1rZXk6ZGVtby1zZWNyZXQ=",
        "demo-secret",
        phone,
    ] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
}
