//! Each app's processing mode, learned and cached.
//!
//! A read-through cache keyed by project and app id. One moka cache keeps each app for
//! `ttl + stale_if_error` (bounded by `max_apps`); the entry's own age says whether it is fresh:
//! - **fresh** entries (younger than `ttl_secs`) answer without I/O (`hit`);
//! - otherwise one coalesced upstream `GET app` per key reloads it (`miss`), however many
//!   requests wait for it (moka's `try_get_with` on a small in-flight cache);
//! - when that lookup fails, the kept entry is served while it is younger than
//!   `ttl + stale_if_error` (`stale`);
//! - with nothing to serve the result is `error` and `policy.unknown_mode` decides.
//!
//! **No mode leaks:** in passthrough auth a caller's credential must have been seen to succeed
//! for the project (a SHA-256 fingerprint, never the header itself, remembered for
//! `ttl + stale_if_error`) before any mode-based decision is made for it. An unverified
//! credential is verified by the lookup itself (coalesced per credential); if upstream answers
//! 401 / 403 / 404, the request is forwarded untouched and upstream answers it.
//!
//! The cache also learns passively from app responses that pass through, and forgets an app on
//! its PATCH / DELETE. Per-project tallies of cached modes tie calls that name no app to a mode.
//!
//! With a shared level ([`crate::shared_cache`]) a local miss asks Redis before the upstream,
//! every mode and verified credential learned here is shared, and a forgotten app is forgotten
//! by every replica. Coalescing stays per replica.
//!
//! Here: the read-through cache and what it learns and forgets. Beside it: the lookup it loads
//! through (`lookup`), the credential gate with its shared level (`credentials`) and the
//! per-project tallies (`tallies`).

mod credentials;
mod lookup;
mod tallies;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use moka::future::Cache;

use crate::clock::Clock;
use crate::config::ModeCacheSettings;
pub use crate::credentials::CredentialCheck;
pub use crate::domain::KnownApp;
pub use crate::domain::{valid_id, ModeSource, Resolution};
use crate::domain::{CacheResult, ProcessingMode};
use crate::generations::Generations;
use crate::metrics::Metrics;
use crate::shared_cache::{Invalidation, SharedModes};
use credentials::Credentials;
pub use lookup::{BoxFuture, CachedMode, LookupOutcome, ModeLookup};
use tallies::ProjectTallies;

fn key(project: &str, app: &str) -> String {
    let project = crate::domain::project_key(project);
    let mut k = String::with_capacity(project.len() + app.len() + 1);
    k.push_str(&project);
    k.push('/');
    k.push_str(app);
    k
}

/// The mode cache.
pub struct ModeCache {
    /// Every known app, kept for `ttl + stale_if_error`.
    entries: Cache<String, CachedMode>,
    /// Loads in flight (and for a moment after), so concurrent misses share one lookup.
    inflight: Cache<String, CachedMode>,
    /// Credentials seen to work, here and (with a shared level) in every replica.
    credentials: Credentials,
    /// Which modes each project's cached apps have.
    tallies: Arc<ProjectTallies>,
    clock: Clock,
    /// `ttl + stale_if_error`: how long an entry may be served at all.
    keep: Duration,
    ttl: Duration,
    lookup: Arc<dyn ModeLookup>,
    metrics: Arc<Metrics>,
    /// The replicas' shared level, if any.
    shared: Option<Arc<SharedModes>>,
    /// What was changed when, so no answer older than a change is learned.
    generations: Generations,
}

impl std::fmt::Debug for ModeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModeCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ModeCache {
    /// A cache with `settings`, loading through `lookup`.
    pub fn new(
        settings: &ModeCacheSettings,
        lookup: Arc<dyn ModeLookup>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        let ttl = settings.ttl;
        let keep = (ttl + settings.stale_if_error).max(Duration::from_millis(1));
        // Long enough to share one lookup among concurrent misses, never longer than the TTL
        // (a zero TTL disables caching; a millisecond still lets concurrent misses coalesce).
        let coalesce = ttl
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        let tallies = Arc::new(ProjectTallies::new(settings.max_apps, ttl));
        let listener = {
            let tallies = tallies.clone();
            let metrics = metrics.clone();
            move |k: Arc<String>, v: CachedMode, _cause| {
                let project = k.split('/').next().unwrap_or_default();
                tallies.uncount(project, v.mode);
                metrics.add_cached_apps(v.mode, -1);
            }
        };
        ModeCache {
            entries: Cache::builder()
                .max_capacity(settings.max_apps)
                .time_to_live(keep)
                .eviction_listener(listener)
                .build(),
            inflight: Cache::builder()
                .max_capacity(1_024)
                .time_to_live(coalesce)
                .build(),
            credentials: Credentials::new(settings.max_apps.max(1024), keep),
            tallies,
            clock,
            keep,
            ttl: settings.ttl,
            lookup,
            metrics,
            shared: None,
            generations: Generations::new(settings.max_apps),
        }
    }

    /// This cache with a shared second level (`None`: local only).
    pub fn with_shared(mut self, shared: Option<Arc<SharedModes>>) -> Self {
        self.credentials.share_with(shared.clone());
        self.shared = shared;
        self
    }

    async fn insert(
        &self,
        project: &str,
        app: &str,
        mode: ProcessingMode,
        source: ModeSource,
    ) -> CachedMode {
        self.insert_aged(project, app, mode, source, Duration::ZERO)
            .await
    }

    /// Inserts an entry learned `age` ago.
    async fn insert_aged(
        &self,
        project: &str,
        app: &str,
        mode: ProcessingMode,
        source: ModeSource,
        age: Duration,
    ) -> CachedMode {
        let k = key(project, app);
        let now = self.clock.now();
        let entry = CachedMode {
            mode,
            source,
            at: now.checked_sub(age).unwrap_or(now),
        };
        self.tallies.count(project, app, mode);
        self.metrics.add_cached_apps(mode, 1);
        // The listener sees a replaced entry and un-counts it.
        self.entries.insert(k, entry).await;
        entry
    }

    /// Records that `authorization` succeeded for `project`, sharing it the first time (a list
    /// of apps teaches one mode per app, but vouches for its caller once).
    pub async fn mark_verified(&self, project: &str, authorization: Option<&HeaderValue>) {
        self.credentials.mark_verified(project, authorization).await;
    }

    /// Caches a mode learned here and shares it with the other replicas.
    async fn remember(
        &self,
        project: &str,
        app: &str,
        mode: ProcessingMode,
        source: ModeSource,
    ) -> CachedMode {
        let entry = self.insert(project, app, mode, source).await;
        if let Some(shared) = &self.shared {
            shared.put_modes(project, &[(app, mode)], self.ttl).await;
        }
        entry
    }

    /// A ticket for a request that may teach modes (see [`Generations`]).
    pub fn ticket(&self) -> u64 {
        self.generations.ticket()
    }

    /// Marks an app as changed now (its update's answer is being learned).
    pub fn changed(&self, project: &str, app: &str) {
        self.generations.bump(&key(project, app));
    }

    /// Learns the modes of several apps from one answer (a list of apps): cached here, then
    /// shared in one round trip. Ids that are not plain ids are skipped.
    pub async fn learn_all(
        &self,
        project: &str,
        apps: &[(&str, ProcessingMode)],
        authorization: Option<&HeaderValue>,
        ticket: u64,
    ) {
        if !valid_id(project) {
            return;
        }
        let apps: Vec<(&str, ProcessingMode)> = apps
            .iter()
            .copied()
            .filter(|(app, _)| {
                valid_id(app) && self.generations.current(&key(project, app), ticket)
            })
            .collect();
        if apps.is_empty() {
            return;
        }
        for (app, mode) in &apps {
            self.insert(project, app, *mode, ModeSource::Learned).await;
        }
        if let Some(shared) = &self.shared {
            shared.put_modes(project, &apps, self.ttl).await;
        }
        self.mark_verified(project, authorization).await;
    }

    /// Forgets one app (PATCH / DELETE through the gateway, or the admin endpoint), here and
    /// in every replica sharing the cache.
    pub async fn forget(&self, project: &str, app: &str) {
        self.forget_here(project, app).await;
        self.forget_elsewhere(project, app).await;
    }

    /// Tells the replicas sharing the cache to forget one app (after its update or delete
    /// succeeded, so none keeps a mode it looked up meanwhile).
    pub async fn forget_elsewhere(&self, project: &str, app: &str) {
        if let Some(shared) = &self.shared {
            shared.invalidate(project, app).await;
        }
    }

    async fn forget_here(&self, project: &str, app: &str) {
        let k = key(project, app);
        self.generations.bump(&k);
        self.entries.invalidate(&k).await;
        self.inflight.invalidate(&k).await;
    }

    /// Applies an invalidation another replica published.
    pub async fn apply_invalidation(&self, invalidation: Invalidation) {
        match invalidation {
            Invalidation::App { project, app } => self.forget_here(&project, &app).await,
            Invalidation::All => {
                // Pins are not cached here; everything cached was learned and may be stale.
                self.entries.invalidate_all();
                self.inflight.invalidate_all();
                self.entries.run_pending_tasks().await;
            }
        }
    }

    /// Ensures the caller's credential has been seen to work for `project`, verifying it with
    /// a lookup of `app` when not. `Ok(true)` when this call performed the lookup.
    async fn verify(
        &self,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<bool, LookupOutcome> {
        self.credentials
            .verify(project, authorization, async {
                self.load(project, app, authorization).await.map(|_| ())
            })
            .await
    }

    /// One upstream lookup of `app`; a found mode is cached (source `lookup`) and shared.
    async fn load(
        &self,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<CachedMode, LookupOutcome> {
        let ticket = self.generations.ticket();
        match self
            .lookup
            .app_mode(project, app, authorization.cloned())
            .await
        {
            // An answer older than a change is used for this request, never cached.
            LookupOutcome::Found(mode) if !self.generations.current(&key(project, app), ticket) => {
                let at = self.clock.now();
                Ok(CachedMode {
                    mode,
                    source: ModeSource::Lookup,
                    at,
                })
            }
            LookupOutcome::Found(mode) => {
                Ok(self.remember(project, app, mode, ModeSource::Lookup).await)
            }
            other => Err(other),
        }
    }

    /// The shared level's fresh mode of `app`, cached here with its age (source `shared`).
    async fn load_shared(&self, project: &str, app: &str) -> Option<CachedMode> {
        let (mode, fresh_for) = self.shared.as_ref()?.mode(project, app).await?;
        let age = self.ttl.saturating_sub(fresh_for);
        Some(
            self.insert_aged(project, app, mode, ModeSource::Shared, age)
                .await,
        )
    }

    /// Resolves the mode of `app`. `pinned` is a `[[policy.app]]` static mode;
    /// `verify_credentials` is true in passthrough auth. The lookup is counted once, from what
    /// [`ModeCache::resolution`] found.
    pub async fn resolve(
        &self,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
        pinned: Option<ProcessingMode>,
        verify_credentials: bool,
    ) -> Resolution {
        let (resolution, counted) = self
            .resolution(project, app, authorization, pinned, verify_credentials)
            .await;
        if let Some(result) = counted {
            self.metrics.cache_lookup(result);
        }
        resolution
    }

    /// [`ModeCache::resolve`], and how the lookup counts in
    /// `modegate_mode_cache_lookups_total` (`None`: not a cache lookup — a refused credential).
    async fn resolution(
        &self,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
        pinned: Option<ProcessingMode>,
        verify_credentials: bool,
    ) -> (Resolution, Option<CacheResult>) {
        const UNAVAILABLE: (Resolution, Option<CacheResult>) =
            (Resolution::Unavailable, Some(CacheResult::Error));
        let known = |mode, result| (Resolution::Known(mode, result), Some(result));
        let mut loaded = false;
        if verify_credentials {
            match self.verify(project, app, authorization).await {
                Ok(l) => loaded = l,
                Err(LookupOutcome::Denied(_)) => return (Resolution::Untouched, None),
                Err(_) => {
                    // The credential cannot be vouched for: no stale mode for it either.
                    return if pinned.is_some() {
                        (Resolution::Untouched, None)
                    } else {
                        UNAVAILABLE
                    };
                }
            }
        }
        if let Some(mode) = pinned {
            return known(mode, CacheResult::Hit);
        }
        let k = key(project, app);
        let kept = self.entries.get(&k).await;
        if let Some(entry) = kept.filter(|e| self.clock.since(e.at) < self.ttl) {
            let result = if loaded {
                CacheResult::Miss
            } else {
                CacheResult::Hit
            };
            return known(entry.mode, result);
        }
        // A coalesced answer is shared only while it is younger than the TTL (by this cache's
        // clock): an older one would hand out a mode the TTL says to look up again.
        if let Some(shared) = self.inflight.get(&k).await {
            if self.ttl.is_zero() || self.clock.since(shared.at) >= self.ttl {
                self.inflight.invalidate(&k).await;
            }
        }
        let ran = AtomicBool::new(false);
        // Boxed, as the credential check: only a miss pays for the coalescing future.
        let result = Box::pin(self.inflight.try_get_with(k.clone(), async {
            if let Some(entry) = self.load_shared(project, app).await {
                return Ok(entry);
            }
            ran.store(true, Ordering::Relaxed);
            self.load(project, app, authorization).await
        }))
        .await;
        match result {
            Ok(entry) => {
                let r = if ran.load(Ordering::Relaxed) || loaded {
                    CacheResult::Miss
                } else {
                    CacheResult::Hit
                };
                known(entry.mode, r)
            }
            Err(e) => match *e {
                LookupOutcome::Denied(_) => (Resolution::Untouched, Some(CacheResult::Miss)),
                // The kept entry may be served while it is within ttl + stale_if_error.
                _ => match kept.filter(|e| self.clock.since(e.at) < self.keep) {
                    Some(entry) => known(entry.mode, CacheResult::Stale),
                    None => UNAVAILABLE,
                },
            },
        }
    }

    /// The mode shared by every cached app of `project`, and one of those apps (used to verify
    /// credentials for calls that name no app).
    pub fn project_mode(&self, project: &str) -> Option<(ProcessingMode, String)> {
        self.tallies.project_mode(project)
    }

    /// Whether `authorization` has been seen to work for `project` (no lookup is made).
    pub fn credential_seen(&self, project: &str, authorization: Option<&HeaderValue>) -> bool {
        self.credentials.seen(project, authorization)
    }

    /// Records that `project`'s whole app list was just seen (a list-apps answer), so what the
    /// cache knows of it is, for the TTL, everything there is.
    pub async fn mark_listed(&self, project: &str) {
        self.tallies.mark_listed(project).await;
    }

    /// Whether `project` has, or may have, an app in `mode`: false only when its whole app list
    /// was seen within the TTL and none of its apps is in that mode.
    pub fn may_have(&self, project: &str, mode: ProcessingMode) -> bool {
        self.tallies.may_have(project, mode)
    }

    /// Checks a caller's credential for `project`, with a lookup of `app` when it has not been
    /// seen to work yet.
    pub async fn check_credential(
        &self,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
    ) -> CredentialCheck {
        match self.verify(project, app, authorization).await {
            Ok(_) => CredentialCheck::Verified,
            Err(LookupOutcome::Denied(_)) => CredentialCheck::Refused,
            Err(_) => {
                self.metrics.cache_lookup(CacheResult::Error);
                CredentialCheck::Unverifiable
            }
        }
    }

    /// Every cached app, for `GET /apps`.
    pub fn known_apps(&self) -> Vec<KnownApp> {
        let mut apps: Vec<KnownApp> = self
            .entries
            .iter()
            .filter_map(|(k, v)| {
                let (project, app) = k.split_once('/')?;
                let age = self.clock.since(v.at);
                Some(KnownApp {
                    project_id: project.to_string(),
                    app_id: app.to_string(),
                    mode: v.mode,
                    source: v.source.as_str(),
                    age_secs: age.as_secs(),
                    fresh: age < self.ttl,
                })
            })
            .collect();
        apps.sort_by(|a, b| (&a.project_id, &a.app_id).cmp(&(&b.project_id, &b.app_id)));
        apps
    }

    /// Runs pending cache maintenance (evictions and their notifications); for tests and admin.
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
        self.inflight.run_pending_tasks().await;
        self.credentials.sync().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LookupFailure;
    use http::StatusCode;
    use std::sync::atomic::AtomicUsize;
    use std::sync::RwLock;

    struct Scripted {
        calls: AtomicUsize,
        answer: RwLock<LookupOutcome>,
        delay: Duration,
    }

    impl ModeLookup for Scripted {
        fn app_mode(&self, _: &str, _: &str, _: Option<HeaderValue>) -> BoxFuture<LookupOutcome> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = *self.answer.read().expect("lock");
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer
            })
        }
    }

    fn settings(ttl: Duration) -> ModeCacheSettings {
        ModeCacheSettings {
            ttl,
            stale_if_error: Duration::from_secs(60),
            max_apps: 1000,
            max_messages: 0,
            message_ttl: Duration::from_secs(60),
            redis_url_env: None,
        }
    }

    fn cache(ttl_ms: u64, answer: LookupOutcome) -> (Arc<ModeCache>, Arc<Scripted>) {
        cache_with(ttl_ms, answer, Clock::system())
    }

    fn cache_with(
        ttl_ms: u64,
        answer: LookupOutcome,
        clock: Clock,
    ) -> (Arc<ModeCache>, Arc<Scripted>) {
        let lookup = Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            answer: RwLock::new(answer),
            delay: Duration::from_millis(20),
        });
        (
            Arc::new(ModeCache::new(
                &settings(Duration::from_millis(ttl_ms)),
                lookup.clone(),
                Arc::new(Metrics::new()),
                clock,
            )),
            lookup,
        )
    }

    fn auth() -> HeaderValue {
        HeaderValue::from_static("Bearer t")
    }

    /// A lookup that answers CONVERSATION only once released.
    struct Gated {
        started: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    impl ModeLookup for Arc<Gated> {
        fn app_mode(&self, _: &str, _: &str, _: Option<HeaderValue>) -> BoxFuture<LookupOutcome> {
            let gate = self.clone();
            Box::pin(async move {
                gate.started.notify_one();
                gate.release.notified().await;
                LookupOutcome::Found(ProcessingMode::Conversation)
            })
        }
    }

    #[tokio::test]
    async fn a_lookup_sent_before_an_update_and_answered_after_it_is_not_cached() {
        let gate = Arc::new(Gated {
            started: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        });
        let c = Arc::new(ModeCache::new(
            &settings(Duration::from_secs(60)),
            Arc::new(gate.clone()),
            Arc::new(Metrics::new()),
            Clock::system(),
        ));
        // A request resolves the app: its lookup is in flight.
        let racing = tokio::spawn({
            let c = c.clone();
            async move { c.resolve("p", "a", None, None, false).await }
        });
        gate.started.notified().await;
        // Meanwhile an update to DISPATCH is seen and its answer learned.
        c.forget("p", "a").await;
        c.changed("p", "a");
        c.learn_all("p", &[("a", ProcessingMode::Dispatch)], None, c.ticket())
            .await;
        // The old answer arrives: used for its own request, never cached.
        gate.release.notify_one();
        assert!(matches!(
            racing.await.expect("join"),
            Resolution::Known(ProcessingMode::Conversation, _)
        ));
        assert_eq!(
            c.resolve("p", "a", None, None, false).await,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Hit)
        );
        // A GET app answer whose request started before the update is not learned either.
        let before = c.ticket();
        c.forget("p", "a").await;
        c.learn_all("p", &[("a", ProcessingMode::Dispatch)], None, c.ticket())
            .await;
        c.learn_all("p", &[("a", ProcessingMode::Conversation)], None, before)
            .await;
        assert_eq!(
            c.resolve("p", "a", None, None, false).await,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Hit)
        );
        // Project ids that are UUIDs are one project in any case.
        let upper = "E2DF3A34-A71B-4448-9DB5-A8D2BAAD28E4";
        c.learn_all(upper, &[("b", ProcessingMode::Dispatch)], None, c.ticket())
            .await;
        assert_eq!(
            c.resolve(&upper.to_ascii_lowercase(), "b", None, None, false)
                .await,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Hit)
        );
    }

    /// `modegate_mode_cache_lookups_total{result}` as rendered.
    fn lookups(cache: &ModeCache, result: &str) -> u64 {
        let line = format!("modegate_mode_cache_lookups_total{{result=\"{result}\"}} ");
        cache
            .metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0, |n| n.trim().parse().expect("count"))
    }

    #[tokio::test]
    async fn each_resolution_is_counted_once_by_what_it_found() {
        let token = HeaderValue::from_static("Bearer t");
        let (c, lookup) = cache(60_000, LookupOutcome::Found(ProcessingMode::Dispatch));
        let r = c.resolve("p", "a", Some(&token), None, true).await;
        assert_eq!(
            r,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Miss)
        );
        let r = c.resolve("p", "a", Some(&token), None, true).await;
        assert_eq!(
            r,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Hit)
        );
        let pinned = Some(ProcessingMode::Conversation);
        let r = c.resolve("p", "b", Some(&token), pinned, true).await;
        assert_eq!(
            r,
            Resolution::Known(ProcessingMode::Conversation, CacheResult::Hit)
        );
        assert_eq!((lookups(&c, "miss"), lookups(&c, "hit")), (1, 2));
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);

        // A refused credential is no cache lookup; one that cannot be checked is an error.
        let (c, lookup) = cache(60_000, LookupOutcome::Denied(StatusCode::UNAUTHORIZED));
        let r = c.resolve("p", "a", Some(&token), None, true).await;
        assert_eq!(r, Resolution::Untouched);
        assert_eq!(
            lookups(&c, "miss") + lookups(&c, "hit") + lookups(&c, "error"),
            0
        );
        *lookup.answer.write().expect("lock") = LookupOutcome::Failed(LookupFailure::Upstream(
            crate::domain::UpstreamErrorKind::Timeout,
        ));
        let r = c.resolve("p", "a", Some(&token), None, true).await;
        assert_eq!(r, Resolution::Unavailable);
        assert_eq!(lookups(&c, "error"), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_coalesce_into_one_lookup() {
        let (c, lookup) = cache(60_000, LookupOutcome::Found(ProcessingMode::Dispatch));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.resolve("p", "a", Some(&auth()), None, true).await
            }));
        }
        for t in tasks {
            assert!(matches!(
                t.await.expect("join"),
                Resolution::Known(ProcessingMode::Dispatch, _)
            ));
        }
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
        // A hit afterwards costs nothing.
        assert_eq!(
            c.resolve("p", "a", Some(&auth()), None, true).await,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Hit)
        );
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_lookup_serves_the_stale_mode_for_a_verified_credential() {
        let (clock, time) = Clock::manual();
        let (c, lookup) = cache_with(
            50_000,
            LookupOutcome::Found(ProcessingMode::Conversation),
            clock,
        );
        assert!(matches!(
            c.resolve("p", "a", Some(&auth()), None, true).await,
            Resolution::Known(..)
        ));
        *lookup.answer.write().expect("lock") = LookupOutcome::Failed(LookupFailure::Upstream(
            crate::domain::UpstreamErrorKind::Connect,
        ));
        time.advance(Duration::from_secs(51));
        assert_eq!(
            c.resolve("p", "a", Some(&auth()), None, true).await,
            Resolution::Known(ProcessingMode::Conversation, CacheResult::Stale)
        );
        // An unknown app has nothing stale to serve, and neither has one past the stale window.
        assert_eq!(
            c.resolve("p", "b", Some(&auth()), None, true).await,
            Resolution::Unavailable
        );
        time.advance(Duration::from_secs(60));
        assert_eq!(
            c.resolve("p", "a", Some(&auth()), None, true).await,
            Resolution::Unavailable
        );
    }

    #[tokio::test]
    async fn a_refused_credential_leaves_the_request_untouched_and_learns_nothing() {
        let (c, _) = cache(60_000, LookupOutcome::Denied(StatusCode::UNAUTHORIZED));
        assert_eq!(
            c.resolve("p", "a", Some(&auth()), None, true).await,
            Resolution::Untouched
        );
        assert_eq!(
            c.resolve("p", "a", None, Some(ProcessingMode::Dispatch), true)
                .await,
            Resolution::Untouched,
            "a pinned mode must not be revealed to an unverified caller"
        );
        assert!(c.known_apps().is_empty());
    }

    #[tokio::test]
    async fn a_new_credential_is_verified_even_when_the_mode_is_cached() {
        let (c, lookup) = cache(60_000, LookupOutcome::Found(ProcessingMode::Dispatch));
        c.resolve("p", "a", Some(&auth()), None, true).await;
        *lookup.answer.write().expect("lock") = LookupOutcome::Denied(StatusCode::FORBIDDEN);
        let other = HeaderValue::from_static("Bearer someone-else");
        assert_eq!(
            c.resolve("p", "a", Some(&other), None, true).await,
            Resolution::Untouched
        );
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn learning_forgetting_and_project_ties() {
        let (c, lookup) = cache(
            60_000,
            LookupOutcome::Failed(LookupFailure::Upstream(
                crate::domain::UpstreamErrorKind::Timeout,
            )),
        );
        c.learn_all(
            "p",
            &[("a", ProcessingMode::Dispatch)],
            Some(&auth()),
            c.ticket(),
        )
        .await;
        c.learn_all(
            "p",
            &[("b", ProcessingMode::Dispatch)],
            Some(&auth()),
            c.ticket(),
        )
        .await;
        assert_eq!(
            c.project_mode("p").map(|x| x.0),
            Some(ProcessingMode::Dispatch)
        );
        assert_eq!(
            c.resolve("p", "a", Some(&auth()), None, true).await,
            Resolution::Known(ProcessingMode::Dispatch, CacheResult::Hit)
        );
        assert_eq!(
            lookup.calls.load(Ordering::SeqCst),
            0,
            "learned credential needs no verification"
        );
        c.learn_all(
            "p",
            &[("c", ProcessingMode::Conversation)],
            None,
            c.ticket(),
        )
        .await;
        assert_eq!(c.project_mode("p"), None, "mixed modes tie nothing");
        c.forget("p", "c").await;
        c.sync().await;
        assert_eq!(
            c.project_mode("p").map(|x| x.0),
            Some(ProcessingMode::Dispatch)
        );
        // Re-learning the same app does not double count.
        c.learn_all("p", &[("a", ProcessingMode::Dispatch)], None, c.ticket())
            .await;
        c.sync().await;
        let apps = c.known_apps();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].source, "learned");
        assert_eq!(c.project_mode("q"), None);
    }

    #[tokio::test]
    async fn many_distinct_apps_keep_the_cache_at_max_apps_and_the_gauge_true() {
        let metrics = Arc::new(Metrics::new());
        let settings = ModeCacheSettings {
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(60),
            max_apps: 1000,
            max_messages: 0,
            message_ttl: Duration::from_secs(60),
            redis_url_env: None,
        };
        let lookup = Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            answer: RwLock::new(LookupOutcome::Found(ProcessingMode::Dispatch)),
            delay: Duration::ZERO,
        });
        let c = ModeCache::new(&settings, lookup, metrics.clone(), Clock::system());
        for i in 0..20_000 {
            let mode = if i % 2 == 0 {
                ProcessingMode::Dispatch
            } else {
                ProcessingMode::Conversation
            };
            c.learn_all("p", &[(&format!("app-{i}"), mode)], None, c.ticket())
                .await;
        }
        c.sync().await;
        let held = c.known_apps().len();
        assert!(held <= 1000, "{held} apps held, max_apps is 1000");
        assert!(held > 0);
        let text = metrics.render();
        let gauge: f64 = ["DISPATCH", "CONVERSATION"]
            .iter()
            .map(|m| {
                crate::metrics::sample(&text, "modegate_mode_cache_apps", &[("mode", m)])
                    .unwrap_or(0.0)
            })
            .sum();
        assert_eq!(gauge as usize, held, "the gauge counts what is held");
    }
}
