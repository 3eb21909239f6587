//! The credential gate: no mode-based decision for a caller whose credential has not been seen
//! to work for the project.
//!
//! In passthrough auth, a mode learned through one caller's credential must not shape the
//! answer to another caller the upstream would refuse (that would leak the app's mode). The
//! gate remembers, per project, SHA-256 fingerprints of credentials that succeeded — never the
//! header itself — and verifies an unknown one with one coalesced check.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderValue;
use moka::future::Cache;
use sha2::{Digest, Sha256};

/// Fingerprints of credentials seen to work, per project.
pub struct CredentialGate {
    verified: Cache<[u8; 32], ()>,
}

impl std::fmt::Debug for CredentialGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialGate").finish_non_exhaustive()
    }
}

/// SHA-256 over the project and the credential: what the gate (and the shared cache) keeps
/// instead of the header, which is never stored.
pub fn fingerprint(project: &str, authorization: Option<&HeaderValue>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(project.as_bytes());
    h.update([0u8]);
    if let Some(a) = authorization {
        h.update(a.as_bytes());
    }
    h.finalize().into()
}

impl CredentialGate {
    /// Remembers up to `capacity` fingerprints for `keep` each.
    pub fn new(capacity: u64, keep: Duration) -> Self {
        Self {
            verified: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(keep)
                .build(),
        }
    }

    /// Records that `authorization` succeeded for `project`.
    pub async fn mark(&self, project: &str, authorization: Option<&HeaderValue>) {
        self.verified
            .insert(fingerprint(project, authorization), ())
            .await;
    }

    /// Ensures `authorization` has been seen to work for `project`, running `check` (one per
    /// fingerprint, however many callers wait) when it has not. `Ok(true)` when this call ran
    /// the check.
    pub async fn verify<E, F>(
        &self,
        project: &str,
        authorization: Option<&HeaderValue>,
        check: F,
    ) -> Result<bool, E>
    where
        E: Clone + Send + Sync + 'static,
        F: Future<Output = Result<(), E>>,
    {
        let key = fingerprint(project, authorization);
        if self.verified.contains_key(&key) {
            return Ok(false);
        }
        let ran = AtomicBool::new(false);
        // Boxed: moka's coalescing future is kilobytes, and inline it would be carried (and
        // copied) by every request's future, not only by the rare one that checks.
        let result = Box::pin(self.verified.try_get_with(key, async {
            ran.store(true, Ordering::Relaxed);
            check.await
        }))
        .await;
        match result {
            Ok(()) => Ok(ran.load(Ordering::Relaxed)),
            Err(e) => Err((*e).clone()),
        }
    }

    /// Whether `authorization` has been seen to work for `project`.
    pub fn seen(&self, project: &str, authorization: Option<&HeaderValue>) -> bool {
        self.verified
            .contains_key(&fingerprint(project, authorization))
    }

    /// Runs pending cache maintenance.
    pub async fn sync(&self) {
        self.verified.run_pending_tasks().await;
    }
}

/// Whether a caller's credential may see mode-based decisions for a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialCheck {
    /// Seen to succeed for the project.
    Verified,
    /// Upstream refused it (or does not know the app it was checked with).
    Refused,
    /// The check could not be made (upstream failing).
    Unverifiable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_credential_is_checked_once_and_fingerprints_are_per_project() {
        let gate = Arc::new(CredentialGate::new(100, Duration::from_secs(60)));
        let checks = Arc::new(AtomicUsize::new(0));
        let token = HeaderValue::from_static("Bearer t");
        for _ in 0..3 {
            let checks = checks.clone();
            let r: Result<bool, ()> = gate
                .verify("p", Some(&token), async move {
                    checks.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await;
            assert!(r.is_ok());
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        let refused: Result<bool, &str> = gate.verify("q", Some(&token), async { Err("no") }).await;
        assert_eq!(refused, Err("no"), "another project is checked on its own");
        assert_ne!(fingerprint("p", Some(&token)), fingerprint("p", None));
    }
}
