//! Contacts' channel identities, cached for the `dispatch.send.contact_recipient` rewrite:
//! one coalesced `GET contact` per contact and TTL, however many sends name it.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use moka::future::Cache;

pub use crate::domain::Identity;
use crate::domain::LookupFailure;
use crate::mode_cache::BoxFuture;

/// What a contact lookup found.
#[derive(Clone, Debug)]
pub enum ContactOutcome {
    /// The contact's identities.
    Found(Arc<Vec<Identity>>),
    /// No such contact.
    NotFound,
    /// The caller may not read it.
    Denied,
    /// The lookup gave no answer.
    Failed(LookupFailure),
}

/// The upstream call behind the cache.
pub trait ContactLookup: Send + Sync + 'static {
    /// `GET /v1/projects/{project}/contacts/{contact}` with the caller's `Authorization`.
    fn contact(
        &self,
        project: &str,
        contact: &str,
        authorization: Option<HeaderValue>,
    ) -> BoxFuture<ContactOutcome>;
}

/// The cache.
pub struct ContactCache {
    cache: Cache<String, Arc<Vec<Identity>>>,
    lookup: Arc<dyn ContactLookup>,
}

impl std::fmt::Debug for ContactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactCache").finish_non_exhaustive()
    }
}

impl ContactCache {
    /// Entries live `ttl` (at least a millisecond, so concurrent lookups still coalesce).
    pub fn new(ttl: Duration, max: u64, lookup: Arc<dyn ContactLookup>) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            lookup,
        }
    }

    /// The identities of `contact`, from cache or one coalesced lookup.
    pub async fn identities(
        &self,
        project: &str,
        contact: &str,
        authorization: Option<&HeaderValue>,
    ) -> ContactOutcome {
        let key = format!("{project}/{contact}");
        let result = self
            .cache
            .try_get_with(key, async {
                match self
                    .lookup
                    .contact(project, contact, authorization.cloned())
                    .await
                {
                    ContactOutcome::Found(ids) => Ok(ids),
                    other => Err(other),
                }
            })
            .await;
        match result {
            Ok(ids) => ContactOutcome::Found(ids),
            Err(e) => (*e).clone(),
        }
    }
}
