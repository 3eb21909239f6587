//! The mode cache's second level, shared by replicas through Redis (`mode_cache.redis_url_env`).
//!
//! - **Modes**: a mode one replica learned is written to `modegate:mode:{project}/{app}` with
//!   its remaining freshness as the key's expiry; a replica whose local entry is missing or
//!   stale reads it there before it asks the upstream, and counts its age from the key's
//!   remaining time (no wall clocks compared).
//! - **Credentials**: in passthrough auth a credential seen to work for a project is recorded as
//!   `modegate:credential:{sha256}` — the fingerprint the local gate keeps, never the header —
//!   so another replica need not look the app up again just to vouch for the same caller. A
//!   credential nobody has seen work is still checked upstream, and a refused one is never
//!   recorded.
//! - **Invalidation**: an app update or delete seen by one replica deletes the shared mode and
//!   is published on `modegate:invalidate`; every other replica drops the app at once. After a
//!   lost subscription is re-established every local entry is dropped, since an invalidation
//!   may have been missed meanwhile.
//!
//! Redis is never on a request's critical path for longer than [`OP_TIMEOUT`]: a failed, slow
//! or garbled answer counts `modegate_shared_cache_errors_total{op}` and the replica carries on
//! with its own cache (and the upstream). After a failure the replica leaves Redis alone for a
//! backoff that doubles up to [`MAX_BACKOFF`]; the client library reconnects, and the
//! subscription task resubscribes with the same backoff.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::domain::{valid_id, ProcessingMode, SharedCacheOp as Op};
use crate::metrics::Metrics;

/// Longest a request waits on Redis for one operation.
pub const OP_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest pause before Redis is tried again after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How often the subscription is checked with a PING.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(5);
/// The channel invalidations are published on.
pub const CHANNEL: &str = "modegate:invalidate";

/// A Redis URL read from the environment: parsed, with a description safe to print.
#[derive(Clone)]
pub struct RedisTarget {
    client: redis::Client,
    described: String,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl RedisTarget {
    /// Parses `url` (`redis://`, `rediss://`, `redis+unix://` or `unix://`).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let url = url.trim();
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://")
            || !matches!(
                scheme,
                "redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys"
            )
        {
            return Err(
                "not a Redis URL (expected redis://[:password@]host[:port][/db] or rediss://…)"
                    .into(),
            );
        }
        // The library's message may quote the URL; this one never does.
        let client = redis::Client::open(url)
            .map_err(|e| format!("not a usable Redis URL ({:?})", e.kind()))?;
        let info = client.get_connection_info();
        let settings = info.redis_settings();
        let described = format!(
            "{}://{}/{}{}",
            if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                "rediss"
            } else {
                scheme
            },
            info.addr(),
            settings.db(),
            if settings.password().is_some() {
                " (password set)"
            } else {
                ""
            }
        );
        Ok(RedisTarget { client, described })
    }

    /// Where it points, with any password left out.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// A client for it (connections are made by the caller).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }
}

/// A dropped app (or, after a lost subscription, everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// One app.
    App {
        /// Project id.
        project: String,
        /// App id.
        app: String,
    },
    /// Every app: invalidations may have been missed.
    All,
}

/// Consecutive failures and when Redis may be tried again.
#[derive(Debug)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    fn pause(failures: u32) -> Duration {
        MIN_BACKOFF
            .saturating_mul(1u32 << failures.min(10))
            .min(MAX_BACKOFF)
    }
}

/// The shared second level.
pub struct SharedModes {
    target: RedisTarget,
    connection: ConnectionManager,
    metrics: Arc<Metrics>,
    /// Tells this replica's own publications from the others'.
    instance: String,
    backoff: Mutex<Backoff>,
    /// Invalidations received (for tests and logs).
    received: AtomicU64,
}

impl std::fmt::Debug for SharedModes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedModes")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn mode_key(project: &str, app: &str) -> String {
    format!("modegate:mode:{project}/{app}")
}

fn credential_key(fingerprint: &[u8; 32]) -> String {
    let mut key = String::with_capacity(20 + 64);
    key.push_str("modegate:credential:");
    for b in fingerprint {
        // Writing to a String cannot fail.
        let _ = write!(key, "{b:02x}");
    }
    key
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SharedModes {
    /// A shared level on `target`. Connects lazily: Redis need not be up when the gateway
    /// starts. Must be called inside a Tokio runtime.
    pub fn new(target: RedisTarget, metrics: Arc<Metrics>) -> Result<Arc<SharedModes>, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(MAX_BACKOFF);
        let connection = ConnectionManager::new_lazy_with_config(target.client.clone(), config)
            .map_err(|e| format!("Redis client: {:?}", e.kind()))?;
        Ok(Arc::new(SharedModes {
            target,
            connection,
            metrics,
            instance: crate::ids::hex_id(),
            backoff: Mutex::new(Backoff {
                failures: 0,
                until: None,
            }),
            received: AtomicU64::new(0),
        }))
    }

    /// Where it points, with any password left out.
    pub fn describe(&self) -> &str {
        self.target.describe()
    }

    /// Invalidations received from other replicas so far.
    pub fn invalidations_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn available(&self) -> bool {
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        b.until.is_none_or(|until| Instant::now() >= until)
    }

    fn succeeded(&self) {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if b.failures > 0 {
            tracing::info!("shared mode cache reachable again");
        }
        b.failures = 0;
        b.until = None;
    }

    fn failed(&self, op: Op, error: &dyn std::fmt::Display) {
        self.metrics.shared_cache_error(op.as_str());
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if b.failures == 0 {
            tracing::warn!(op = op.as_str(), error = %error, "shared mode cache unavailable; using the local cache");
        }
        b.until = Some(Instant::now() + Backoff::pause(b.failures));
        b.failures = b.failures.saturating_add(1);
    }

    /// Runs one bounded operation; `None` when Redis is backing off, failed or was too slow.
    async fn run<T, F>(&self, op: Op, f: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.available() {
            return None;
        }
        match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(op, &e);
                None
            }
            Err(_) => {
                self.failed(op, &format_args!("no answer within {OP_TIMEOUT:?}"));
                None
            }
        }
    }

    /// The shared mode of an app and how long it stays fresh.
    pub async fn mode(&self, project: &str, app: &str) -> Option<(ProcessingMode, Duration)> {
        let key = mode_key(project, app);
        let mut conn = self.connection.clone();
        let (value, pttl): (Option<String>, i64) = self
            .run(Op::Get, async {
                redis::pipe()
                    .get(&key)
                    .pttl(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let value = value?;
        match (value.parse::<ProcessingMode>(), u64::try_from(pttl)) {
            (Ok(mode), Ok(ms)) if ms > 0 => Some((mode, Duration::from_millis(ms))),
            _ => {
                // Not what a replica writes: counted, ignored, and asked upstream instead.
                self.metrics.shared_cache_error(Op::Get.as_str());
                None
            }
        }
    }

    /// Shares the modes of a project's apps, each fresh for `fresh_for`: one pipeline, so a
    /// list of apps costs one bounded round trip, not one per app.
    pub async fn put_modes(
        &self,
        project: &str,
        modes: &[(&str, ProcessingMode)],
        fresh_for: Duration,
    ) {
        if fresh_for.is_zero() || modes.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (app, mode) in modes {
            pipe.pset_ex(mode_key(project, app), mode.as_str(), millis(fresh_for))
                .ignore();
        }
        let mut conn = self.connection.clone();
        let _: Option<()> = self
            .run(Op::Set, async { pipe.query_async(&mut conn).await })
            .await;
    }

    /// Whether another replica saw this credential fingerprint work.
    pub async fn credential_seen(&self, fingerprint: &[u8; 32]) -> bool {
        let mut conn = self.connection.clone();
        let key = credential_key(fingerprint);
        self.run(Op::Get, async { conn.exists::<_, bool>(&key).await })
            .await
            .unwrap_or(false)
    }

    /// Shares that a credential fingerprint worked, for `keep`.
    pub async fn put_credential(&self, fingerprint: &[u8; 32], keep: Duration) {
        let mut conn = self.connection.clone();
        let key = credential_key(fingerprint);
        let _: Option<()> = self
            .run(Op::Set, async {
                conn.pset_ex(&key, "1", millis(keep)).await
            })
            .await;
    }

    /// Deletes the shared mode of an app and tells every other replica to drop it.
    pub async fn invalidate(&self, project: &str, app: &str) {
        let mut conn = self.connection.clone();
        let key = mode_key(project, app);
        let message = format!("{} {project}/{app}", self.instance);
        let _: Option<()> = self
            .run(Op::Publish, async {
                redis::pipe()
                    .del(&key)
                    .ignore()
                    .publish(CHANNEL, &message)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await;
    }

    /// Parses a published invalidation; `None` for this replica's own or a malformed one.
    fn parse_message(&self, payload: &[u8]) -> Result<Option<Invalidation>, ()> {
        let text = std::str::from_utf8(payload).map_err(|_| ())?;
        let (instance, target) = text.split_once(' ').ok_or(())?;
        let (project, app) = target.split_once('/').ok_or(())?;
        if !valid_id(project) || !valid_id(app) {
            return Err(());
        }
        if instance == self.instance {
            return Ok(None);
        }
        Ok(Some(Invalidation::App {
            project: project.to_string(),
            app: app.to_string(),
        }))
    }

    /// Holds the invalidation subscription until `self` is dropped, handing each invalidation
    /// to `apply`; resubscribes with backoff after any failure.
    pub fn subscribe<F, Fut>(self: &Arc<Self>, apply: F)
    where
        F: Fn(Invalidation) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let weak = Arc::downgrade(self);
        tokio::spawn(subscription(weak, apply));
    }
}

/// One subscription after another, until the shared level is gone.
async fn subscription<F, Fut>(shared: Weak<SharedModes>, apply: F)
where
    F: Fn(Invalidation) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut failures = 0u32;
    let mut lost = false;
    loop {
        let Some(this) = shared.upgrade() else {
            return;
        };
        let client = this.target.client.clone();
        drop(this);
        let outcome = tokio::time::timeout(Duration::from_secs(2), async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let pubsub = match outcome {
            Ok(Ok(pubsub)) => pubsub,
            other => {
                let Some(this) = shared.upgrade() else {
                    return;
                };
                let error = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 2s".to_string(),
                };
                if failures == 0 {
                    tracing::warn!(error = %error, "shared mode cache: cannot subscribe to invalidations; retrying");
                }
                this.metrics.shared_cache_error(Op::Subscribe.as_str());
                drop(this);
                tokio::time::sleep(Backoff::pause(failures)).await;
                failures = failures.saturating_add(1);
                lost = true;
                continue;
            }
        };
        if lost {
            // Invalidations published meanwhile were missed: start over from Redis/upstream.
            tracing::info!("shared mode cache: resubscribed; dropping local modes learned before");
            apply(Invalidation::All).await;
        }
        failures = 0;
        lost = true;
        listen(&shared, pubsub, &apply).await;
    }
}

/// Reads one subscription until it fails (or the shared level is gone).
async fn listen<F, Fut>(shared: &Weak<SharedModes>, pubsub: redis::aio::PubSub, apply: &F)
where
    F: Fn(Invalidation) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::StreamExt;
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(this) = shared.upgrade() else { return };
                let Some(message) = message else {
                    this.metrics.shared_cache_error(Op::Subscribe.as_str());
                    tracing::warn!("shared mode cache: subscription lost; resubscribing");
                    return;
                };
                match this.parse_message(message.get_payload_bytes()) {
                    Ok(Some(invalidation)) => {
                        drop(this);
                        apply(invalidation).await;
                        if let Some(this) = shared.upgrade() {
                            this.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(None) => {}
                    Err(()) => this.metrics.shared_cache_error(Op::Subscribe.as_str()),
                }
            }
            _ = ping.tick() => {
                let Some(this) = shared.upgrade() else { return };
                let alive = tokio::time::timeout(OP_TIMEOUT * 10, sink.ping::<String>()).await;
                if !matches!(alive, Ok(Ok(_))) {
                    this.metrics.shared_cache_error(Op::Subscribe.as_str());
                    tracing::warn!("shared mode cache: subscription unresponsive; resubscribing");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_described_without_their_password() {
        let t = RedisTarget::parse("redis://:s3cret-pass@10.0.0.5:6380/2").expect("url");
        assert_eq!(t.describe(), "redis://10.0.0.5:6380/2 (password set)");
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = RedisTarget::parse("redis://cache").expect("url");
        assert_eq!(t.describe(), "redis://cache:6379/0");
        for bad in ["", "cache:6379", "http://cache:6379", "redis://"] {
            let e = RedisTarget::parse(bad).expect_err(bad);
            assert!(e.contains("Redis URL"), "{bad}: {e}");
        }
        let e = RedisTarget::parse("http://user:hunter2@cache").expect_err("http");
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(Backoff::pause(0), MIN_BACKOFF);
        assert_eq!(Backoff::pause(1), MIN_BACKOFF * 2);
        assert_eq!(Backoff::pause(30), MAX_BACKOFF);
    }

    #[test]
    fn credential_keys_hold_a_fingerprint_only() {
        let key = credential_key(&[0xab; 32]);
        assert_eq!(key.len(), "modegate:credential:".len() + 64);
        assert!(key.ends_with("abab"));
    }
}
