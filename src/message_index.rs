//! Which app (and so which message store) each message id belongs to, learned from the traffic
//! that passes through: send responses (the app is in the request), and get, update and list
//! responses (each message names its `processing_mode`). A later get / update / delete of that
//! id is then sent to the right store the first time, whatever else the gateway knows of the
//! project. Bounded by `mode_cache.max_messages`, kept for `mode_cache.message_ttl_secs`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::domain::ProcessingMode;

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOrigin {
    /// The app that sent it, when known.
    pub app: Option<Arc<str>>,
    /// The store it lives in, when known (a `DISPATCH_ONLY` send, or a message that named its
    /// `processing_mode`); otherwise the app's mode says.
    pub store: Option<ProcessingMode>,
}

/// The index: ids in the order they were last recorded, the oldest leaving first when the
/// index is full or their time is up. Every new id is admitted (the ids a client asks about
/// are the ones it just sent), and nothing here waits.
///
/// A map and a queue under one lock rather than a concurrent cache: every send records an id,
/// and a concurrent cache's bookkeeping (epochs, write buffers, housekeeping) cost about six
/// times what this does per id, on the path every send takes (see bench/api-model.md).
pub struct MessageIndex {
    inner: Option<Mutex<Entries>>,
    max: usize,
    ttl: Duration,
    clock: Clock,
}

struct Entry {
    origin: MessageOrigin,
    at: Instant,
    /// Which of the queue's records of this key is the live one.
    seq: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Arc<str>, Entry>,
    /// Keys in recording order, each with its record's `seq` and time; a key recorded again or
    /// forgotten leaves a stale record, dropped when it reaches the front or on compaction.
    order: VecDeque<(Arc<str>, u64, Instant)>,
    next: u64,
}

impl Entries {
    fn record(
        &mut self,
        key: Arc<str>,
        origin: MessageOrigin,
        clock: &Clock,
        max: usize,
        ttl: Duration,
    ) {
        let now = clock.now();
        let seq = self.next;
        self.next += 1;
        self.map.insert(
            key.clone(),
            Entry {
                origin,
                at: now,
                seq,
            },
        );
        self.order.push_back((key, seq, now));
        // The front is the oldest record: it leaves when the index is over its size or its
        // time is up (a stale front goes too, having nothing to remove).
        while let Some((key, seq, at)) = self.order.front() {
            if self.map.len() <= max && now.saturating_duration_since(*at) < ttl {
                break;
            }
            if self.map.get(key).is_some_and(|e| e.seq == *seq) {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
        // Stale records pile up only when ids are recorded again and again; drop them once
        // they outnumber the live ones.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(key, seq, _)| map.get(key).is_some_and(|e| e.seq == *seq));
        }
    }
}

impl std::fmt::Debug for MessageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageIndex")
            .field("enabled", &self.inner.is_some())
            .field("max", &self.max)
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn key(project: &str, message: &str) -> String {
    let mut k = String::with_capacity(project.len() + message.len() + 1);
    k.push_str(project);
    k.push('/');
    k.push_str(message);
    k
}

impl MessageIndex {
    /// Up to `max` ids for `ttl` each, aged by `clock`; `max = 0` turns the index off.
    pub fn new(max: u64, ttl: Duration, clock: Clock) -> Self {
        Self {
            inner: (max > 0).then(|| Mutex::new(Entries::default())),
            max: usize::try_from(max).unwrap_or(usize::MAX),
            ttl,
            clock,
        }
    }

    /// Whether the index is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn entries(&self) -> Option<std::sync::MutexGuard<'_, Entries>> {
        Some(
            self.inner
                .as_ref()?
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// The live entry of `key`, if its time is not up.
    fn live<'e>(&self, entries: &'e Entries, key: &str) -> Option<&'e Entry> {
        entries
            .map
            .get(key)
            .filter(|e| self.clock.since(e.at) < self.ttl)
    }

    /// Remembers a message. What is already known of it is kept where the new record knows
    /// less (a list answer naming the store does not forget the app, and vice versa).
    pub fn remember(&self, project: &str, message: &str, origin: MessageOrigin) {
        let Some(mut entries) = self.entries() else {
            return;
        };
        let k = key(project, message);
        let merged = match self.live(&entries, &k) {
            Some(old) => MessageOrigin {
                app: origin.app.or_else(|| old.origin.app.clone()),
                store: origin.store.or(old.origin.store),
            },
            None => origin,
        };
        entries.record(Arc::from(k), merged, &self.clock, self.max, self.ttl);
    }

    /// Remembers a message just sent: its id is new, so there is nothing to merge with.
    pub fn remember_new(&self, project: &str, message: &str, origin: MessageOrigin) {
        if let Some(mut entries) = self.entries() {
            entries.record(
                Arc::from(key(project, message)),
                origin,
                &self.clock,
                self.max,
                self.ttl,
            );
        }
    }

    /// What is known of a message.
    pub fn origin(&self, project: &str, message: &str) -> Option<MessageOrigin> {
        let entries = self.entries()?;
        self.live(&entries, &key(project, message))
            .map(|e| e.origin.clone())
    }

    /// Forgets a deleted message.
    pub fn forget(&self, project: &str, message: &str) {
        if let Some(mut entries) = self.entries() {
            entries.map.remove(key(project, message).as_str());
        }
    }

    /// How many ids are held (expired ones included until they leave).
    pub fn len(&self) -> usize {
        self.entries().map_or(0, |e| e.map.len())
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> MessageOrigin {
        MessageOrigin {
            app: Some(Arc::from(name)),
            store: None,
        }
    }

    fn index(max: u64, ttl_secs: u64) -> (MessageIndex, Arc<crate::clock::ManualClock>) {
        let (clock, hand) = Clock::manual();
        (
            MessageIndex::new(max, Duration::from_secs(ttl_secs), clock),
            hand,
        )
    }

    #[test]
    fn origins_merge_and_can_be_forgotten() {
        let (index, _) = index(100, 60);
        index.remember("p", "m1", app("a1"));
        let store = MessageOrigin {
            app: None,
            store: Some(ProcessingMode::Dispatch),
        };
        index.remember("p", "m1", store);
        assert_eq!(
            index.origin("p", "m1"),
            Some(MessageOrigin {
                app: Some(Arc::from("a1")),
                store: Some(ProcessingMode::Dispatch)
            })
        );
        assert_eq!(index.origin("q", "m1"), None, "per project");
        index.forget("p", "m1");
        assert_eq!(index.origin("p", "m1"), None);
    }

    #[test]
    fn a_zero_size_index_is_off() {
        let (index, _) = index(0, 60);
        assert!(!index.enabled());
        index.remember_new("p", "m", app("a"));
        assert_eq!(index.origin("p", "m"), None);
        assert!(index.is_empty());
    }

    #[test]
    fn when_full_the_oldest_record_leaves_and_the_newest_is_always_admitted() {
        let (index, _) = index(3, 60);
        for m in ["m1", "m2", "m3"] {
            index.remember_new("p", m, app(m));
        }
        // Recording m1 again makes it the newest: m2 is now the oldest.
        index.remember("p", "m1", app("again"));
        index.remember_new("p", "m4", app("m4"));
        assert_eq!(index.len(), 3);
        assert_eq!(index.origin("p", "m2"), None, "the oldest left");
        assert_eq!(index.origin("p", "m1"), Some(app("again")));
        assert_eq!(index.origin("p", "m4"), Some(app("m4")), "the newest is in");
        // A forgotten id frees its place: nothing else leaves for the next one.
        index.forget("p", "m3");
        index.remember_new("p", "m5", app("m5"));
        assert_eq!(index.len(), 3);
        for m in ["m1", "m4", "m5"] {
            assert!(index.origin("p", m).is_some(), "{m}");
        }
    }

    #[test]
    fn records_expire_after_their_time() {
        let (index, hand) = index(100, 60);
        index.remember_new("p", "old", app("a"));
        hand.advance(Duration::from_secs(59));
        assert_eq!(index.origin("p", "old"), Some(app("a")));
        index.remember_new("p", "new", app("b"));
        hand.advance(Duration::from_secs(1));
        assert_eq!(index.origin("p", "old"), None, "60 s after it was recorded");
        // An expired record merges with nothing.
        index.remember(
            "p",
            "old",
            MessageOrigin {
                app: None,
                store: Some(ProcessingMode::Dispatch),
            },
        );
        assert_eq!(index.origin("p", "old").and_then(|o| o.app), None);
        // Expired records leave with the next record, not only when asked for.
        hand.advance(Duration::from_secs(60));
        index.remember_new("p", "newest", app("c"));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn ids_recorded_again_and_again_do_not_grow_the_queue() {
        let (index, _) = index(10, 60);
        // A live record at the front keeps the stale ones behind it from leaving that way.
        index.remember_new("p", "first", app("a"));
        for round in 0..10_000 {
            index.remember(
                "p",
                "m",
                MessageOrigin {
                    app: None,
                    store: (round % 2 == 0).then_some(ProcessingMode::Dispatch),
                },
            );
        }
        let entries = index.entries().expect("on");
        assert_eq!(entries.map.len(), 2);
        assert!(
            entries.order.len() <= 2 * entries.map.len() + 65,
            "{}",
            entries.order.len()
        );
    }
}
