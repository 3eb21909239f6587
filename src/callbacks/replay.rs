//! The nonce replay cache: in-process (moka, bounded, entries expire after the timestamp window
//! has passed), and shared by replicas through Redis (`SET NX` with an expiry) when
//! `mode_cache.redis_url_env` is set.
//!
//! A nonce is reserved while its delivery is in flight and counts as seen once the target
//! answered 2xx; a failed delivery (or one abandoned because the sender hung up) frees it, so
//! the sender's retry of the same callback gets through. When Redis cannot be asked the callback
//! is refused 503 (the sender retries later): a replica alone cannot tell whether another one
//! saw the nonce.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::shared_cache::{RedisTarget, OP_TIMEOUT};

/// Most nonces one webhook remembers in-process (at Sinch's default 25 callbacks a second per
/// app, a 300 s window holds 15 000 per app).
const MAX_LOCAL_NONCES: u64 = 1_000_000;

/// Why a nonce cannot be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before, or in flight.
    Replayed,
    /// The shared cache did not answer.
    Unavailable,
}

/// Nonces shared through Redis.
pub struct SharedNonces {
    connection: ConnectionManager,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SharedNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedNonces").finish_non_exhaustive()
    }
}

impl SharedNonces {
    /// Connects lazily to `target` (Redis need not be up at start). Inside a Tokio runtime.
    pub fn new(target: &RedisTarget, metrics: Arc<Metrics>) -> Result<Arc<SharedNonces>, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(target.client(), config)
            .map_err(|e| format!("Redis client: {:?}", e.kind()))?;
        Ok(Arc::new(SharedNonces {
            connection,
            metrics,
        }))
    }

    async fn run<T>(&self, op: &'static str, cmd: redis::Cmd) -> Result<T, ReplayError>
    where
        T: redis::FromRedisValue,
    {
        let mut conn = self.connection.clone();
        match tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.metrics.shared_cache_error(op);
                tracing::warn!(error = %e, "callback nonce cache: Redis failed");
                Err(ReplayError::Unavailable)
            }
            Err(_) => {
                self.metrics.shared_cache_error(op);
                tracing::warn!("callback nonce cache: Redis did not answer in time");
                Err(ReplayError::Unavailable)
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// One webhook's replay cache.
pub struct ReplayGuard {
    path: String,
    local: moka::future::Cache<[u8; 32], ()>,
    shared: Option<Arc<SharedNonces>>,
    /// How long a delivered nonce is remembered: until no timestamp it could carry is inside
    /// the window any more.
    seen_for: Duration,
    /// How long an in-flight reservation holds in Redis if its replica dies mid-delivery.
    pending_for: Duration,
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReplayGuard {
    /// A cache for the webhook at `path`, whose window is `max_skew` either side of now and
    /// whose deliveries take at most `timeout`.
    pub fn new(
        path: &str,
        max_skew: Duration,
        timeout: Duration,
        shared: Option<Arc<SharedNonces>>,
    ) -> Arc<ReplayGuard> {
        // A timestamp up to max_skew ahead stays acceptable until 2 × max_skew from now.
        let seen_for = max_skew * 2 + Duration::from_secs(1);
        Arc::new(ReplayGuard {
            path: path.to_string(),
            local: moka::future::Cache::builder()
                .max_capacity(MAX_LOCAL_NONCES)
                .time_to_live(seen_for)
                .build(),
            shared,
            seen_for,
            pending_for: timeout + Duration::from_secs(30),
        })
    }

    fn key(&self, nonce: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.path.as_bytes());
        h.update([0]);
        h.update(nonce.as_bytes());
        h.finalize().into()
    }

    /// Reserves `nonce` for one delivery.
    pub async fn reserve(self: &Arc<Self>, nonce: &str) -> Result<Reservation, ReplayError> {
        let key = self.key(nonce);
        if !self.local.entry(key).or_insert(()).await.is_fresh() {
            return Err(ReplayError::Replayed);
        }
        if let Some(shared) = &self.shared {
            let mut cmd = redis::cmd("SET");
            cmd.arg(redis_key(&key))
                .arg("pending")
                .arg("NX")
                .arg("PX")
                .arg(millis(self.pending_for));
            let taken = match shared.run::<Option<String>>("set", cmd).await {
                Ok(Some(_)) => None,
                // Another replica holds it (in flight or delivered).
                Ok(None) => Some(ReplayError::Replayed),
                Err(e) => Some(e),
            };
            if let Some(e) = taken {
                // Only the local reservation is this replica's to free.
                self.local.invalidate(&key).await;
                return Err(e);
            }
        }
        Ok(Reservation {
            guard: self.clone(),
            key,
            open: true,
        })
    }
}

fn redis_key(key: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(15 + 64);
    s.push_str("modegate:nonce:");
    for b in key {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A nonce reserved for one delivery: [`confirm`](Reservation::confirm) it after a 2xx, or let
/// it go ([`release`](Reservation::release), or drop) to free the nonce.
pub struct Reservation {
    guard: Arc<ReplayGuard>,
    key: [u8; 32],
    open: bool,
}

impl Reservation {
    /// The delivery succeeded: the nonce is seen for the rest of its window.
    pub async fn confirm(mut self) {
        self.open = false;
        if let Some(shared) = &self.guard.shared {
            let mut cmd = redis::cmd("SET");
            cmd.arg(redis_key(&self.key))
                .arg("seen")
                .arg("PX")
                .arg(millis(self.guard.seen_for));
            let _ = shared.run::<()>("set", cmd).await;
        }
    }

    /// The delivery failed: the nonce may come again.
    pub async fn release(mut self) {
        self.open = false;
        free(self.guard.clone(), self.key).await;
    }
}

async fn free(guard: Arc<ReplayGuard>, key: [u8; 32]) {
    guard.local.invalidate(&key).await;
    if let Some(shared) = &guard.shared {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(redis_key(&key));
        let _ = shared.run::<()>("set", cmd).await;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Abandoned mid-delivery (the sender hung up): free the nonce for its retry.
        if self.open {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(free(self.guard.clone(), self.key));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Arc<ReplayGuard> {
        ReplayGuard::new("/e", Duration::from_secs(300), Duration::from_secs(1), None)
    }

    #[tokio::test]
    async fn a_confirmed_nonce_is_refused_and_a_released_one_comes_again() {
        let g = guard();
        let r = g.reserve("n1").await.expect("first");
        assert_eq!(g.reserve("n1").await.err(), Some(ReplayError::Replayed));
        r.release().await;
        let r = g.reserve("n1").await.expect("after a failed delivery");
        r.confirm().await;
        assert_eq!(g.reserve("n1").await.err(), Some(ReplayError::Replayed));
        assert!(g.reserve("n2").await.is_ok());
    }

    #[tokio::test]
    async fn an_abandoned_reservation_frees_its_nonce() {
        let g = guard();
        drop(g.reserve("n").await.expect("first"));
        let mut again = None;
        for _ in 0..200 {
            if let Ok(r) = g.reserve("n").await {
                again = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(again.is_some(), "freed");
    }

    #[tokio::test]
    async fn webhooks_do_not_share_nonces() {
        let a = guard();
        let b = ReplayGuard::new(
            "/other",
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        );
        a.reserve("n").await.expect("a").confirm().await;
        assert!(b.reserve("n").await.is_ok());
        assert!(redis_key(&a.key("n")).starts_with("modegate:nonce:"));
        assert!(!redis_key(&a.key("n")).contains("n\0"));
    }
}
