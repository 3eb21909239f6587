//! Which app (and so which message store) each message id belongs to, learned from the traffic
//! that passes through: send responses (the app is in the request), and get, update and list
//! responses (each message names its `processing_mode`). A later get / update / delete of that
//! id is then sent to the right store the first time, whatever else the gateway knows of the
//! project. Bounded by `mode_cache.max_messages`, kept for `mode_cache.message_ttl_secs`.

use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

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

/// The index.
pub struct MessageIndex {
    cache: Option<Cache<String, MessageOrigin>>,
}

impl std::fmt::Debug for MessageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageIndex")
            .field("enabled", &self.cache.is_some())
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
    /// Up to `max` ids for `ttl` each; `max = 0` turns the index off.
    pub fn new(max: u64, ttl: Duration) -> Self {
        Self {
            cache: (max > 0).then(|| {
                // Least-recently-used: the ids looked up are the ones just sent, and a new id
                // is always admitted (a frequency-based admission could refuse the newest ids
                // once the index is full, which are exactly the ones a client asks about).
                // The synchronous cache: nothing here waits, and it costs a send less.
                Cache::builder()
                    .max_capacity(max)
                    .time_to_live(ttl)
                    .eviction_policy(EvictionPolicy::lru())
                    .build()
            }),
        }
    }

    /// Whether the index is on.
    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Remembers a message. What is already known of it is kept where the new record knows
    /// less (a list answer naming the store does not forget the app, and vice versa).
    pub async fn remember(&self, project: &str, message: &str, origin: MessageOrigin) {
        let Some(cache) = &self.cache else {
            return;
        };
        let k = key(project, message);
        let merged = match cache.get(&k) {
            Some(old) => MessageOrigin {
                app: origin.app.or(old.app),
                store: origin.store.or(old.store),
            },
            None => origin,
        };
        cache.insert(k, merged);
    }

    /// Remembers a message just sent: its id is new, so there is nothing to merge with.
    pub async fn remember_new(&self, project: &str, message: &str, origin: MessageOrigin) {
        if let Some(cache) = &self.cache {
            cache.insert(key(project, message), origin);
        }
    }

    /// What is known of a message.
    pub async fn origin(&self, project: &str, message: &str) -> Option<MessageOrigin> {
        self.cache.as_ref()?.get(&key(project, message))
    }

    /// Forgets a deleted message.
    pub async fn forget(&self, project: &str, message: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&key(project, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn origins_merge_and_can_be_forgotten() {
        let index = MessageIndex::new(100, Duration::from_secs(60));
        let app: Arc<str> = Arc::from("a1");
        index
            .remember(
                "p",
                "m1",
                MessageOrigin {
                    app: Some(app.clone()),
                    store: None,
                },
            )
            .await;
        index
            .remember(
                "p",
                "m1",
                MessageOrigin {
                    app: None,
                    store: Some(ProcessingMode::Dispatch),
                },
            )
            .await;
        assert_eq!(
            index.origin("p", "m1").await,
            Some(MessageOrigin {
                app: Some(app),
                store: Some(ProcessingMode::Dispatch)
            })
        );
        assert_eq!(index.origin("q", "m1").await, None, "per project");
        index.forget("p", "m1").await;
        assert_eq!(index.origin("p", "m1").await, None);
    }

    #[tokio::test]
    async fn a_zero_size_index_is_off() {
        let index = MessageIndex::new(0, Duration::from_secs(60));
        assert!(!index.enabled());
        index
            .remember(
                "p",
                "m",
                MessageOrigin {
                    app: None,
                    store: Some(ProcessingMode::Dispatch),
                },
            )
            .await;
        assert_eq!(index.origin("p", "m").await, None);
    }
}
