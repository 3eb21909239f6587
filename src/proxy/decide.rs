//! Phase 3, decide: the pure policy plans the request under both modes; only when the two
//! answers differ is the app's mode resolved (pin, cache, one coalesced lookup, or the mode
//! every known app of the project shares — the caller's credential verified first, once per
//! request); then the pure policy settles the decision, `policy.unknown_mode` included.

use http::HeaderValue;

use super::ctx::RequestCtx;
use super::GatewayState;
use crate::domain::{CacheResult, ProcessingMode, Resolution};
use crate::error::GatewayError;
use crate::mode_cache::{CredentialCheck, ModeCache};
use crate::policy::{ModeUnavailable, Plan, ProjectApps};

/// Decides a policy route: fills `ctx.decision`, `ctx.mode`, `ctx.blockers`, `ctx.store_retry`.
pub async fn decide(state: &GatewayState, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let settings = &ctx.snapshot.policy.settings;
    let (what_if, fail_closed) = (
        settings.what_if_dispatch,
        settings.unknown_mode == crate::config::UnknownMode::Reject,
    );
    // In passthrough auth the caller's credential is checked once, by the first step that
    // needs it; once verified for the project it is not checked again.
    let mut credential = Credential {
        verified: !state.verify_credentials,
    };
    ctx.message_store = tie_message(ctx, &mut credential).await;
    let plan = Plan::new(&ctx.facts(), &ctx.policy_context(), what_if);
    let resolution = if plan.needs_mode() {
        Some(resolve(ctx, &mut credential).await)
    } else {
        None
    };
    // What the project's apps are only matters to a call that may be retried in the other store.
    let apps = if plan.may_retry_store() {
        project_apps(ctx)
    } else {
        ProjectApps::UNKNOWN
    };
    let settled = plan
        .settle(
            resolution,
            &ctx.facts(),
            &ctx.policy_context(),
            fail_closed,
            apps,
        )
        .map_err(|ModeUnavailable| GatewayError::ModeUnavailable);
    let subject = &ctx.subject;
    let (project, app) = (
        subject.project.as_deref().unwrap_or(""),
        subject.app.as_deref().unwrap_or(""),
    );
    if resolution == Some(Resolution::Unavailable) {
        if settled.is_err() {
            tracing::warn!(
                operation = ctx.operation().as_str(),
                project_id = project,
                app_id = app,
                "processing mode unavailable; rejecting (unknown_mode = reject)"
            );
        } else {
            tracing::warn!(operation = ctx.operation().as_str(), project_id = project, app_id = app,
                "processing mode unavailable; applying mode-independent rules only (unknown_mode = forward)");
        }
    }
    let settled = settled?;
    ctx.decision.settle(settled.decision);
    ctx.mode = settled.mode.or(ctx.message_store);
    ctx.blockers = settled.blockers;
    ctx.store_retry = settled.store_retry;
    Ok(())
}

/// Whether the caller's credential has been verified for the request's project (always, in
/// inject mode: the gateway's own token is used).
struct Credential {
    verified: bool,
}

impl Credential {
    /// Checks the credential for `project` with a lookup of `app` when it has not been verified
    /// in this request.
    async fn check(
        &mut self,
        modes: &ModeCache,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
    ) -> CredentialCheck {
        if self.verified {
            return CredentialCheck::Verified;
        }
        let check = modes.check_credential(project, app, authorization).await;
        self.verified = check == CredentialCheck::Verified;
        check
    }

    /// The mode of `app`, verifying the credential with it when it has not been verified in
    /// this request.
    async fn resolve(
        &mut self,
        modes: &ModeCache,
        project: &str,
        app: &str,
        authorization: Option<&HeaderValue>,
        pinned: Option<ProcessingMode>,
    ) -> Resolution {
        let resolution = modes
            .resolve(project, app, authorization, pinned, !self.verified)
            .await;
        // A known mode means the credential passed (or was not needed).
        if let Resolution::Known(..) = resolution {
            self.verified = true;
        }
        resolution
    }
}

/// The mode for a request: its app's (pinned, cached or looked up), or for calls that name no
/// app, the mode every pinned or known app of the project shares.
async fn resolve(ctx: &RequestCtx, credential: &mut Credential) -> Resolution {
    let Some(project) = &ctx.subject.project else {
        return Resolution::Untouched;
    };
    let modes = &ctx.snapshot.modes;
    let authorization = ctx.authorization.as_ref();
    if let Some(app) = &ctx.subject.app {
        return credential
            .resolve(modes, project, app, authorization, ctx.app.pinned)
            .await;
    }
    let tie = ctx
        .snapshot
        .policy
        .pinned_project(project)
        .or_else(|| modes.project_mode(project));
    let Some((mode, sample_app)) = tie else {
        // Nothing ties the call to a mode: forwarded unchanged.
        return Resolution::Untouched;
    };
    match credential
        .check(modes, project, &sample_app, authorization)
        .await
    {
        CredentialCheck::Verified => Resolution::Known(mode, CacheResult::Hit),
        CredentialCheck::Refused => Resolution::Untouched,
        CredentialCheck::Unverifiable => Resolution::Unavailable,
    }
}

/// The store of the message a get / update / delete names, when the gateway has seen it (and
/// the caller's credential has been seen to work for the project: the index never tells a
/// caller the upstream would refuse where a message lives).
async fn tie_message(ctx: &RequestCtx, credential: &mut Credential) -> Option<ProcessingMode> {
    let (Some(project), Some(id)) = (&ctx.subject.project, &ctx.message_id) else {
        return None;
    };
    let origin = ctx.snapshot.messages.origin(project, id)?;
    let modes = &ctx.snapshot.modes;
    let authorization = ctx.authorization.as_ref();
    match (origin.store, origin.app.as_deref()) {
        (Some(store), Some(app)) => {
            let check = credential.check(modes, project, app, authorization).await;
            (check == CredentialCheck::Verified).then_some(store)
        }
        (Some(store), None) => {
            (credential.verified || modes.credential_seen(project, authorization)).then_some(store)
        }
        (None, Some(app)) => {
            let pinned = ctx
                .snapshot
                .policy
                .app_policy(Some(project), Some(app))
                .pinned;
            match credential
                .resolve(modes, project, app, authorization, pinned)
                .await
            {
                Resolution::Known(mode, _) => Some(mode),
                Resolution::Untouched | Resolution::Unavailable => None,
            }
        }
        (None, None) => None,
    }
}

/// Whether the request's project has, or may have, an app of each mode (pins count as known).
fn project_apps(ctx: &RequestCtx) -> ProjectApps {
    let Some(project) = &ctx.subject.project else {
        return ProjectApps::UNKNOWN;
    };
    let pinned = |mode| {
        ctx.snapshot
            .policy
            .pinned_apps()
            .any(|a| a.project_id == *project && a.processing_mode == Some(mode))
    };
    let modes = &ctx.snapshot.modes;
    ProjectApps {
        conversation: pinned(ProcessingMode::Conversation)
            || modes.may_have(project, ProcessingMode::Conversation),
        dispatch: pinned(ProcessingMode::Dispatch)
            || modes.may_have(project, ProcessingMode::Dispatch),
    }
}
