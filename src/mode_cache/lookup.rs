//! What the mode cache loads through: the upstream app lookup (a trait, so tests can count and
//! script loads), what it finds, and the cached entry it becomes.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use http::{HeaderValue, StatusCode};

use crate::domain::{LookupFailure, ModeSource, ProcessingMode};

/// A boxed future, for the lookup trait.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A cached mode.
#[derive(Clone, Copy, Debug)]
pub struct CachedMode {
    /// The mode.
    pub mode: ProcessingMode,
    /// Its source.
    pub source: ModeSource,
    /// When it was learned.
    pub at: Instant,
}

/// What an upstream app lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The app and its mode.
    Found(ProcessingMode),
    /// Upstream refused the caller or does not know the app (401, 403, 404).
    Denied(StatusCode),
    /// The lookup gave no answer (connect, timeout, reset, 5xx, 429, unusable answer).
    Failed(LookupFailure),
}

/// The upstream calls the caches make. A trait, so tests can count and script loads.
pub trait ModeLookup: Send + Sync + 'static {
    /// `GET /v1/projects/{project}/apps/{app}` with the caller's `Authorization`.
    fn app_mode(
        &self,
        project: &str,
        app: &str,
        authorization: Option<HeaderValue>,
    ) -> BoxFuture<LookupOutcome>;
}
