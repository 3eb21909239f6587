//! Per-project tallies of the cached apps' modes: they tie calls that name no app (list
//! messages of a project, …) to the mode every known app of the project shares, and, after a
//! project's whole app list was seen, say which modes it has no app in.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use moka::future::Cache;

use crate::domain::ProcessingMode;

#[derive(Debug, Default, Clone)]
struct Tally {
    counts: [u32; 2],
    sample_app: String,
}

fn mode_index(m: ProcessingMode) -> usize {
    match m {
        ProcessingMode::Conversation => 0,
        ProcessingMode::Dispatch => 1,
    }
}

/// How many cached apps of each project are in each mode.
pub(super) struct ProjectTallies {
    tallies: RwLock<HashMap<String, Tally>>,
    /// Projects whose full app list passed through within the TTL: their tallies are complete.
    listed: Cache<String, ()>,
}

impl ProjectTallies {
    /// Tallies for up to `max_apps` listed projects, each listing trusted for `ttl`.
    pub(super) fn new(max_apps: u64, ttl: Duration) -> Self {
        ProjectTallies {
            tallies: RwLock::default(),
            listed: Cache::builder()
                .max_capacity(max_apps)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// Counts a cached `app` of `project` in `mode`.
    pub(super) fn count(&self, project: &str, app: &str, mode: ProcessingMode) {
        let mut t = self.tallies.write().unwrap_or_else(|p| p.into_inner());
        let tally = t.entry(project.to_string()).or_default();
        tally.counts[mode_index(mode)] += 1;
        tally.sample_app = app.to_string();
    }

    /// Un-counts an app of `project` in `mode` (its entry left the cache).
    pub(super) fn uncount(&self, project: &str, mode: ProcessingMode) {
        let mut t = self.tallies.write().unwrap_or_else(|p| p.into_inner());
        if let Some(tally) = t.get_mut(project) {
            let c = &mut tally.counts[mode_index(mode)];
            *c = c.saturating_sub(1);
            if tally.counts == [0, 0] {
                t.remove(project);
            }
        }
    }

    /// The mode shared by every cached app of `project`, and one of those apps.
    pub(super) fn project_mode(&self, project: &str) -> Option<(ProcessingMode, String)> {
        let t = self.tallies.read().unwrap_or_else(|p| p.into_inner());
        let tally = t.get(project)?;
        let mode = match tally.counts {
            [c, 0] if c > 0 => ProcessingMode::Conversation,
            [0, d] if d > 0 => ProcessingMode::Dispatch,
            _ => return None,
        };
        Some((mode, tally.sample_app.clone()))
    }

    /// Records that `project`'s whole app list was just seen.
    pub(super) async fn mark_listed(&self, project: &str) {
        self.listed.insert(project.to_string(), ()).await;
    }

    /// Whether `project` has, or may have, an app in `mode`: false only when its whole app list
    /// was seen within the TTL and none of its apps is in that mode.
    pub(super) fn may_have(&self, project: &str, mode: ProcessingMode) -> bool {
        if !self.listed.contains_key(project) {
            return true;
        }
        let t = self.tallies.read().unwrap_or_else(|p| p.into_inner());
        t.get(project)
            .is_some_and(|tally| tally.counts[mode_index(mode)] > 0)
    }
}
