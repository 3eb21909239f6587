//! The credential gate of the mode cache, with the replicas' shared level: a credential seen
//! to work by any replica is trusted here, and one verified here is shared.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::credentials::{fingerprint, CredentialGate};
use crate::shared_cache::SharedModes;

/// Credentials seen to work, here and with the other replicas.
pub(super) struct Credentials {
    gate: CredentialGate,
    /// How long a verified credential is trusted (`ttl + stale_if_error`).
    keep: Duration,
    shared: Option<Arc<SharedModes>>,
}

impl Credentials {
    /// A gate remembering up to `capacity` credentials for `keep` each, local only.
    pub(super) fn new(capacity: u64, keep: Duration) -> Self {
        Credentials {
            gate: CredentialGate::new(capacity, keep),
            keep,
            shared: None,
        }
    }

    /// Shares verified credentials through `shared` (`None`: local only).
    pub(super) fn share_with(&mut self, shared: Option<Arc<SharedModes>>) {
        self.shared = shared;
    }

    /// Whether `authorization` has been seen to work for `project` here.
    pub(super) fn seen(&self, project: &str, authorization: Option<&HeaderValue>) -> bool {
        self.gate.seen(project, authorization)
    }

    /// Records that `authorization` succeeded for `project`, sharing it the first time.
    pub(super) async fn mark_verified(&self, project: &str, authorization: Option<&HeaderValue>) {
        let new = !self.gate.seen(project, authorization);
        self.gate.mark(project, authorization).await;
        if new {
            self.share(project, authorization).await;
        }
    }

    /// Shares that `authorization` works for `project` with the other replicas.
    async fn share(&self, project: &str, authorization: Option<&HeaderValue>) {
        if let Some(shared) = &self.shared {
            shared
                .put_credential(&fingerprint(project, authorization), self.keep)
                .await;
        }
    }

    /// Ensures `authorization` has been seen to work for `project` (here or by another
    /// replica), running `check` when not. `Ok(true)` when this call ran the check.
    pub(super) async fn verify<E, F>(
        &self,
        project: &str,
        authorization: Option<&HeaderValue>,
        check: F,
    ) -> Result<bool, E>
    where
        E: Clone + Send + Sync + 'static,
        F: Future<Output = Result<(), E>>,
    {
        if let Some(shared) = &self.shared {
            if !self.gate.seen(project, authorization)
                && shared
                    .credential_seen(&fingerprint(project, authorization))
                    .await
            {
                // Another replica saw the upstream accept this very credential.
                self.gate.mark(project, authorization).await;
                return Ok(false);
            }
        }
        let looked_up = self.gate.verify(project, authorization, check).await?;
        if looked_up {
            self.share(project, authorization).await;
        }
        Ok(looked_up)
    }

    /// Runs pending cache maintenance.
    pub(super) async fn sync(&self) {
        self.gate.sync().await;
    }
}
