//! What a request reads of the reloadable state, taken once when it arrives: the policy
//! (indexed for the request path) and the mode cache. A reload swaps both for new requests and
//! leaves requests in flight on the snapshot they started with.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AppOverride, PolicySettings};
use crate::domain::{project_key, AppIdLocation, Operation, ProcessingMode};
use crate::message_index::MessageIndex;
use crate::mode_cache::ModeCache;
use crate::policy::evaluate::dispatch_rules;
use crate::policy::{Action, RuleId, RuleSet};

/// The policy and mode cache in force for one request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The policy.
    pub policy: Arc<PolicyRuntime>,
    /// The mode cache.
    pub modes: Arc<ModeCache>,
    /// Which app and store each message id seen belongs to.
    pub messages: Arc<MessageIndex>,
}

/// One app's view of the policy: its rule actions, whether it may use `DISPATCH_ONLY`, and its
/// pinned mode.
#[derive(Debug, Clone, Copy)]
pub struct AppPolicy {
    /// Rule actions (global, with the app's overrides).
    pub rules: RuleSet,
    /// `allow_dispatch_only`.
    pub allow_dispatch_only: bool,
    /// `processing_mode`, when pinned.
    pub pinned: Option<ProcessingMode>,
}

/// The policy settings in the shape the request path reads them. Every per-operation index is
/// derived from the rule catalogue ([`RuleId`]) and the settings, never listed by hand.
#[derive(Debug)]
pub struct PolicyRuntime {
    /// As configured.
    pub settings: PolicySettings,
    /// Per project, per app: the index of its `[[policy.app]]` (looked up by `&str`, no
    /// allocation on the request path).
    apps: HashMap<String, HashMap<String, usize>>,
    /// Per project, the mode every pinned app of it shares, and one of those apps.
    pinned_projects: HashMap<String, Option<(ProcessingMode, String)>>,
    /// Per operation: whether some rule that may apply to it is enabled anywhere.
    relevant: Vec<bool>,
    /// Per operation: whether the body must be read.
    reads_body: Vec<bool>,
}

/// App operations whose responses teach or invalidate the mode cache.
pub fn learns_from(op: Operation) -> bool {
    matches!(
        op,
        Operation::GetApp
            | Operation::ListApps
            | Operation::CreateApp
            | Operation::UpdateApp
            | Operation::DeleteApp
    )
}

impl PolicyRuntime {
    /// Indexes `settings`.
    pub fn new(settings: PolicySettings) -> Self {
        let mut apps: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, a) in settings.apps.iter().enumerate() {
            apps.entry(project_key(&a.project_id).into_owned())
                .or_default()
                .insert(a.app_id.clone(), i);
        }
        let mut pinned_projects: HashMap<String, Option<(ProcessingMode, String)>> = HashMap::new();
        for a in &settings.apps {
            let Some(mode) = a.processing_mode else {
                continue;
            };
            pinned_projects
                .entry(project_key(&a.project_id).into_owned())
                .and_modify(|tie| {
                    if tie.as_ref().is_some_and(|(m, _)| *m != mode) {
                        *tie = None;
                    }
                })
                .or_insert_with(|| Some((mode, a.app_id.clone())));
        }
        let rule_sets: Vec<&RuleSet> = std::iter::once(&settings.rules)
            .chain(settings.apps.iter().map(|a| &a.rules))
            .collect();
        let enabled = |rule: RuleId| rule_sets.iter().any(|set| set.action(rule) != Action::Off);
        let what_if = settings.what_if_dispatch;
        // A rule "runs" for an operation when it applies to it and is enabled somewhere (or, in
        // what-if mode, is a DISPATCH rule the migration report evaluates).
        let runs = |rule: RuleId, op: Operation| {
            rule.applies_to(op)
                && (enabled(rule) || (what_if && dispatch_rules().any(|r| r == rule)))
        };
        let relevant: Vec<bool> = Operation::ALL
            .iter()
            .map(|op| learns_from(*op) || RuleId::ALL.iter().any(|r| runs(*r, *op)))
            .collect();
        // Only operations that take a body (in the API schema) have one to read.
        let takes_body = |op: Operation| {
            crate::schema::schema()
                .definitions(op)
                .any(|d| d.takes_body())
        };
        let reads_body = Operation::ALL
            .iter()
            .map(|op| {
                takes_body(*op)
                    && RuleId::ALL.iter().any(|r| {
                        runs(*r, *op)
                            && (r.reads_body() || op.app_id_location() == AppIdLocation::Body)
                    })
            })
            .collect();
        Self {
            settings,
            apps,
            pinned_projects,
            relevant,
            reads_body,
        }
    }

    /// Whether the policy stage has anything to do for `op`.
    pub fn relevant(&self, op: Operation) -> bool {
        self.relevant[op.index()]
    }

    /// Whether the policy stage reads `op`'s body.
    pub fn reads_body(&self, op: Operation) -> bool {
        self.reads_body[op.index()]
    }

    /// The global view (no `[[policy.app]]` entry).
    pub fn global(&self) -> AppPolicy {
        AppPolicy {
            rules: self.settings.rules,
            allow_dispatch_only: false,
            pinned: None,
        }
    }

    /// The `[[policy.app]]` entry of an app.
    pub fn app(&self, project: &str, app: &str) -> Option<&AppOverride> {
        self.apps
            .get(project_key(project).as_ref())
            .and_then(|apps| apps.get(app))
            .map(|i| &self.settings.apps[*i])
    }

    /// The view of the policy for an app (the global one when it has no entry).
    pub fn app_policy(&self, project: Option<&str>, app: Option<&str>) -> AppPolicy {
        match (project, app) {
            (Some(p), Some(a)) => self.app(p, a).map_or_else(
                || self.global(),
                |o| AppPolicy {
                    rules: o.rules,
                    allow_dispatch_only: o.allow_dispatch_only,
                    pinned: o.processing_mode,
                },
            ),
            _ => self.global(),
        }
    }

    /// The mode every pinned app of `project` shares, with one of those apps.
    pub fn pinned_project(&self, project: &str) -> Option<(ProcessingMode, String)> {
        self.pinned_projects
            .get(project_key(project).as_ref())
            .cloned()
            .flatten()
    }

    /// Every `[[policy.app]]` with a pinned mode.
    pub fn pinned_apps(&self) -> impl Iterator<Item = &AppOverride> {
        self.settings
            .apps
            .iter()
            .filter(|a| a.processing_mode.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamTarget};

    fn defaults() -> PolicyRuntime {
        PolicyRuntime::new(Config::with_upstream(UpstreamTarget::Embedded { seed: None }).policy)
    }

    #[test]
    fn the_body_is_read_only_where_an_enabled_rule_needs_it() {
        let policy = defaults();
        let readers: Vec<_> = Operation::ALL
            .iter()
            .filter(|o| policy.reads_body(**o))
            .map(|o| o.as_str())
            .collect();
        assert_eq!(
            readers,
            [
                "create_app",
                "update_app",
                "send_message",
                "fetch_last_message",
                "send_event",
                "create_conversation",
                "batch_send"
            ]
        );
    }

    #[test]
    fn turning_rules_off_takes_their_operations_off_the_policy_path() {
        let mut settings = Config::with_upstream(UpstreamTarget::Embedded { seed: None }).policy;
        for rule in RuleId::ALL {
            settings.rules.set(*rule, Action::Off);
        }
        let policy = PolicyRuntime::new(settings);
        for op in Operation::ALL {
            assert_eq!(policy.relevant(*op), learns_from(*op), "{}", op.as_str());
            assert!(!policy.reads_body(*op), "{}", op.as_str());
        }
    }
}
