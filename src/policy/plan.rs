//! The policy's decisions that used to hide in the I/O layer, as pure functions:
//!
//! - [`Plan::new`]: evaluate under both modes, the what-if blockers and the store-retry
//!   candidacy, so [`Plan::needs_mode`] says whether the app's mode matters at all (no lookup
//!   is made when it does not);
//! - [`Plan::settle`]: given how the mode was resolved, the final decision, with
//!   `policy.unknown_mode` applied;
//! - [`Settled::store_retry`]: whether a 404 may be retried once in the other message store.

use super::evaluate::{evaluate, what_if_blockers};
use super::{Action, Decision, PolicyContext, ProcessingMode, RequestFacts, RuleId};
use crate::domain::{Operation, Resolution};

/// `messages_source` values.
pub const CONVERSATION_SOURCE: &str = "CONVERSATION_SOURCE";
/// `messages_source` values.
pub const DISPATCH_SOURCE: &str = "DISPATCH_SOURCE";

/// A request evaluated under both modes, before its mode is known.
#[derive(Debug, Clone)]
pub struct Plan {
    as_conversation: Decision,
    as_dispatch: Decision,
    blockers: Vec<RuleId>,
    retry_candidate: bool,
}

/// The final decision for a request.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// The decision to act on.
    pub decision: Decision,
    /// The mode it was made for (`None`: not known or not needed).
    pub mode: Option<ProcessingMode>,
    /// DISPATCH rules a CONVERSATION app's request would trip (what-if mode).
    pub blockers: Vec<RuleId>,
    /// The store to retry a 404 in, once.
    pub store_retry: Option<&'static str>,
}

/// `policy.unknown_mode = "reject"` and the mode could not be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeUnavailable;

impl Plan {
    /// Evaluates `facts` under both modes; `what_if` is `policy.what_if_mode = "DISPATCH"`.
    pub fn new(facts: &RequestFacts<'_>, ctx: &PolicyContext<'_>, what_if: bool) -> Plan {
        Plan {
            as_conversation: evaluate(facts, Some(ProcessingMode::Conversation), ctx),
            as_dispatch: evaluate(facts, Some(ProcessingMode::Dispatch), ctx),
            blockers: if what_if {
                what_if_blockers(facts, ctx)
            } else {
                Vec::new()
            },
            retry_candidate: store_retry_candidate(facts, ctx),
        }
    }

    /// Whether the app's mode changes anything for this request.
    pub fn needs_mode(&self) -> bool {
        self.as_conversation != self.as_dispatch
            || !self.blockers.is_empty()
            || self.retry_candidate
    }

    /// The decision once the mode is resolved (or found not to matter: `resolution = None`).
    /// `fail_closed` is `policy.unknown_mode = "reject"`.
    pub fn settle(
        self,
        resolution: Option<Resolution>,
        facts: &RequestFacts<'_>,
        ctx: &PolicyContext<'_>,
        fail_closed: bool,
    ) -> Result<Settled, ModeUnavailable> {
        let (decision, mode) = match resolution {
            None => (self.as_conversation, None),
            Some(Resolution::Known(ProcessingMode::Conversation, _)) => {
                (self.as_conversation, Some(ProcessingMode::Conversation))
            }
            Some(Resolution::Known(ProcessingMode::Dispatch, _)) => {
                (self.as_dispatch, Some(ProcessingMode::Dispatch))
            }
            Some(Resolution::Untouched) => (Decision::default(), None),
            Some(Resolution::Unavailable) if fail_closed => return Err(ModeUnavailable),
            // Fail open: only the rules that hold whatever the mode.
            Some(Resolution::Unavailable) => (evaluate(facts, None, ctx), None),
        };
        let conversation = mode == Some(ProcessingMode::Conversation);
        Ok(Settled {
            decision,
            mode,
            blockers: if conversation {
                self.blockers
            } else {
                Vec::new()
            },
            store_retry: (self.retry_candidate && mode == Some(ProcessingMode::Dispatch))
                .then_some(DISPATCH_SOURCE),
        })
    }
}

/// Whether a message read may need the one-time retry in `DISPATCH_SOURCE`: the Node SDK names
/// `CONVERSATION_SOURCE` explicitly on get / delete, which misses DISPATCH-mode messages.
fn store_retry_candidate(facts: &RequestFacts<'_>, ctx: &PolicyContext<'_>) -> bool {
    matches!(
        facts.operation,
        Operation::GetMessage | Operation::DeleteMessage
    ) && facts.query.get("messages_source") == Some(CONVERSATION_SOURCE)
        && ctx.rules.action(RuleId::MessagesSource) == Action::Rewrite
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CacheResult;
    use crate::policy::{Query, RuleSet};

    fn ctx(rules: &RuleSet) -> PolicyContext<'_> {
        PolicyContext {
            rules,
            create_app_default_mode: None,
            max_ttl_days: 3650,
            allow_dispatch_only: false,
        }
    }

    #[test]
    fn the_mode_matters_only_when_the_two_answers_differ() {
        let rules = RuleSet::default();
        let q = Query::parse(Some("app_id=a"));
        let facts = RequestFacts {
            operation: Operation::ListApps,
            query: &q,
            body: None,
        };
        assert!(!Plan::new(&facts, &ctx(&rules), false).needs_mode());
        let facts = RequestFacts {
            operation: Operation::ListMessages,
            ..facts
        };
        assert!(Plan::new(&facts, &ctx(&rules), false).needs_mode());
    }

    #[test]
    fn unknown_mode_fails_open_with_mode_independent_rules_or_closed() {
        let rules = RuleSet::default();
        let q = Query::parse(Some("app_id=a&contact_id=c"));
        let facts = RequestFacts {
            operation: Operation::ListMessages,
            query: &q,
            body: None,
        };
        let c = ctx(&rules);
        let open = Plan::new(&facts, &c, false)
            .settle(Some(Resolution::Unavailable), &facts, &c, false)
            .expect("fail open");
        assert!(open.decision.is_empty());
        assert_eq!(
            Plan::new(&facts, &c, false)
                .settle(Some(Resolution::Unavailable), &facts, &c, true)
                .err(),
            Some(ModeUnavailable)
        );
        let dispatch = Plan::new(&facts, &c, false)
            .settle(
                Some(Resolution::Known(
                    ProcessingMode::Dispatch,
                    CacheResult::Hit,
                )),
                &facts,
                &c,
                false,
            )
            .expect("known");
        assert_eq!(
            dispatch.decision.reject.map(|r| r.rule),
            Some(RuleId::ListMessagesContactFilter)
        );
    }

    #[test]
    fn the_store_retry_is_planned_only_for_dispatch_apps_and_conversation_source_reads() {
        let rules = RuleSet::default();
        let c = ctx(&rules);
        let q = Query::parse(Some("messages_source=CONVERSATION_SOURCE"));
        let facts = RequestFacts {
            operation: Operation::GetMessage,
            query: &q,
            body: None,
        };
        let known = |m| Some(Resolution::Known(m, CacheResult::Hit));
        let plan = Plan::new(&facts, &c, false);
        assert!(plan.needs_mode());
        let s = plan
            .clone()
            .settle(known(ProcessingMode::Dispatch), &facts, &c, false)
            .expect("settled");
        assert_eq!(s.store_retry, Some(DISPATCH_SOURCE));
        let s = plan
            .settle(known(ProcessingMode::Conversation), &facts, &c, false)
            .expect("settled");
        assert_eq!(s.store_retry, None);
        let mut off = RuleSet::default();
        off.set(RuleId::MessagesSource, Action::Off);
        assert!(!Plan::new(&facts, &ctx(&off), false).needs_mode());
    }
}
