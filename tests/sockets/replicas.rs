//! Replicas that agree, against a real `redis-server` on a free loopback port: two gateways
//! over one upstream make one lookup per app, an app change through one is honoured by the
//! other within a second, Redis killed and restarted under traffic costs no request and
//! sharing resumes, and a password in the URL works and shows nowhere.

use crate::support;

use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use http::{Method, StatusCode};
use modegate::proxy::classify::Operation as Op;
use modegate::shared_cache::Invalidation;
use modegate::simulator::Simulator;
use support::inproc::InProc;
use support::redis::RedisServer;
use support::*;

const SEND_LEGACY: &str = r#"{"app_id":"legacy-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#;
const DISPATCH_RULE: &str = "dispatch.send.contact_recipient";

fn errors(gw: &InProc, op: &str) -> f64 {
    sample(
        &gw.metrics(),
        "modegate_shared_cache_errors_total",
        &[("op", op)],
    )
}

/// A `contact_id` send to the DISPATCH demo app is rejected: the replica knew the mode.
async fn contact_send_rejected(gw: &InProc) {
    assert_rejected(
        &gw.post("/messages:send", SEND_TO_ALICE).await,
        DISPATCH_RULE,
    );
}

fn pair(redis: &RedisServer) -> (std::sync::Arc<Simulator>, InProc, InProc) {
    let sim = Simulator::new(demo_seed());
    let url = redis.url();
    let a = InProc::replica(sim.clone(), "", Some(&url));
    let b = InProc::replica(sim.clone(), "", Some(&url));
    (sim, a, b)
}

fn source_of(gw: &InProc, app: &str) -> Option<String> {
    gw.state
        .modes()
        .known_apps()
        .into_iter()
        .find(|k| k.app_id == app)
        .map(|k| format!("{} {}", k.mode, k.source))
}

/// Polls an async check until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not true within {within:?}: {what}");
}

#[tokio::test]
async fn two_replicas_make_one_lookup_per_app() {
    let redis = RedisServer::start(None).await;
    let (sim, a, b) = pair(&redis);
    contact_send_rejected(&a).await;
    assert_eq!(
        sim.calls(Op::GetApp),
        1,
        "the first replica looks the app up"
    );
    contact_send_rejected(&b).await;
    assert_eq!(
        sim.calls(Op::GetApp),
        1,
        "the second replica reads the mode (and the credential) from Redis"
    );
    b.state.modes().sync().await;
    assert_eq!(source_of(&b, "new-app").as_deref(), Some("DISPATCH shared"));

    // The shared entry carries the writer's freshness, and only a fingerprint of the caller.
    let mut conn = redis.connection().await;
    let pttl: i64 = conn
        .pttl("modegate:mode:demo-project/new-app")
        .await
        .expect("pttl");
    assert!(pttl > 0 && pttl <= 300_000, "{pttl}");
    let keys: Vec<String> = conn.keys("modegate:*").await.expect("keys");
    assert!(
        keys.iter().all(|k| !k.contains("ZGVtby")),
        "no credential in a key: {keys:?}"
    );
    for key in keys
        .iter()
        .filter(|k| k.starts_with("modegate:credential:"))
    {
        let v: String = conn.get(key).await.expect("get");
        assert_eq!(v, "1");
    }

    // Sharing a mode never vouches for a caller the upstream would refuse.
    let r = b
        .send(
            Method::POST,
            "/messages:send",
            &[("authorization", "Basic d3Jvbmc6d3Jvbmc=")],
            SEND_TO_ALICE,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the upstream's answer");
    assert_eq!(r.header("x-modegate-rule"), None);
    assert_eq!(errors(&a, "get") + errors(&b, "get"), 0.0);
}

#[tokio::test]
async fn a_list_of_apps_through_one_replica_is_shared_with_the_other() {
    let redis = RedisServer::start(None).await;
    let (sim, a, b) = pair(&redis);
    assert_eq!(a.get("/apps").await.status, StatusCode::OK);
    let mut conn = redis.connection().await;
    for (app, mode) in [("legacy-app", "CONVERSATION"), ("new-app", "DISPATCH")] {
        let key = format!("modegate:mode:demo-project/{app}");
        let shared: Option<String> = conn.get(&key).await.expect("get");
        assert_eq!(shared.as_deref(), Some(mode), "{key}");
        let pttl: i64 = conn.pttl(&key).await.expect("pttl");
        assert!(pttl > 0 && pttl <= 300_000, "{key}: {pttl}");
    }
    // The other replica decides for both apps from Redis, without a lookup.
    contact_send_rejected(&b).await;
    let legacy = b.post("/messages:send", SEND_LEGACY).await;
    assert_eq!(
        legacy.status,
        StatusCode::OK,
        "a CONVERSATION app's send is forwarded"
    );
    assert_eq!(sim.calls(Op::GetApp), 0, "no replica looked an app up");
    b.state.modes().sync().await;
    assert_eq!(
        source_of(&b, "legacy-app").as_deref(),
        Some("CONVERSATION shared")
    );
    assert_eq!(source_of(&b, "new-app").as_deref(), Some("DISPATCH shared"));
    assert_eq!(errors(&a, "set") + errors(&b, "get"), 0.0);
}

#[tokio::test]
async fn an_app_change_through_one_replica_reaches_the_other_within_a_second() {
    let redis = RedisServer::start(None).await;
    let (sim, a, b) = pair(&redis);
    contact_send_rejected(&a).await;
    contact_send_rejected(&b).await;
    let shared = b.state.shared_cache().expect("shared").clone();
    // The subscription is up once a publication reaches it.
    eventually(Duration::from_secs(5), "b subscribed", || {
        let a = &a;
        let shared = shared.clone();
        async move {
            a.state
                .modes()
                .forget_elsewhere("demo-project", "probe")
                .await;
            shared.invalidations_received() > 0
        }
    })
    .await;
    let before = shared.invalidations_received();

    let started = Instant::now();
    let r = a
        .patch("/apps/new-app", r#"{"processing_mode":"CONVERSATION"}"#)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    eventually(Duration::from_secs(1), "b dropped new-app", || {
        let shared = shared.clone();
        async move { shared.invalidations_received() > before }
    })
    .await;
    let took = started.elapsed();
    println!("invalidation reached the other replica in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let lookups = sim.calls(Op::GetApp);
    let r = b.post("/messages:send", SEND_TO_ALICE).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "CONVERSATION now: a contact_id send is valid"
    );
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    assert_eq!(
        sim.calls(Op::GetApp),
        lookups,
        "the new mode came from what the first replica learned from the PATCH answer"
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_under_traffic_fails_no_request() {
    let mut redis = RedisServer::start(None).await;
    let (sim, a, b) = pair(&redis);
    contact_send_rejected(&a).await;

    redis.kill();
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        // Every local entry dropped: each request must resolve again, through Redis if it can.
        gw.state.modes().apply_invalidation(Invalidation::All).await;
        contact_send_rejected(gw).await;
        let r = gw.post("/messages:send", SEND_LEGACY).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
    }
    let counted = errors(&a, "get") + errors(&b, "get") + errors(&a, "set") + errors(&b, "set");
    assert!(counted > 0.0, "Redis errors are counted");
    assert!(
        counted < 40.0,
        "after a failure Redis is left alone for a backoff, not retried per request: {counted}"
    );

    redis.restart().await;
    // Sharing resumes: what one replica looks up, the other reads from Redis again.
    eventually(Duration::from_secs(20), "sharing resumed", || {
        let (a, b, sim) = (&a, &b, &sim);
        async move {
            a.state.modes().apply_invalidation(Invalidation::All).await;
            b.state.modes().apply_invalidation(Invalidation::All).await;
            contact_send_rejected(a).await;
            let lookups = sim.calls(Op::GetApp);
            contact_send_rejected(b).await;
            sim.calls(Op::GetApp) == lookups
        }
    })
    .await;
    // And so does the subscription (resubscribed with backoff).
    let shared = b.state.shared_cache().expect("shared").clone();
    eventually(Duration::from_secs(20), "b resubscribed", || {
        let a = &a;
        let shared = shared.clone();
        async move {
            let before = shared.invalidations_received();
            a.state
                .modes()
                .forget_elsewhere("demo-project", "probe")
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            shared.invalidations_received() > before
        }
    })
    .await;
}

#[tokio::test]
async fn a_password_in_the_url_works_and_shows_nowhere() {
    let password = "s3cret-redis-pass";
    let redis = RedisServer::start(Some(password)).await;
    let (sim, a, b) = pair(&redis);
    contact_send_rejected(&a).await;
    contact_send_rejected(&b).await;
    assert_eq!(sim.calls(Op::GetApp), 1, "authenticated and shared");
    let shared = a.state.shared_cache().expect("shared");
    assert!(
        !shared.describe().contains(password),
        "{}",
        shared.describe()
    );
    assert!(shared.describe().contains("(password set)"));

    // A wrong password: requests still answered, errors counted, the password nowhere.
    let wrong = format!("redis://:not-{password}@127.0.0.1:{}/0", redis.port);
    let c = InProc::replica(sim.clone(), "", Some(&wrong));
    contact_send_rejected(&c).await;
    let r = c.post("/messages:send", SEND_LEGACY).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(errors(&c, "get") + errors(&c, "set") > 0.0);
    let text = c.metrics();
    assert!(!text.contains(password));
    let apps = format!("{:?}", c.state.modes().known_apps());
    assert!(!apps.contains(password));
}

#[tokio::test]
async fn without_the_key_nothing_is_shared() {
    let sim = Simulator::new(demo_seed());
    let a = InProc::replica(sim.clone(), "", None);
    let b = InProc::replica(sim.clone(), "", None);
    assert!(a.state.shared_cache().is_none());
    contact_send_rejected(&a).await;
    contact_send_rejected(&b).await;
    assert_eq!(sim.calls(Op::GetApp), 2, "each replica learns on its own");
    assert_eq!(errors(&a, "get"), 0.0);
}

/// A child process killed when the test ends, whether it passes or panics.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `modegate serve` with the mode cache shared through the Redis in `MODEGATE_REDIS_URL`;
/// returns the child, its proxy address and its log lines so far.
fn serve_replica(upstream: &str, redis_url: &str) -> (Killed, String, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let dir = support::tls::TempDir::new();
    let config = dir.path().join("modegate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [upstream]\nbase_url = \"{upstream}\"\n\
             [mode_cache]\nredis_url_env = \"MODEGATE_REDIS_URL\"\n"
        ),
    )
    .expect("config");
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_modegate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("MODEGATE_REDIS_URL", redis_url)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let mut lines = BufReader::new(child.0.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let proxy = loop {
        let line = lines.next().expect("a log line").expect("utf-8");
        seen.push(line.clone());
        if let Some(rest) = line.split("listening on ").nth(1) {
            if line.contains("proxy") {
                break rest
                    .split(|c: char| c == '"' || c.is_whitespace())
                    .next()
                    .expect("addr")
                    .to_string();
            }
        }
    };
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    drop(dir);
    (child, proxy, seen)
}

#[tokio::test]
async fn two_serve_processes_share_through_the_url_in_the_environment() {
    let password = "s3cret-redis-pass";
    let redis = RedisServer::start(Some(password)).await;
    let sim = spawn_simulator(demo_seed()).await;
    let (a, proxy_a, log_a) = serve_replica(&sim.url(), &redis.url());
    let (b, proxy_b, _) = serve_replica(&sim.url(), &redis.url());
    let log = log_a.join("\n");
    assert!(log.contains("mode cache shared through Redis"), "{log}");
    assert!(!log.contains(password), "{log}");

    for proxy in [&proxy_a, &proxy_b] {
        let url = format!("http://{proxy}/v1/projects/demo-project/messages:send");
        assert_rejected(&post(&url, SEND_TO_ALICE).await, DISPATCH_RULE);
    }
    assert_eq!(
        sim.simulator.calls(Op::GetApp),
        1,
        "one lookup for two processes"
    );
    drop((a, b));
    sim.stop().await;
}

#[tokio::test]
async fn a_silent_redis_delays_no_request_beyond_its_bound() {
    // Accepts connections and never answers a byte.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("redis://{}/0", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let sim = Simulator::new(demo_seed());
    let gw = InProc::replica(sim.clone(), "", Some(&url));
    for _ in 0..3 {
        gw.state.modes().apply_invalidation(Invalidation::All).await;
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            gw.post("/messages:send", SEND_TO_ALICE),
        )
        .await
        .expect("answered without waiting on Redis");
        assert_rejected(&r, DISPATCH_RULE);
    }
    assert!(errors(&gw, "get") + errors(&gw, "set") > 0.0);
    held.abort();
}

#[tokio::test]
async fn garbage_in_redis_is_counted_and_the_upstream_asked() {
    let redis = RedisServer::start(None).await;
    let mut conn = redis.connection().await;
    let _: () = conn
        .pset_ex("modegate:mode:demo-project/new-app", "SIDEWAYS", 60_000)
        .await
        .expect("set");
    let sim = Simulator::new(demo_seed());
    let gw = InProc::replica(sim.clone(), "", Some(&redis.url()));
    // The caller's credential is verified by a lookup of another app first; a credential not
    // yet seen to work is always checked upstream, whatever Redis holds.
    assert_eq!(
        gw.post("/messages:send", SEND_LEGACY).await.status,
        StatusCode::OK
    );
    assert_eq!(sim.calls(Op::GetApp), 1);
    contact_send_rejected(&gw).await;
    assert_eq!(
        sim.calls(Op::GetApp),
        2,
        "the garbled entry was not trusted"
    );
    assert_eq!(errors(&gw, "get"), 1.0);
    let fixed: String = conn
        .get("modegate:mode:demo-project/new-app")
        .await
        .expect("get");
    assert_eq!(fixed, "DISPATCH", "the lookup's answer replaced it");
}
