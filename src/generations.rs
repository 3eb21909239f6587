//! Per-app generations: a learned mode is never older than the last app update or delete the
//! gateway saw.
//!
//! Every request that may teach a mode (a mode lookup, a `GET app`, a list of apps) takes a
//! ticket when it starts; an app's generation is bumped when its update or delete is seen
//! (before it is forwarded), when that answer is learned, and when another replica says the app
//! changed. An answer is learned only if its ticket is not older than the app's generation: a
//! lookup sent before a `PATCH` and answered after it cannot put the old mode back.

use std::sync::atomic::{AtomicU64, Ordering};

use moka::sync::Cache;

/// The generations of recently changed apps (bounded; an app not listed has generation 0).
#[derive(Debug)]
pub struct Generations {
    counter: AtomicU64,
    apps: Cache<String, u64>,
}

impl Generations {
    /// Generations for up to `capacity` recently changed apps.
    pub fn new(capacity: u64) -> Self {
        Generations {
            counter: AtomicU64::new(1),
            apps: Cache::new(capacity.max(1024)),
        }
    }

    /// A ticket for a request that starts now.
    pub fn ticket(&self) -> u64 {
        self.counter.load(Ordering::Acquire)
    }

    /// Marks `key` (a project/app key) as changed now.
    pub fn bump(&self, key: &str) {
        let generation = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        self.apps.insert(key.to_string(), generation);
    }

    /// Whether an answer for `key` to a request holding `ticket` may be learned.
    pub fn current(&self, key: &str, ticket: u64) -> bool {
        self.apps
            .get(key)
            .is_none_or(|generation| ticket >= generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_older_than_a_change_is_not_learned() {
        let g = Generations::new(8);
        let before = g.ticket();
        assert!(g.current("p/a", before));
        g.bump("p/a");
        assert!(!g.current("p/a", before), "started before the update");
        assert!(g.current("p/b", before), "other apps are unaffected");
        let after = g.ticket();
        assert!(g.current("p/a", after));
        g.bump("p/a");
        assert!(!g.current("p/a", after));
    }
}
