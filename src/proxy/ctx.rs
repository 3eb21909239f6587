//! One request's context: what every phase of the request path reads and writes, from the
//! snapshot of the policy and mode cache taken when it arrived to the outcome it ends with.

use std::sync::Arc;

use http::HeaderValue;
use serde_json::Value;

use super::classify::Classification;
use super::meta::TraceId;
use super::snapshot::{AppPolicy, Snapshot};
use crate::domain::{Disposition, Operation, ProcessingMode};
use crate::error::GatewayError;
use crate::policy::{Decision, PolicyContext, Query, RequestFacts, RuleId};
use crate::schema::Api;

/// The ids a request names, owned so the request can be rebuilt around them.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// `{project_id}` of the path, when valid.
    pub project: Option<String>,
    /// The app whose mode applies, wherever the operation names it, when valid.
    pub app: Option<String>,
}

/// A set of rules, iterated in evaluation (catalogue) order; `Copy`, so an [`Outcome`] travels
/// in response extensions for free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleList(u32);

const _: () = assert!(RuleId::ALL.len() <= 32, "RuleList holds one bit per rule");

impl RuleList {
    /// The rules of `rules`.
    pub fn of(rules: impl IntoIterator<Item = RuleId>) -> RuleList {
        RuleList(rules.into_iter().fold(0, |acc, r| acc | 1 << r.index()))
    }

    /// Whether no rule is listed.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The listed rules, in evaluation order.
    pub fn iter(self) -> impl Iterator<Item = RuleId> {
        RuleId::ALL
            .iter()
            .copied()
            .filter(move |r| self.0 & (1 << r.index()) != 0)
    }

    /// The header value: rule ids, comma-separated, in evaluation order.
    pub fn header_value(self) -> Option<HeaderValue> {
        if self.is_empty() {
            return None;
        }
        let text = self
            .iter()
            .map(RuleId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        HeaderValue::from_str(&text).ok()
    }
}

/// What the gateway did with a request, attached to its response for the observe layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The `x-modegate-decision`.
    pub disposition: Disposition,
    /// The `x-modegate-rule`: every rule that rewrote or rejected the request.
    pub rules: RuleList,
    /// The `x-modegate-shadow`: every rule that matched in shadow.
    pub shadow: RuleList,
    /// Whether the gateway failed to complete the request (counted as decision `error`).
    pub error: bool,
}

impl Outcome {
    /// The outcome a decision leads to.
    pub fn of(decision: &Decision) -> Outcome {
        Outcome {
            disposition: decision.disposition(),
            rules: RuleList::of(decision.acting_rules()),
            shadow: RuleList::of(decision.shadow_rules()),
            error: false,
        }
    }

    /// A request the gateway could not complete: counted as decision `error`, with the
    /// disposition the error reports (a policy refusal stays `rejected`).
    pub fn failed(error: &GatewayError) -> Outcome {
        Outcome {
            error: true,
            ..Outcome::answered(error.disposition())
        }
    }

    /// A request the gateway answered without a rule (inject mode's token endpoint).
    pub fn answered(disposition: Disposition) -> Outcome {
        Outcome {
            disposition,
            ..Outcome::default()
        }
    }
}

/// The bounded retry policy: per request, at most one retry after an expired-token 401 (inject
/// mode) and at most one retry in the other message store after a 404; a retry is never
/// retried again by the same kind, so a request costs at most three upstream exchanges.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryBudget {
    /// The expired-token retry was used.
    pub token_used: bool,
    /// The store retry was used.
    pub store_used: bool,
}

/// Everything one request carries through the phases.
#[derive(Debug)]
pub struct RequestCtx {
    /// Policy and mode cache as of the request's arrival.
    pub snapshot: Snapshot,
    /// The API of the listener the request came in on.
    pub api: Api,
    /// The operation and where its ids are.
    pub class: Classification,
    /// The caller's (or generated) request id.
    pub request_id: Option<HeaderValue>,
    /// The W3C trace id, when the caller sent one.
    pub trace_id: Option<TraceId>,
    /// Whether the policy stage has anything to do for this operation.
    pub policy_route: bool,
    /// The pseudo ids the request carries, opened (when keys are configured).
    pub pseudo: Option<crate::policy::PseudoFacts>,
    /// The mode cache's ticket when the request arrived: an app answer to it is learned only
    /// if the app has not changed since.
    pub ticket: u64,
    /// The ids the request names.
    pub subject: Subject,
    /// The decoded query.
    pub query: Query<'static>,
    /// The JSON body, on routes whose rules read it.
    pub body: Option<Value>,
    /// The credential the gateway's own lookups use: the caller's (passthrough) or the
    /// gateway's (inject).
    pub authorization: Option<HeaderValue>,
    /// The app's `[[policy.app]]` view of the policy.
    pub app: AppPolicy,
    /// The mode the decision was made for.
    pub mode: Option<ProcessingMode>,
    /// The message id of a get / update / delete message call.
    pub message_id: Option<String>,
    /// The store that message lives in, when the gateway knows it.
    pub message_store: Option<ProcessingMode>,
    /// The decision.
    pub decision: Decision,
    /// DISPATCH rules this CONVERSATION app's request would trip (what-if mode).
    pub blockers: Vec<RuleId>,
    /// The message store to retry a 404 in, once.
    pub store_retry: Option<&'static str>,
    /// Retries used so far.
    pub retries: RetryBudget,
    /// Raised when the client's request body made no progress for the body idle timeout.
    pub request_body_stalled: Arc<std::sync::atomic::AtomicBool>,
    /// How the request ended.
    pub outcome: Outcome,
    /// When the request arrived (wall clock).
    pub received: std::time::SystemTime,
    /// Recipients of a batch send the gateway changed (the contact rewrite).
    pub batch_rewritten: usize,
}

impl RequestCtx {
    /// A context for a request that arrived now, classified as `class`.
    pub fn new(
        snapshot: Snapshot,
        class: Classification,
        request_id: Option<HeaderValue>,
        trace_id: Option<TraceId>,
    ) -> RequestCtx {
        let policy_route = snapshot.policy.relevant(class.operation);
        let app = snapshot.policy.global();
        let ticket = snapshot.modes.ticket();
        RequestCtx {
            snapshot,
            api: Api::Conversation,
            class,
            request_id,
            trace_id,
            policy_route,
            ticket,
            pseudo: None,
            subject: Subject::default(),
            query: Query::default(),
            body: None,
            authorization: None,
            app,
            mode: None,
            message_id: None,
            message_store: None,
            decision: Decision::default(),
            blockers: Vec::new(),
            store_retry: None,
            retries: RetryBudget::default(),
            request_body_stalled: Arc::default(),
            outcome: Outcome::default(),
            received: std::time::SystemTime::now(),
            batch_rewritten: 0,
        }
    }

    /// Records that the request is ambiguous (rule `request.canonical`): in enforce the decision
    /// becomes a rejection saying what was ambiguous and how to send it; in shadow the request
    /// goes on unchanged and the match is recorded once.
    pub fn ambiguous(&mut self, message: String) {
        self.record_request_rule(RuleId::Canonical, message);
    }

    /// Records a request-family rule's finding under the action the configured rules give it
    /// (see [`Decision::request_finding`]).
    pub fn record_request_rule(&mut self, rule: RuleId, message: String) {
        let action = self.snapshot.policy.settings.rules.action(rule);
        self.decision.request_finding(rule, action, message);
    }

    /// Whether the decision so far is a rejection.
    pub fn rejected(&self) -> bool {
        self.decision.reject.is_some()
    }

    /// The API call.
    pub fn operation(&self) -> Operation {
        self.class.operation
    }

    /// The policy settings that shape the rules for this request.
    pub fn policy_context(&self) -> PolicyContext<'_> {
        let settings = &self.snapshot.policy.settings;
        PolicyContext {
            rules: &self.app.rules,
            create_app_default_mode: settings.create_app_default_mode,
            max_ttl_days: settings.max_ttl_days,
            allow_dispatch_only: self.app.allow_dispatch_only,
            now: self.received,
        }
    }

    /// The facts the rules read.
    pub fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            operation: self.class.operation,
            query: &self.query,
            body: self.body.as_ref(),
            message_store: self.message_store,
            pseudo: self.pseudo.as_ref(),
        }
    }

    /// Whether the client's request body stalled (it explains a failed upstream exchange or
    /// body read).
    pub fn request_body_stalled(&self) -> bool {
        self.request_body_stalled
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
