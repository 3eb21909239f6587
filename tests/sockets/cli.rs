//! The `modegate` binary: exit codes, check-config output, ephemeral ports, signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
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
    let (child, addrs, _log, _file) = serve(EMBEDDED, &[], &[]);
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
    let (child, addrs, _log, _file) = serve(EMBEDDED, &[("TOKIO_WORKER_THREADS", "1")], prefix);
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
    let (child, addrs, rx, _file) = serve(&config, &[], &[]);
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
    let lines: Vec<String> = rx.try_iter().collect();
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
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

/// Starts `serve` (optionally behind a command `prefix` such as `taskset -c 0`) with every
/// stderr line captured. Returns the child, the simulator / proxy / admin addresses from the
/// `listening on` lines, every log line (those lines included), and the config file.
fn serve(
    config: &str,
    envs: &[(&str, &str)],
    prefix: &[&str],
) -> (
    std::process::Child,
    Vec<String>,
    std::sync::mpsc::Receiver<String>,
    tempfile_path::TempPath,
) {
    let file = write_config(config);
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
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
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addrs = Vec::new();
    let mut early = Vec::new();
    while addrs.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("listening lines");
        if let Some(rest) = line.split("listening on ").nth(1) {
            addrs.push(
                rest.split(|c: char| c == '"' || c.is_whitespace())
                    .next()
                    .expect("addr")
                    .to_string(),
            );
        }
        early.push(line);
    }
    let (tx2, rx2) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in early.into_iter().chain(rx.iter()) {
            let _ = tx2.send(line);
        }
    });
    (child, addrs, rx2, file)
}

fn http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn sighup_reloads_the_config_file() {
    let upstream_less = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n\
        [upstream]\nbase_url = \"embedded\"\n";
    let (child, addrs, _rx, file) = serve(
        &format!("{upstream_less}[policy]\nmax_ttl_days = 30\n"),
        &[],
        &[],
    );
    let create = |addr: &str| {
        let body = r#"{"display_name":"x","retention_policy":{"ttl_days":400}}"#;
        http(addr, &format!(
            "POST /v1/projects/p/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    let before = create(&addrs[1]);
    assert!(
        before.contains("x-modegate-rule: compliance.max_ttl_days"),
        "{before}"
    );
    std::fs::write(
        file.path(),
        format!("{upstream_less}[policy]\nmax_ttl_days = 3650\n"),
    )
    .expect("write");
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http(
            &addrs[2],
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if metrics.contains("modegate_config_reloads_total{result=\"success\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = create(&addrs[1]);
    assert!(!after.contains("compliance.max_ttl_days"), "{after}");
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
}

#[test]
fn nothing_secret_reaches_logs_metrics_or_error_bodies_under_load() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-seed.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n\
         [upstream]\nbase_url = \"embedded\"\nembedded_seed = \"{}\"\n\
         [policy]\nwhat_if_mode = \"DISPATCH\"\n[log]\nformat = \"json\"\naccess_log = true\n",
        seed.display()
    );
    let (child, addrs, rx, _file) = serve(&config, &[("RUST_LOG", "debug")], &[]);
    let proxy = &addrs[1];
    let basic = "ZGVtby1rZXk6ZGVtby1zZWNyZXQ=";
    let bearer = "leaky-bearer-token-7f3a9c";
    let phone = "+15550199";
    let text = "confidential-body-text-42";
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut gateway_bodies = Vec::new();
    for i in 0..40 {
        let auth = if i % 2 == 0 {
            format!("Basic {basic}")
        } else {
            format!("Bearer {bearer}")
        };
        let bodies = [
            ("POST", "/v1/projects/demo-project/messages:send".to_string(),
             format!(r#"{{"app_id":"new-app","recipient":{{"contact_id":"alice"}},"message":{{"text_message":{{"text":"{text}"}}}}}}"#)),
            ("POST", "/v1/projects/demo-project/messages:send".to_string(),
             format!(r#"{{"app_id":"new-app","recipient":{{"identified_by":{{"channel_identities":[{{"channel":"SMS","identity":"{phone}"}}]}}}},"message":{{"text_message":{{"text":"{text}"}}}}}}"#)),
            ("GET", "/v1/projects/demo-project/messages?app_id=new-app&contact_id=alice&channel_identity=%2B15550199".to_string(), String::new()),
            ("POST", "/v1/projects/demo-project/messages:send".to_string(), format!("{{not json {text} {phone}")),
            ("GET", "/v1/projects/demo-project/conversations?app_id=legacy-app".to_string(), String::new()),
        ];
        for (method, path, body) in bodies {
            let reply = http(proxy, &format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
            if reply.contains("x-modegate-decision: rejected") {
                gateway_bodies.push(reply);
            }
        }
    }
    assert!(!gateway_bodies.is_empty());
    let metrics = http(
        &addrs[2],
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(
        logs.len() > 100,
        "expected debug and access output, got {} lines",
        logs.len()
    );
    let all_logs = logs.join("\n");
    for secret in [basic, "demo-secret", bearer, phone, "15550199", text] {
        assert!(!all_logs.contains(secret), "{secret} leaked into the logs");
        assert!(
            !metrics.contains(secret),
            "{secret} leaked into the metrics"
        );
        for body in &gateway_bodies {
            assert!(
                !body.contains(secret),
                "{secret} leaked into an error body: {body}"
            );
        }
    }
    let parsed: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let access = parsed
        .iter()
        .find(|v| v["target"] == "modegate::access")
        .expect("access log line");
    assert_eq!(access["trace_id"], trace);
    for field in [
        "request_id",
        "operation",
        "status",
        "decision",
        "duration_ms",
    ] {
        assert!(access.get(field).is_some(), "access log lacks {field}");
    }
    let decision = parsed
        .iter()
        .find(|v| v["target"] == "modegate::decision")
        .expect("decision line");
    assert_eq!(decision["trace_id"], trace);
}

fn check_config(text: &str, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let file = write_config(text);
    let mut command = Command::new(BIN);
    command.args(["check-config", "--config"]).arg(file.path());
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_log_level_the_filter_would_misread_is_a_config_error() {
    let (code, err) = check_config("[log]\nlevel = \"warning\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("log.level: \"warning\" is not a log level"),
        "{err}"
    );
    let (code, _) = check_config("[log]\nlevel = \"warn,modegate=debug\"\n", &[]);
    assert_eq!(code, Some(0));
}

#[test]
fn start_failures_reach_stderr_whatever_the_log_level() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let file = write_config(&format!(
        "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"http://127.0.0.1:9\"\n[log]\nlevel = \"off\"\n"
    ));
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(file.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start: cannot listen on"), "{err}");
}

#[test]
fn check_config_reports_every_planted_problem_with_its_key_path() {
    let text = "[server]\nlisten = \"nonsense\"\nfast_mode = true\nmax_connections = \"many\"\n\
        [upstream]\nconnect_timeout_ms = \"fast\"\nrequest_timeout_ms = -5\nembedded_seed = \"x.toml\"\nspeed = 1\n\
        [auth]\nmode = \"sideways\"\n[mode_cache]\nttl_secs = true\n\
        [policy]\nunknown_mode = \"maybe\"\n[policy.rules]\n\"dispatch.bogus\" = \"enforce\"\n\"dispatch.messages_source\" = 5\n\
        [[policy.app]]\nproject_id = \"p\"\napp_id = \"a\"\ncolour = \"blue\"\n[[policy.app]]\napp_id = \"b\"\n\
        [log]\nlevel = \"warning\"\nformat = 1\n";
    let (code, err) = check_config(text, &[]);
    assert_eq!(code, Some(2));
    let planted = [
        ("server.listen", "not a socket address"),
        ("server.fast_mode", "unknown key"),
        (
            "server.max_connections",
            "expected a non-negative integer, found the string \"many\"",
        ),
        (
            "upstream.connect_timeout_ms",
            "expected a non-negative integer, found the string \"fast\"",
        ),
        ("upstream.request_timeout_ms", "found the integer -5"),
        ("upstream.speed", "unknown key"),
        ("upstream.embedded_seed", "only applies"),
        ("auth.mode", "\"sideways\""),
        ("mode_cache.ttl_secs", "found the boolean true"),
        ("policy.unknown_mode", "\"maybe\""),
        ("policy.rules.\"dispatch.bogus\"", "unknown rule id"),
        (
            "policy.rules.\"dispatch.messages_source\"",
            "expected a string",
        ),
        ("policy.app[0].colour", "unknown key"),
        ("policy.app[1].project_id", "required"),
        ("log.level", "not a log level"),
        ("log.format", "expected a string"),
    ];
    for (key, what) in planted {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("- {key}: ")) && l.contains(what)),
            "{key} ({what}) not reported:\n{err}"
        );
    }
    assert!(
        err.contains(&format!("{} problems", planted.len())),
        "{err}"
    );
}

#[test]
fn check_config_finds_what_serve_would_fail_on_at_start() {
    let (code, err) = check_config(
        "[upstream]\nbase_url = \"embedded\"\nembedded_seed = \"/nonexistent/seed.toml\"\n",
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("- upstream.embedded_seed: "), "{err}");
    let (code, err) = check_config(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nmode = \"inject\"\nkey_id_env = \"MODEGATE_TEST_UNSET_ID\"\nkey_secret_env = \"MODEGATE_TEST_UNSET_SECRET\"\n",
        &[("MODEGATE_TEST_UNSET_SECRET", "s")],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("- auth.key_id_env: environment variable MODEGATE_TEST_UNSET_ID is not set"),
        "{err}"
    );
    assert!(!err.contains("auth.key_secret_env"), "{err}");
}

#[test]
fn check_config_reports_schema_and_start_time_problems_in_one_run() {
    // Schema problems (a wrong type, an unknown key, a bad value) beside what `serve` would fail
    // on at start (an unreadable seed, unset inject key variables, a TLS file that is not
    // there): one run names them all.
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\nfast_mode = true\n\
        tls_cert_file = \"/nonexistent/tls.crt\"\ntls_key_file = \"/nonexistent/tls.key\"\n\
        [upstream]\nbase_url = \"embedded\"\nembedded_seed = \"/nonexistent/seed.toml\"\nconnect_timeout_ms = \"fast\"\n\
        [auth]\nmode = \"inject\"\nkey_id_env = \"MODEGATE_TEST_UNSET_ID_2\"\nkey_secret_env = \"MODEGATE_TEST_UNSET_SECRET_2\"\n\
        [policy]\nunknown_mode = \"maybe\"\n";
    let (code, err) = check_config(text, &[]);
    assert_eq!(code, Some(2));
    for (key, needle) in [
        ("server.fast_mode", "unknown key"),
        ("server.tls_cert_file", "/nonexistent/tls.crt"),
        ("upstream.connect_timeout_ms", "found the string \"fast\""),
        ("policy.unknown_mode", "\"maybe\""),
        ("upstream.embedded_seed", ""),
        (
            "auth.key_id_env",
            "environment variable MODEGATE_TEST_UNSET_ID_2 is not set",
        ),
        (
            "auth.key_secret_env",
            "environment variable MODEGATE_TEST_UNSET_SECRET_2 is not set",
        ),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("  - {key}: ")) && l.contains(needle)),
            "{key} ({needle}) missing:\n{err}"
        );
    }
    // Grouped by section, schema and start-time problems alike.
    let keys: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .filter_map(|l| l.split(['.', ':']).next())
        .collect();
    let mut grouped = keys.clone();
    grouped.dedup();
    assert_eq!(grouped, ["server", "upstream", "auth", "policy"], "{err}");
}

#[test]
fn check_config_summary_speaks_the_files_language() {
    let file = write_config(
        "[policy]\nunknown_mode = \"forward\"\n[[policy.app]]\nproject_id = \"p\"\napp_id = \"a\"\nrules = { \"dispatch.messages_source\" = \"shadow\" }\n[log]\naccess_log = true\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file.path())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unknown_mode forward"), "{text}");
    assert!(!text.contains("Forward"), "{text}");
    assert!(
        text.contains("dispatch.messages_source") && text.contains("shadow (global: rewrite)"),
        "{text}"
    );
    assert!(
        text.contains("log             format text, level info, access_log true"),
        "{text}"
    );
}

fn post_reload(admin: &str) -> String {
    http(
        admin,
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn reload_judges_restart_only_changes_against_what_is_running() {
    let with_grace = |grace: u32| {
        format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = {grace}\n[upstream]\nbase_url = \"embedded\"\n")
    };
    let (child, addrs, _rx, file) = serve(&with_grace(1), &[], &[]);
    let admin = &addrs[2];
    std::fs::write(file.path(), with_grace(2)).expect("write");
    let first = post_reload(admin);
    assert!(first.contains(r#""needs_restart":["server"]"#), "{first}");
    // Reloading again still reports it: the running process has not changed.
    let again = post_reload(admin);
    assert!(again.contains(r#""needs_restart":["server"]"#), "{again}");
    // Back to what is running: nothing needs a restart.
    std::fs::write(file.path(), with_grace(1)).expect("write");
    let restored = post_reload(admin);
    assert!(restored.contains(r#""needs_restart":[]"#), "{restored}");
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
}

/// Starts `demo` with ephemeral listeners; returns the child, its proxy and admin addresses
/// and what it printed on stdout.
fn demo(config: Option<&Path>, dir: &Path) -> (std::process::Child, String, String, String) {
    let mut command = Command::new(BIN);
    command.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Both pipes are drained for the child's whole life, so its writes never fail.
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let (out_tx, out_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let mut addrs = Vec::new();
    while addrs.len() < 3 {
        let line = err_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("listening lines");
        if let Some(rest) = line.split("listening on ").nth(1) {
            addrs.push(rest.split_whitespace().next().expect("addr").to_string());
        }
    }
    std::thread::spawn(move || for _ in err_rx {});
    let mut printed = String::new();
    while let Ok(line) = out_rx.recv_timeout(Duration::from_secs(20)) {
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in out_rx {});
    (child, addrs[1].clone(), addrs[2].clone(), printed)
}

#[test]
fn the_demo_shows_the_migration_report_and_reloads_its_file() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let (child, proxy, admin, printed) = demo(Some(&config), Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(printed.contains("/report/migration"), "{printed}");
    assert!(printed.contains("report --admin"), "{printed}");
    // The demo's own legacy-app command: forwarded, and a row in the report.
    let legacy = http(
        &proxy,
        "GET /v1/projects/demo-project/messages?app_id=legacy-app&contact_id=alice HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=\r\nConnection: close\r\n\r\n",
    );
    assert!(legacy.starts_with("HTTP/1.1 200"), "{legacy}");
    let report = get(&admin, "/report/migration");
    assert!(
        report.contains("legacy-app") && report.contains("dispatch.list_messages.contact_filter"),
        "{report}"
    );
    let table = Command::new(BIN)
        .args(["report", "--admin", &format!("http://{admin}")])
        .output()
        .expect("report");
    assert_eq!(table.status.code(), Some(0));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("demo-project") && l.contains("legacy-app")),
        "{table}"
    );
    // Reload works under demo, and the command-line listeners stay in force.
    let reloaded = post_reload(&admin);
    assert!(reloaded.starts_with("HTTP/1.1 200"), "{reloaded}");
    assert!(reloaded.contains(r#""needs_restart":[]"#), "{reloaded}");
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
}

#[test]
fn the_demo_runs_from_any_directory_and_one_request_is_one_request_in_its_report() {
    // An empty directory: the demo reads no file.
    let dir = std::env::temp_dir().join(format!("modegate-demo-{}", modegate::ids::hex_id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (child, proxy, admin, printed) = demo(None, &dir);
    let auth = "Authorization: Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=";
    // Step 1 of the printed steps: the built-in seed's DISPATCH app, through the gateway.
    assert!(printed.contains("/apps/new-app"), "{printed}");
    let forwarded = http(
        &proxy,
        &format!("GET /v1/projects/demo-project/apps/new-app HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n"),
    );
    assert!(forwarded.starts_with("HTTP/1.1 200"), "{forwarded}");
    assert!(
        forwarded.contains("x-modegate-decision: forwarded"),
        "{forwarded}"
    );
    // Step 5: one legacy request that DISPATCH mode would both refuse (contact_id) and rewrite
    // (messages_source) is one request in the report, a refused one.
    let legacy = http(
        &proxy,
        &format!("GET /v1/projects/demo-project/messages?app_id=legacy-app&contact_id=alice HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n"),
    );
    assert!(legacy.starts_with("HTTP/1.1 200"), "{legacy}");
    let report = get(&admin, "/report/migration");
    let body = report.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON report");
    let app = &v["apps"][0];
    assert_eq!(app["app_id"], "legacy-app", "{v}");
    assert_eq!(app["requests"], 1, "{v}");
    assert_eq!(app["would_refuse"], 1, "{v}");
    assert_eq!(app["would_rewrite"], 0, "{v}");
    let rules: Vec<(String, String, u64)> = app["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["would"].as_str().unwrap_or_default().to_string(),
                r["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (
                "dispatch.list_messages.contact_filter".to_string(),
                "refuse".to_string(),
                1
            ),
            (
                "dispatch.messages_source".to_string(),
                "rewrite".to_string(),
                1
            )
        ],
        "{v}"
    );
    // Step 6 prints the counters that moved, not the hundreds exported at zero.
    assert!(printed.contains("grep -v ' 0$'"), "{printed}");
    let metrics = get(&admin, "/metrics");
    let moved: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            [
                "modegate_requests_total",
                "modegate_policy_decisions_total",
                "modegate_migration_blockers_total",
            ]
            .iter()
            .any(|m| l.starts_with(m))
                && !l.ends_with(" 0")
        })
        .collect();
    assert!(!moved.is_empty() && moved.len() <= 10, "{moved:?}");
    // With no file there is nothing to reload, and the answer says so.
    let reload = post_reload(&admin);
    assert!(
        reload.contains("not started from a config file"),
        "{reload}"
    );
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_gateway_keeps_serving_when_its_log_reader_goes_away() {
    let file = write_config(&format!("{EMBEDDED}[log]\naccess_log = true\n"));
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut addrs = Vec::new();
    {
        // Read the listening lines, then close the log pipe, as a log shipper that died would.
        let stderr = child.stderr.take().expect("stderr");
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                addrs.push(rest.split_whitespace().next().expect("addr").to_string());
            }
            if addrs.len() == 3 {
                break;
            }
        }
    }
    for _ in 0..50 {
        let reply = get(&addrs[1], "/v1/projects/p/apps");
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the gateway died"
    );
    sigterm(&child);
    wait_exit(child);
}

#[test]
fn check_config_checks_the_shared_cache_variable_and_never_prints_its_password() {
    let text = "[mode_cache]\nredis_url_env = \"MODEGATE_TEST_REDIS_URL\"\n";
    let (code, err) = check_config(text, &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "- mode_cache.redis_url_env: environment variable MODEGATE_TEST_REDIS_URL is not set"
        ),
        "{err}"
    );
    let (code, err) = check_config(
        text,
        &[(
            "MODEGATE_TEST_REDIS_URL",
            "http://user:hunter2-pass@cache:6379",
        )],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("- mode_cache.redis_url_env: environment variable MODEGATE_TEST_REDIS_URL: not a Redis URL"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    // The URL itself in the file is refused: the key names a variable.
    let (code, err) = check_config(
        "[mode_cache]\nredis_url_env = \"redis://:hunter2-pass@cache:6379\"\n",
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("- mode_cache.redis_url_env: must name an environment variable"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    // A good URL: valid, summarised by the variable's name, the password nowhere.
    let file = write_config(text);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file.path())
        .env(
            "MODEGATE_TEST_REDIS_URL",
            "redis://:hunter2-pass@cache.internal:6380/1",
        )
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("Redis at the URL in $MODEGATE_TEST_REDIS_URL"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn every_shipped_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = [
        "config/modegate.toml",
        "config/demo.toml",
        "deploy/kubernetes/sidecar/modegate.toml",
        "deploy/kubernetes/egress/modegate.toml",
        "deploy/kubernetes/egress/shared-cache/modegate.toml",
    ];
    for file in shipped {
        // What each deployment provides from its Secrets.
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(root.join(file))
            .env("SINCH_KEY_ID", "key-id")
            .env("SINCH_KEY_SECRET", "key-secret")
            .env("MODEGATE_REDIS_URL", "redis://:pw@modegate-redis:6379/0")
            .env("SINCH_WEBHOOK_SECRET", "webhook-secret")
            .env("MODEGATE_ID_KEY", "ab".repeat(32))
            // `demo` makes a key of its own when this is unset; `check-config` wants one.
            .env("MODEGATE_DEMO_ID_KEY", "cd".repeat(32))
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_config_reads_the_callback_secrets_and_summarises_the_webhooks() {
    let text = "[callbacks]\nlisten = \"127.0.0.1:8082\"\nid_key_env = \"MODEGATE_TEST_ID_KEY\"\n\
                [[callbacks.webhook]]\npath = \"/sinch/events\"\ntarget = \"http://127.0.0.1:3000/e\"\n\
                secret_env = \"MODEGATE_TEST_WEBHOOK_SECRET\"\nfill_ids = \"pseudo\"\n";
    let (code, err) = check_config(text, &[("MODEGATE_TEST_ID_KEY", "not-hex-but-secret")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("- callbacks.webhook[0].secret_env: environment variable MODEGATE_TEST_WEBHOOK_SECRET is not set"),
        "{err}"
    );
    assert!(err.contains("- callbacks.id_key_env: environment variable MODEGATE_TEST_ID_KEY: key 1 of 1 is not 64 hex characters"), "{err}");
    assert!(!err.contains("not-hex-but-secret"), "{err}");
    let file = write_config(text);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file.path())
        .env("MODEGATE_TEST_ID_KEY", "cd".repeat(32))
        .env("MODEGATE_TEST_WEBHOOK_SECRET", "hunter2-webhook")
        .output()
        .expect("run");
    let all = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("callbacks       listen 127.0.0.1:8082, 1 webhook(s)"),
        "{all}"
    );
    assert!(
        all.contains("/sinch/events -> http://127.0.0.1:3000/e (verified and re-signed with $MODEGATE_TEST_WEBHOOK_SECRET, max skew 300s, fill ids pseudo, timeout 10s)"),
        "{all}"
    );
    assert!(
        !all.contains("hunter2") && !all.contains(&"cd".repeat(32)),
        "{all}"
    );
}

#[test]
fn callback_refusals_are_logged_without_body_signature_secret_or_identity() {
    use modegate::callbacks::signature;
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-seed.toml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n\
         [upstream]\nbase_url = \"embedded\"\nembedded_seed = \"{}\"\n[log]\nformat = \"json\"\n\
         [callbacks]\nlisten = \"127.0.0.1:0\"\nid_key_env = \"CB_LOG_KEY\"\n\
         [[callbacks.webhook]]\npath = \"/sinch/events\"\ntarget = \"http://{closed}/e\"\n\
         secret_env = \"CB_LOG_SECRET\"\nfill_ids = \"pseudo\"\n",
        seed.display()
    );
    let secret = "hunter2-webhook-secret";
    let key = "7e".repeat(32);
    let (child, _, rx, _file) = serve(
        &config,
        &[("CB_LOG_SECRET", secret), ("CB_LOG_KEY", &key)],
        &[],
    );
    let listener = rx
        .iter()
        .find(|l| l.contains("\"callbacks\"") && l.contains("listening on"))
        .and_then(|l| {
            l.split("listening on ")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        })
        .expect("listening on ADDR with listener=callbacks");
    let phone = "46709998877";
    let body = format!(
        r#"{{"app_id":"01HAPP00000000000000000000","project_id":"p","message":{{"channel_identity":{{"channel":"SMS","identity":"{phone}"}},"contact_id":"","conversation_id":"","processing_mode":"DISPATCH"}}}}"#
    );
    let now = signature::unix_now().to_string();
    let good = signature::sign(secret.as_bytes(), body.as_bytes(), "nonce-1", &now);
    let forged = signature::sign(b"wrong", body.as_bytes(), "nonce-2", &now);
    let post = |sig: &str, nonce: &str| {
        http(
            &listener,
            &format!(
                "POST /sinch/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 x-sinch-webhook-signature: {sig}\r\nx-sinch-webhook-signature-nonce: {nonce}\r\n\
                 x-sinch-webhook-signature-timestamp: {now}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert!(post(&forged, "nonce-2").starts_with("HTTP/1.1 401"));
    assert!(post(&good, "nonce-1").starts_with("HTTP/1.1 502"));
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
    let lines: Vec<String> = rx.try_iter().collect();
    let refusal = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "modegate::decision")
        .expect("a decision line");
    assert_eq!(refusal["operation"], "callback");
    assert_eq!(refusal["outcome"], "bad_signature");
    assert_eq!(refusal["webhook"], "/sinch/events");
    let all = lines.join("\n");
    for leak in [
        secret,
        key.as_str(),
        phone,
        good.as_str(),
        forged.as_str(),
        "nonce-1",
    ] {
        assert!(!all.contains(leak), "{leak} leaked into the logs");
    }
}

/// The address in `text` right after `marker` (`127.0.0.1:PORT`).
fn address_after(text: &str, marker: &str) -> String {
    let rest = text
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"));
    rest.chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

#[test]
fn the_demo_closes_the_callback_loop_with_a_pseudo_contact_id() {
    let dir = std::env::temp_dir().join(format!("modegate-demo-{}", modegate::ids::hex_id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (child, proxy, _admin, printed) = demo(None, &dir);
    // Steps 11 to 13 as printed: an MO to the DISPATCH app through the simulator…
    let simulator = address_after(&printed, "curl -s -X POST http://");
    let consumer = address_after(&printed, "small built-in consumer at http://");
    let mo = r#"{"project_id":"demo-project","app_id":"new-app","channel":"SMS","identity":"+15550123","text":"hello"}"#;
    let answer = http(
        &simulator,
        &format!(
            "POST /_simulator/inbound HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{mo}",
            mo.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // …reaches the consumer with a pseudo contact id in place of the empty one…
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let received = get(&consumer, "/received");
        if let Some(at) = received.find("\"contact_id\":\"mgpc_") {
            let id: String = received[at + "\"contact_id\":\"".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "no pseudo id arrived: {received}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // …and the reply to that contact id is sent to the phone.
    let reply = format!(
        r#"{{"app_id":"new-app","recipient":{{"contact_id":"{id}"}},"message":{{"text_message":{{"text":"hi back"}}}}}}"#
    );
    let sent = http(
        &proxy,
        &format!(
            "POST /v1/projects/demo-project/messages:send HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ=\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        ),
    );
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(sent.contains("x-modegate-decision: rewritten"), "{sent}");
    assert!(
        sent.contains("x-modegate-rule: dispatch.pseudo_ids"),
        "{sent}"
    );
    sigterm(&child);
    assert_eq!(wait_exit(child), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
