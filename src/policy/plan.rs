//! The policy's decisions that used to hide in the I/O layer, as pure functions:
//!
//! - [`Plan::new`]: evaluate under both modes, the what-if blockers and the store-retry
//!   candidacy, so [`Plan::needs_mode`] says whether the app's mode matters at all (no lookup
//!   is made when it does not);
//! - [`Plan::settle`]: given how the mode was resolved, the final decision, with
//!   `policy.unknown_mode` applied;
//! - [`Settled::store_retry`]: whether a 404 may be retried once in the other message store —
//!   for a get / update / delete of a message the gateway cannot tie to a store, when the
//!   project has (or may have) an app of the other mode.

use super::evaluate::{evaluate, source_store, store_source, what_if_blockers};
use super::{Action, Decision, Edit, PolicyContext, ProcessingMode, RequestFacts, RuleId};
use crate::domain::Resolution;

/// What the gateway knows of a project's apps, for the store retry: whether it has, or may
/// have, an app in each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectApps {
    /// It has or may have a CONVERSATION app.
    pub conversation: bool,
    /// It has or may have a DISPATCH app.
    pub dispatch: bool,
}

impl ProjectApps {
    /// Nothing known: either mode may be there.
    pub const UNKNOWN: ProjectApps = ProjectApps {
        conversation: true,
        dispatch: true,
    };

    fn may_have(self, mode: ProcessingMode) -> bool {
        match mode {
            ProcessingMode::Conversation => self.conversation,
            ProcessingMode::Dispatch => self.dispatch,
        }
    }
}

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

    /// Whether a 404 may be retried in the other store (so what the project's apps are
    /// matters to [`Plan::settle`]).
    pub fn may_retry_store(&self) -> bool {
        self.retry_candidate
    }

    /// Whether the app's mode changes anything for this request (a message that words the
    /// same refusal differently does not: a `DISPATCH_ONLY` send is refused whatever its app).
    pub fn needs_mode(&self) -> bool {
        !self.as_conversation.same_outcome(&self.as_dispatch) || !self.blockers.is_empty()
    }

    /// The decision once the mode is resolved (or found not to matter: `resolution = None`).
    /// `fail_closed` is `policy.unknown_mode = "reject"`.
    pub fn settle(
        self,
        resolution: Option<Resolution>,
        facts: &RequestFacts<'_>,
        ctx: &PolicyContext<'_>,
        fail_closed: bool,
        apps: ProjectApps,
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
        // The store the first attempt reads: the one a rewrite sets, else the one named, else
        // the API's default.
        let first = decision
            .edits
            .iter()
            .find_map(|e| match e {
                Edit::SetQuery {
                    name: "messages_source",
                    value,
                } => source_store(value),
                _ => None,
            })
            .or_else(|| facts.query.get("messages_source").and_then(source_store))
            .unwrap_or(ProcessingMode::Conversation);
        let other = first.other();
        Ok(Settled {
            store_retry: (self.retry_candidate
                && decision.reject.is_none()
                && apps.may_have(other))
            .then(|| store_source(other)),
            decision,
            mode,
            blockers: if conversation {
                self.blockers
            } else {
                Vec::new()
            },
        })
    }
}

/// Whether a call by message id may need the one-time retry in the other store: neither SDK can
/// tell which store a message id lives in (Node names `CONVERSATION_SOURCE`, Python nothing),
/// and the gateway has not seen this message.
fn store_retry_candidate(facts: &RequestFacts<'_>, ctx: &PolicyContext<'_>) -> bool {
    facts.operation.is_message_by_id()
        && facts.message_store.is_none()
        && ctx.rules.action(RuleId::MessagesSource) == Action::Rewrite
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CacheResult, Operation};
    use crate::policy::{Query, RuleSet};

    fn ctx(rules: &RuleSet) -> PolicyContext<'_> {
        PolicyContext {
            rules,
            create_app_default_mode: None,
            max_ttl_days: 3650,
            allow_dispatch_only: false,
            now: std::time::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_dispatch_only_send_needs_no_mode_to_be_refused() {
        let rules = RuleSet::default();
        let query = Query::parse(None);
        let body = serde_json::json!({"recipient": {"contact_id": "k"}, "processing_strategy": "DISPATCH_ONLY"});
        let facts = RequestFacts {
            operation: Operation::SendMessage,
            query: &query,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        let plan = Plan::new(&facts, &ctx(&rules), false);
        assert!(!plan.needs_mode());
        let settled = plan
            .settle(None, &facts, &ctx(&rules), false, ProjectApps::UNKNOWN)
            .expect("settled");
        assert_eq!(
            settled.decision.reject.map(|r| r.rule),
            Some(RuleId::SendContactRecipient)
        );
    }

    #[test]
    fn the_mode_matters_only_when_the_two_answers_differ() {
        let rules = RuleSet::default();
        let q = Query::parse(Some("app_id=a"));
        let facts = RequestFacts {
            operation: Operation::ListApps,
            query: &q,
            body: None,
            message_store: None,
            pseudo: None,
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
            message_store: None,
            pseudo: None,
        };
        let c = ctx(&rules);
        let open = Plan::new(&facts, &c, false)
            .settle(
                Some(Resolution::Unavailable),
                &facts,
                &c,
                false,
                ProjectApps::UNKNOWN,
            )
            .expect("fail open");
        assert!(open.decision.is_empty());
        assert_eq!(
            Plan::new(&facts, &c, false)
                .settle(
                    Some(Resolution::Unavailable),
                    &facts,
                    &c,
                    true,
                    ProjectApps::UNKNOWN
                )
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
                ProjectApps::UNKNOWN,
            )
            .expect("known");
        assert_eq!(
            dispatch.decision.reject.map(|r| r.rule),
            Some(RuleId::ListMessagesContactFilter)
        );
    }

    #[test]
    fn the_store_retry_goes_to_the_other_store_when_the_project_may_have_it() {
        let rules = RuleSet::default();
        let c = ctx(&rules);
        let known = |m| Some(Resolution::Known(m, CacheResult::Hit));
        for (query, resolution, expected) in [
            // Node names CONVERSATION_SOURCE: the retry reads DISPATCH_SOURCE.
            (
                "messages_source=CONVERSATION_SOURCE",
                None,
                Some("DISPATCH_SOURCE"),
            ),
            // Python names nothing: the default store is CONVERSATION_SOURCE.
            ("", None, Some("DISPATCH_SOURCE")),
            // A DISPATCH project tie adds DISPATCH_SOURCE; the retry reads CONVERSATION_SOURCE.
            (
                "",
                known(ProcessingMode::Dispatch),
                Some("CONVERSATION_SOURCE"),
            ),
        ] {
            let q = Query::parse(Some(query));
            let facts = RequestFacts {
                operation: Operation::UpdateMessage,
                query: &q,
                body: None,
                message_store: None,
                pseudo: None,
            };
            let s = Plan::new(&facts, &c, false)
                .settle(resolution, &facts, &c, false, ProjectApps::UNKNOWN)
                .expect("settled");
            assert_eq!(s.store_retry, expected, "{query:?} {resolution:?}");
        }
        // A project known to have only CONVERSATION apps: no retry in DISPATCH_SOURCE.
        let q = Query::parse(Some(""));
        let facts = RequestFacts {
            operation: Operation::GetMessage,
            query: &q,
            body: None,
            message_store: None,
            pseudo: None,
        };
        let only_conversation = ProjectApps {
            conversation: true,
            dispatch: false,
        };
        let s = Plan::new(&facts, &c, false)
            .settle(None, &facts, &c, false, only_conversation)
            .expect("settled");
        assert_eq!(s.store_retry, None);
        // A message the gateway has seen: sent to its store, never retried.
        let facts = RequestFacts {
            message_store: Some(ProcessingMode::Dispatch),
            pseudo: None,
            ..facts
        };
        let s = Plan::new(&facts, &c, false)
            .settle(None, &facts, &c, false, ProjectApps::UNKNOWN)
            .expect("settled");
        assert_eq!(s.store_retry, None);
        assert_eq!(
            s.decision.query_settings().collect::<Vec<_>>(),
            [("messages_source", "DISPATCH_SOURCE")]
        );
        let mut off = RuleSet::default();
        off.set(RuleId::MessagesSource, Action::Off);
        let facts = RequestFacts {
            message_store: None,
            pseudo: None,
            ..facts
        };
        let s = Plan::new(&facts, &ctx(&off), false)
            .settle(None, &facts, &ctx(&off), false, ProjectApps::UNKNOWN)
            .expect("settled");
        assert_eq!(s.store_retry, None, "off disables the retry");
    }

    #[test]
    fn a_known_conversation_message_never_gets_dispatch_source() {
        let rules = RuleSet::default();
        let c = ctx(&rules);
        for query in [
            "",
            "messages_source=CONVERSATION_SOURCE",
            "messages_source=DISPATCH_SOURCE",
        ] {
            let q = Query::parse(Some(query));
            let facts = RequestFacts {
                operation: Operation::GetMessage,
                query: &q,
                body: None,
                message_store: Some(ProcessingMode::Conversation),
                pseudo: None,
            };
            let s = Plan::new(&facts, &c, false)
                .settle(None, &facts, &c, false, ProjectApps::UNKNOWN)
                .expect("settled");
            assert!(
                s.decision
                    .query_settings()
                    .all(|(_, v)| v == "CONVERSATION_SOURCE"),
                "{query}"
            );
        }
    }
}
