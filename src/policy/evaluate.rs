//! Rule evaluation: `evaluate(&RequestFacts, mode, &PolicyContext) -> Decision`.
//!
//! Each rule is a pure check over facts already extracted from the request (operation, query,
//! parsed body) and the app's mode. Rules run in catalogue order ([`RuleId::ALL`]): validity
//! first, then per-MT overrides, then the DISPATCH rules, then the create-time pin. The first enforcing
//! match rejects; rewrites accumulate; shadow matches are only recorded.

use serde_json::Value;

use super::decision::{Decision, Edit, Match, Rejection};
pub use super::facts::{PolicyContext, Query, RequestFacts};
use super::fields;
use super::pseudo::{self, PseudoFacts};
use super::rules::Family;
use super::{Action, ProcessingMode, RuleId, RuleSet};
use crate::domain::Operation;

/// The `messages_source` that holds a mode's messages.
pub const fn store_source(mode: ProcessingMode) -> &'static str {
    match mode {
        ProcessingMode::Conversation => "CONVERSATION_SOURCE",
        ProcessingMode::Dispatch => "DISPATCH_SOURCE",
    }
}

/// The mode whose messages a `messages_source` value holds.
pub fn source_store(source: &str) -> Option<ProcessingMode> {
    match source {
        "CONVERSATION_SOURCE" => Some(ProcessingMode::Conversation),
        "DISPATCH_SOURCE" => Some(ProcessingMode::Dispatch),
        _ => None,
    }
}

/// The rules that describe what DISPATCH mode refuses or needs (the `Dispatch` family).
pub fn dispatch_rules() -> impl Iterator<Item = RuleId> {
    RuleId::ALL
        .iter()
        .copied()
        .filter(|r| r.family() == Family::Dispatch)
}

/// A rule's finding: the message for enforce and the edits for rewrite.
struct Finding {
    message: String,
    edits: Vec<Edit>,
    /// The request cannot be rewritten either: refused under rewrite too.
    refuses: bool,
}

impl Finding {
    fn reject(message: impl Into<String>) -> Self {
        Finding {
            message: message.into(),
            edits: Vec::new(),
            refuses: false,
        }
    }

    fn rewrite(message: impl Into<String>, edits: Vec<Edit>) -> Self {
        Finding {
            message: message.into(),
            edits,
            refuses: false,
        }
    }

    fn refuse(message: impl Into<String>) -> Self {
        Finding {
            message: message.into(),
            edits: Vec::new(),
            refuses: true,
        }
    }
}

/// The non-empty string at `key` of a JSON object, under its proto or JSON name (absent,
/// empty and non-strings are `None`).
pub fn json_text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    fields::text(v, key)
}

fn dispatch_only(facts: &RequestFacts<'_>) -> bool {
    matches!(
        facts.operation,
        Operation::SendMessage | Operation::BatchSend
    ) && facts.body.and_then(|b| json_text(b, "processing_strategy")) == Some("DISPATCH_ONLY")
}

/// A request as the rules judge it: its facts, the app's mode, and what every rule asks of
/// them first (read once per evaluation, not once per rule).
struct Judged<'f, 'a> {
    facts: &'f RequestFacts<'a>,
    mode: Option<ProcessingMode>,
    /// A send with `processing_strategy = DISPATCH_ONLY`.
    dispatch_only: bool,
}

impl<'f, 'a> Judged<'f, 'a> {
    fn new(facts: &'f RequestFacts<'a>, mode: Option<ProcessingMode>) -> Self {
        Judged {
            facts,
            mode,
            dispatch_only: dispatch_only(facts),
        }
    }

    /// The mode this request is processed in: the app's, or DISPATCH for a DISPATCH_ONLY send.
    fn effective_mode(&self) -> Option<ProcessingMode> {
        if self.dispatch_only {
            Some(ProcessingMode::Dispatch)
        } else {
            self.mode
        }
    }
}

/// A `ttl_days` value as protojson reads an int32: a JSON number or a numeric string; an
/// integral float (`30.0`, `3e1`) counts as the integer it is.
fn ttl(v: &Value) -> Option<i64> {
    let integral = |f: f64| (f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64);
    v.as_i64()
        .or_else(|| v.as_f64().and_then(integral))
        .or_else(|| {
            v.as_str().and_then(|s| {
                let s = s.trim();
                s.parse()
                    .ok()
                    .or_else(|| s.parse::<f64>().ok().and_then(integral))
            })
        })
}

/// Every retention problem of an app body: (field path, what is wrong).
fn retention_problems(body: &Value) -> Option<String> {
    if let Some(r) = fields::get(body, "retention_policy").filter(|v| !v.is_null()) {
        if let Some(kind) = json_text(r, "retention_type") {
            if !matches!(
                kind,
                "MESSAGE_EXPIRE_POLICY" | "CONVERSATION_EXPIRE_POLICY" | "PERSIST_RETENTION_POLICY"
            ) {
                return Some(format!(
                    "retention_policy.retention_type: {kind} is not one of MESSAGE_EXPIRE_POLICY, CONVERSATION_EXPIRE_POLICY, PERSIST_RETENTION_POLICY"
                ));
            }
        }
        if let Some(v) = fields::get(r, "ttl_days").filter(|v| !v.is_null()) {
            if !ttl(v).is_some_and(|d| (1..=3650).contains(&d)) {
                return Some(format!(
                    "retention_policy.ttl_days: {v} is outside 1..3650 days, the range for CONVERSATION retention; choose a value in range"
                ));
            }
        }
    }
    if let Some(r) = fields::get(body, "dispatch_retention_policy").filter(|v| !v.is_null()) {
        if let Some(kind) = json_text(r, "retention_type") {
            if kind != "MESSAGE_EXPIRE_POLICY" {
                return Some(format!(
                    "dispatch_retention_policy.retention_type: {kind} is not supported in DISPATCH processing mode; use MESSAGE_EXPIRE_POLICY"
                ));
            }
        }
        if let Some(v) = fields::get(r, "ttl_days").filter(|v| !v.is_null()) {
            if !ttl(v).is_some_and(|d| (0..=7).contains(&d)) {
                return Some(format!(
                    "dispatch_retention_policy.ttl_days: {v} is outside 0..7 days, the range for DISPATCH retention (0 stores nothing); choose a value in range"
                ));
            }
        }
    }
    None
}

fn check(rule: RuleId, judged: &Judged<'_, '_>, ctx: &PolicyContext<'_>) -> Option<Finding> {
    let Judged { facts, mode, .. } = *judged;
    if !rule.applies_to(facts.operation) {
        return None;
    }
    let dispatch = judged.effective_mode() == Some(ProcessingMode::Dispatch);
    let body = facts.body;
    match rule {
        // Request rules judge the request itself, in the admit and facts phases.
        RuleId::Canonical | RuleId::UnrecognizedRoute => None,
        RuleId::PseudoIds => match facts.pseudo? {
            PseudoFacts::Refused(message) => Some(Finding::refuse(message.clone())),
            PseudoFacts::Resolved(r) => Some(Finding::rewrite(
                "pseudo id: resolved to the channel identity it stands for",
                pseudo::edits(facts.operation, r),
            )),
        },
        RuleId::SendContactRecipient if facts.operation == Operation::BatchSend => {
            let contacts = body.map(super::batch::contact_recipients).unwrap_or_default();
            (dispatch && !contacts.is_empty()).then(|| {
                let why = if mode != Some(ProcessingMode::Dispatch) {
                    "batches sent with processing_strategy DISPATCH_ONLY"
                } else {
                    "apps in DISPATCH processing mode"
                };
                Finding::rewrite(
                    format!("{}: not supported for {why}; use recipient.identified_by.channel_identities", super::batch::paths(&contacts, "recipient.contact_id")),
                    vec![Edit::ResolveContactRecipient],
                )
            })
        }
        RuleId::BatchRecipientsRange => super::batch::recipients_range(body).map(Finding::reject),
        RuleId::BatchSendAfterRange => super::batch::send_after_range(body, ctx.now).map(Finding::reject),
        RuleId::BatchReservedMetadata => super::batch::reserved_metadata(body)
            .map(|m| Finding::rewrite(m, vec![Edit::DropReservedMetadata])),
        RuleId::SendContactRecipient => {
            let contact = body
                .and_then(|b| fields::get(b, "recipient"))
                .and_then(|r| json_text(r, "contact_id"));
            (dispatch && contact.is_some()).then(|| {
                let why = if judged.dispatch_only && mode != Some(ProcessingMode::Dispatch) {
                    "messages sent with processing_strategy DISPATCH_ONLY"
                } else {
                    "apps in DISPATCH processing mode"
                };
                Finding::rewrite(
                    format!("recipient.contact_id: not supported for {why}; use recipient.identified_by.channel_identities"),
                    vec![Edit::ResolveContactRecipient],
                )
            })
        }
        RuleId::ListMessagesContactFilter => {
            if mode != Some(ProcessingMode::Dispatch) {
                return None;
            }
            let what = if facts.operation == Operation::ListEvents { "events" } else { "messages" };
            ["contact_id", "conversation_id"]
                .into_iter()
                .find(|p| facts.query.has(p))
                .map(|p| Finding::reject(format!(
                    "{p}: not supported when listing {what} of an app in DISPATCH processing mode, which keeps no contacts or conversations; filter by channel_identity instead"
                )))
        }
        RuleId::MessagesSource => {
            let given = facts
                .query
                .get("messages_source")
                .filter(|v| !v.is_empty());
            if let Some(store) = facts.message_store {
                // The gateway knows where this message lives: send the call there.
                let want = store_source(store);
                let fine = given == Some(want) || (given.is_none() && store == ProcessingMode::Conversation);
                return (!fine).then(|| {
                    Finding::rewrite(
                        format!("messages_source: this message lives in {want} (it was sent by an app in {store} processing mode); send messages_source={want}"),
                        vec![Edit::SetQuery { name: "messages_source", value: want }],
                    )
                });
            }
            (mode == Some(ProcessingMode::Dispatch) && given.is_none()).then(|| {
                Finding::rewrite(
                    "messages_source: DISPATCH-mode messages are only found in DISPATCH_SOURCE; add messages_source=DISPATCH_SOURCE",
                    vec![Edit::SetQuery { name: "messages_source", value: "DISPATCH_SOURCE" }],
                )
            })
        }
        RuleId::ConversationOnlyEndpoint => (mode == Some(ProcessingMode::Dispatch)).then(|| {
            Finding::reject(format!(
                "app_id: {} is not available for apps in DISPATCH processing mode, which keep no conversations; address recipients with recipient.identified_by, or switch the app to CONVERSATION processing mode",
                facts.operation.as_str()
            ))
        }),
        RuleId::FetchLastMessageContactIds => {
            let b = body?;
            let has_ids = fields::get(b, "contact_ids")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            let source_dispatch = !matches!(json_text(b, "messages_source"), Some("CONVERSATION_SOURCE"));
            (has_ids && (mode == Some(ProcessingMode::Dispatch) || source_dispatch)).then(|| {
                Finding::reject(
                    "contact_ids: not supported with messages_source DISPATCH_SOURCE (the default here) or for apps in DISPATCH processing mode; use channel_identities",
                )
            })
        }
        RuleId::RetentionRange => body.and_then(retention_problems).map(Finding::reject),
        RuleId::MaxTtlDays => {
            let b = body?;
            let cap = ctx.max_ttl_days;
            if cap >= 3650 {
                return None;
            }
            const PATHS: [(&str, &[&str]); 2] = [
                ("retention_policy", &["retention_policy", "ttl_days"]),
                ("dispatch_retention_policy", &["dispatch_retention_policy", "ttl_days"]),
            ];
            let over: Vec<_> = PATHS
                .iter()
                .filter(|(obj, _)| {
                    fields::get(b, obj)
                        .and_then(|r| fields::get(r, "ttl_days"))
                        .and_then(ttl)
                        .is_some_and(|d| d > i64::from(cap))
                })
                .collect();
            let (first, _) = over.first()?;
            Some(Finding::rewrite(
                format!("{first}.ttl_days: above the organisation's cap of {cap} days; choose {cap} or fewer"),
                over.iter()
                    .map(|(_, path)| Edit::SetField { path, value: Value::from(cap) })
                    .collect(),
            ))
        }
        RuleId::CreatePinMode => {
            let pinned = ctx.create_app_default_mode?;
            let absent = body.is_none_or(|b| json_text(b, "processing_mode").is_none());
            absent.then(|| {
                Finding::rewrite(
                    format!("processing_mode: not set; the gateway pins {pinned}"),
                    vec![Edit::SetField { path: &["processing_mode"], value: Value::from(pinned.as_str()) }],
                )
            })
        }
        RuleId::DispatchOnlyOverride => (judged.dispatch_only && !ctx.allow_dispatch_only).then(|| {
            Finding::reject(
                "processing_strategy: DISPATCH_ONLY is not allowed for this app by the gateway's policy; send with processing_strategy DEFAULT, or ask the operator to set allow_dispatch_only for the app",
            )
        }),
        RuleId::DispatchOnlyMetadata => {
            let b = body?;
            if !judged.dispatch_only || mode != Some(ProcessingMode::Conversation) {
                return None;
            }
            const FIELDS: [(&str, &[&str]); 2] = [
                ("conversation_metadata", &["conversation_metadata"]),
                ("correlation_id", &["correlation_id"]),
            ];
            let found: Vec<_> = FIELDS
                .iter()
                .filter(|(f, _)| fields::present(b, f))
                .collect();
            let per_recipient = super::batch::recipients_with(b, "conversation_metadata");
            let first = match (found.first(), per_recipient.is_empty()) {
                (Some((first, _)), _) => (*first).to_string(),
                (None, false) => super::batch::paths(&per_recipient, "conversation_metadata"),
                (None, true) => return None,
            };
            let mut edits: Vec<Edit> = found.iter().map(|(_, path)| Edit::RemoveField { path }).collect();
            if !per_recipient.is_empty() {
                edits.push(Edit::RemoveInRecipients { field: "conversation_metadata" });
            }
            Some(Finding::rewrite(
                format!("{first}: not supported with processing_strategy DISPATCH_ONLY on an app in CONVERSATION processing mode; remove it or send with processing_strategy DEFAULT"),
                edits,
            ))
        }
    }
}

/// Evaluates every enabled rule. `mode` is `None` when the app's mode is unknown (or the call
/// names no app), in which case only mode-independent rules can apply.
pub fn evaluate(
    facts: &RequestFacts<'_>,
    mode: Option<ProcessingMode>,
    ctx: &PolicyContext<'_>,
) -> Decision {
    let mut decision = Decision::default();
    // Pseudo ids are resolved first; the other rules judge the request as resolved.
    let as_sent = Judged::new(facts, mode);
    let resolved = match ctx.rules.action(RuleId::PseudoIds) {
        Action::Rewrite => check(RuleId::PseudoIds, &as_sent, ctx)
            .filter(|f| !f.refuses && !f.edits.is_empty())
            .map(|f| pseudo::substituted(facts, &f.edits)),
        _ => None,
    };
    let current = match &resolved {
        Some((body, query)) => RequestFacts {
            body: body.as_ref(),
            query,
            pseudo: None,
            ..*facts
        },
        None => *facts,
    };
    let as_resolved = match resolved {
        Some(_) => Judged::new(&current, mode),
        None => Judged {
            facts: &current,
            ..as_sent
        },
    };
    for &rule in RuleId::ALL {
        let action = ctx.rules.action(rule);
        if action == Action::Off || !rule.applies_to(facts.operation) {
            continue;
        }
        let judged = if rule == RuleId::PseudoIds {
            &as_sent
        } else {
            &as_resolved
        };
        let Some(finding) = check(rule, judged, ctx) else {
            continue;
        };
        decision.matches.push(Match { rule, action });
        let rejects = action == Action::Enforce || (action == Action::Rewrite && finding.refuses);
        if rejects {
            if decision.reject.is_none() {
                decision.reject = Some(Rejection {
                    rule,
                    message: finding.message,
                });
            }
        } else if action == Action::Rewrite {
            decision.edits.extend(finding.edits);
        }
    }
    // A rejection is all that happens: rewrites and further enforcing matches never take
    // effect, so only the rejecting match and shadow records remain.
    if let Some(rejecting) = decision.reject.as_ref().map(|r| r.rule) {
        decision.edits.clear();
        decision
            .matches
            .retain(|m| m.action == Action::Shadow || m.rule == rejecting);
    }
    decision
}

/// The DISPATCH rules a request on a CONVERSATION app would trip if the app were in DISPATCH
/// mode, whatever their configured actions.
pub fn what_if_blockers(facts: &RequestFacts<'_>, ctx: &PolicyContext<'_>) -> Vec<RuleId> {
    let mut rules = RuleSet::default();
    for rule in RuleId::ALL {
        rules.set(*rule, Action::Off);
    }
    for rule in dispatch_rules() {
        rules.set(rule, Action::Shadow);
    }
    let what_if = PolicyContext {
        rules: &rules,
        ..*ctx
    };
    evaluate(facts, Some(ProcessingMode::Dispatch), &what_if)
        .matches
        .into_iter()
        .map(|m| m.rule)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ProcessingMode::{Conversation as C, Dispatch as D};

    fn ctx(rules: &RuleSet) -> PolicyContext<'_> {
        PolicyContext {
            rules,
            create_app_default_mode: None,
            max_ttl_days: 3650,
            allow_dispatch_only: false,
            now: std::time::UNIX_EPOCH,
        }
    }

    fn with(rule: RuleId, action: Action) -> RuleSet {
        let mut r = RuleSet::default();
        r.set(rule, action);
        r
    }

    fn run(
        op: Operation,
        query: &str,
        body: Option<Value>,
        mode: Option<ProcessingMode>,
        rules: &RuleSet,
    ) -> Decision {
        let q = Query::parse(Some(query));
        let facts = RequestFacts {
            operation: op,
            query: &q,
            body: body.as_ref(),
            message_store: None,
            pseudo: None,
        };
        evaluate(&facts, mode, &ctx(rules))
    }

    fn send_to_contact() -> Value {
        json!({"app_id": "a", "recipient": {"contact_id": "alice"}, "message": {"text_message": {"text": "x"}}})
    }

    fn send_identified() -> Value {
        json!({"app_id": "a", "recipient": {"identified_by": {"channel_identities": [{"channel": "SMS", "identity": "+1"}]}}})
    }

    /// Asserts rule × action behaviour: enforce rejects, rewrite edits, shadow records, off skips.
    fn assert_actions(
        rule: RuleId,
        op: Operation,
        query: &str,
        body: Option<Value>,
        mode: Option<ProcessingMode>,
    ) {
        for action in Action::ALL {
            if !rule.supports(action) {
                continue;
            }
            let d = run(op, query, body.clone(), mode, &with(rule, action));
            let mine: Vec<_> = d.matches.iter().filter(|m| m.rule == rule).collect();
            match action {
                Action::Enforce => {
                    assert_eq!(
                        d.reject.as_ref().map(|r| r.rule),
                        Some(rule),
                        "{rule} enforce"
                    );
                    assert!(d.edits.is_empty());
                }
                Action::Rewrite => {
                    assert!(d.reject.is_none(), "{rule} rewrite rejected: {d:?}");
                    assert!(!d.edits.is_empty(), "{rule} rewrite made no edit");
                    assert_eq!(d.acting_rules().next(), Some(rule));
                }
                Action::Shadow => {
                    assert_eq!(mine.len(), 1, "{rule} shadow");
                    assert!(d.reject.is_none() && d.edits.is_empty());
                    assert_eq!(d.disposition(), crate::policy::Disposition::Shadow);
                }
                Action::Off => assert!(mine.is_empty(), "{rule} off still matched"),
            }
        }
    }

    fn assert_no_match(
        rule: RuleId,
        op: Operation,
        query: &str,
        body: Option<Value>,
        mode: Option<ProcessingMode>,
    ) {
        for action in [Action::Enforce, Action::Rewrite, Action::Shadow] {
            if !rule.supports(action) {
                continue;
            }
            let d = run(op, query, body.clone(), mode, &with(rule, action));
            assert!(
                d.matches.iter().all(|m| m.rule != rule),
                "{rule} {action} matched: {d:?}"
            );
        }
    }

    #[test]
    fn send_contact_recipient() {
        let r = RuleId::SendContactRecipient;
        assert_actions(
            r,
            Operation::SendMessage,
            "",
            Some(send_to_contact()),
            Some(D),
        );
        assert_actions(
            r,
            Operation::SendEvent,
            "",
            Some(send_to_contact()),
            Some(D),
        );
        assert_no_match(
            r,
            Operation::SendMessage,
            "",
            Some(send_to_contact()),
            Some(C),
        );
        assert_no_match(r, Operation::SendMessage, "", Some(send_to_contact()), None);
        assert_no_match(
            r,
            Operation::SendMessage,
            "",
            Some(send_identified()),
            Some(D),
        );
        let d = run(
            Operation::SendMessage,
            "",
            Some(send_to_contact()),
            Some(D),
            &RuleSet::default(),
        );
        let msg = d.reject.expect("rejected").message;
        assert!(msg.starts_with("recipient.contact_id"), "{msg}");
        assert!(msg.contains("identified_by"), "{msg}");
    }

    #[test]
    fn dispatch_only_send_is_evaluated_with_dispatch_rules_on_a_conversation_app() {
        let mut body = send_to_contact();
        body["processing_strategy"] = json!("DISPATCH_ONLY");
        let mut rules = RuleSet::default();
        rules.set(RuleId::DispatchOnlyOverride, Action::Off);
        let d = run(Operation::SendMessage, "", Some(body), Some(C), &rules);
        let rejection = d.reject.expect("rejected");
        assert_eq!(rejection.rule, RuleId::SendContactRecipient);
        assert!(rejection.message.contains("DISPATCH_ONLY"));
    }

    #[test]
    fn list_messages_contact_filter() {
        let r = RuleId::ListMessagesContactFilter;
        assert_actions(
            r,
            Operation::ListMessages,
            "app_id=a&contact_id=k&messages_source=DISPATCH_SOURCE",
            None,
            Some(D),
        );
        assert_actions(
            r,
            Operation::ListMessages,
            "conversation_id=c&messages_source=DISPATCH_SOURCE",
            None,
            Some(D),
        );
        assert_actions(r, Operation::ListEvents, "contact_id=k", None, Some(D));
        assert_no_match(r, Operation::ListMessages, "contact_id=k", None, Some(C));
        assert_no_match(r, Operation::ListMessages, "contact_id=", None, Some(D));
        assert_no_match(
            r,
            Operation::ListMessages,
            "channel_identity=%2B1",
            None,
            Some(D),
        );
    }

    #[test]
    fn messages_source() {
        let r = RuleId::MessagesSource;
        for op in [
            Operation::ListMessages,
            Operation::GetMessage,
            Operation::UpdateMessage,
            Operation::DeleteMessage,
        ] {
            assert_actions(r, op, "", None, Some(D));
            assert_no_match(r, op, "", None, Some(C));
            assert_no_match(r, op, "messages_source=CONVERSATION_SOURCE", None, Some(D));
        }
        let d = run(
            Operation::GetMessage,
            "",
            None,
            Some(D),
            &RuleSet::default(),
        );
        assert_eq!(
            d.query_settings().collect::<Vec<_>>(),
            [("messages_source", "DISPATCH_SOURCE")]
        );
    }

    #[test]
    fn conversation_only_endpoint() {
        let r = RuleId::ConversationOnlyEndpoint;
        for op in [
            Operation::ListConversations,
            Operation::CreateConversation,
            Operation::RecentConversations,
            Operation::InjectMessage,
            Operation::InjectEvent,
        ] {
            assert_actions(r, op, "app_id=a", None, Some(D));
            assert_no_match(r, op, "app_id=a", None, Some(C));
            assert_no_match(r, op, "app_id=a", None, None);
        }
        assert_no_match(r, Operation::GetConversation, "", None, Some(D));
    }

    #[test]
    fn fetch_last_message_contact_ids() {
        let r = RuleId::FetchLastMessageContactIds;
        let ids = json!({"app_id": "a", "contact_ids": ["k"]});
        assert_actions(
            r,
            Operation::FetchLastMessage,
            "",
            Some(ids.clone()),
            Some(D),
        );
        // DISPATCH_SOURCE is the default here, so even a CONVERSATION app trips it…
        assert_actions(
            r,
            Operation::FetchLastMessage,
            "",
            Some(ids.clone()),
            Some(C),
        );
        assert_actions(r, Operation::FetchLastMessage, "", Some(ids), None);
        // …unless it asks for CONVERSATION_SOURCE.
        let conv =
            json!({"app_id": "a", "contact_ids": ["k"], "messages_source": "CONVERSATION_SOURCE"});
        assert_no_match(
            r,
            Operation::FetchLastMessage,
            "",
            Some(conv.clone()),
            Some(C),
        );
        assert_actions(r, Operation::FetchLastMessage, "", Some(conv), Some(D));
        let identities =
            json!({"app_id": "a", "channel_identities": [{"channel": "SMS", "identity": "+1"}]});
        assert_no_match(
            r,
            Operation::FetchLastMessage,
            "",
            Some(identities),
            Some(D),
        );
    }

    #[test]
    fn retention_range() {
        let r = RuleId::RetentionRange;
        for (body, field) in [
            (
                json!({"retention_policy": {"ttl_days": 0}}),
                "retention_policy.ttl_days",
            ),
            (
                json!({"retention_policy": {"ttl_days": 3651}}),
                "retention_policy.ttl_days",
            ),
            (
                json!({"retention_policy": {"ttl_days": "abc"}}),
                "retention_policy.ttl_days",
            ),
            (
                json!({"retention_policy": {"retention_type": "FOREVER"}}),
                "retention_policy.retention_type",
            ),
            (
                json!({"dispatch_retention_policy": {"ttl_days": 8}}),
                "dispatch_retention_policy.ttl_days",
            ),
            (
                json!({"dispatch_retention_policy": {"ttl_days": -1}}),
                "dispatch_retention_policy.ttl_days",
            ),
            (
                json!({"dispatch_retention_policy": {"retention_type": "PERSIST_RETENTION_POLICY"}}),
                "dispatch_retention_policy.retention_type",
            ),
        ] {
            for op in [Operation::CreateApp, Operation::UpdateApp] {
                for mode in [Some(C), Some(D), None] {
                    assert_actions(r, op, "", Some(body.clone()), mode);
                }
            }
            let d = run(
                Operation::CreateApp,
                "",
                Some(body),
                None,
                &RuleSet::default(),
            );
            assert!(d.reject.expect("rejected").message.starts_with(field));
        }
        for body in [
            json!({"retention_policy": {"ttl_days": 1}, "dispatch_retention_policy": {"ttl_days": 7}}),
            json!({"retention_policy": {"ttl_days": "3650", "retention_type": "PERSIST_RETENTION_POLICY"}}),
            json!({"dispatch_retention_policy": {"ttl_days": 0, "retention_type": "MESSAGE_EXPIRE_POLICY"}}),
            json!({"display_name": "x"}),
        ] {
            assert_no_match(r, Operation::CreateApp, "", Some(body), None);
        }
    }

    #[test]
    fn create_pin_mode() {
        let rules = RuleSet::default();
        let q = Query::default();
        let body = json!({"display_name": "x"});
        let facts = RequestFacts {
            operation: Operation::CreateApp,
            query: &q,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        // Inert while create_app_default_mode = keep.
        assert!(evaluate(&facts, None, &ctx(&rules)).is_empty());
        let pinned = PolicyContext {
            create_app_default_mode: Some(C),
            ..ctx(&rules)
        };
        let d = evaluate(&facts, None, &pinned);
        assert_eq!(
            d.edits,
            [Edit::SetField {
                path: &["processing_mode"],
                value: json!("CONVERSATION")
            }]
        );
        let shadow = with(RuleId::CreatePinMode, Action::Shadow);
        let d = evaluate(
            &facts,
            None,
            &PolicyContext {
                rules: &shadow,
                ..pinned
            },
        );
        assert!(d.edits.is_empty());
        assert_eq!(
            d.matches,
            [Match {
                rule: RuleId::CreatePinMode,
                action: Action::Shadow
            }]
        );
        let explicit = json!({"display_name": "x", "processing_mode": "DISPATCH"});
        let facts = RequestFacts {
            body: Some(&explicit),
            ..facts
        };
        assert!(evaluate(&facts, None, &pinned).is_empty());
    }

    #[test]
    fn dispatch_only_override() {
        let r = RuleId::DispatchOnlyOverride;
        let mut body = send_identified();
        body["processing_strategy"] = json!("DISPATCH_ONLY");
        for mode in [Some(C), Some(D), None] {
            assert_actions(r, Operation::SendMessage, "", Some(body.clone()), mode);
        }
        // Off by default.
        let d = run(
            Operation::SendMessage,
            "",
            Some(body.clone()),
            Some(C),
            &RuleSet::default(),
        );
        assert!(d.is_empty());
        // An app that allows it passes.
        let rules = with(r, Action::Enforce);
        let q = Query::default();
        let facts = RequestFacts {
            operation: Operation::SendMessage,
            query: &q,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        let allowed = PolicyContext {
            allow_dispatch_only: true,
            ..ctx(&rules)
        };
        assert!(evaluate(&facts, Some(C), &allowed).is_empty());
    }

    #[test]
    fn dispatch_only_metadata() {
        let r = RuleId::DispatchOnlyMetadata;
        let mut body = send_identified();
        body["processing_strategy"] = json!("DISPATCH_ONLY");
        body["correlation_id"] = json!("c-1");
        body["conversation_metadata"] = json!({"k": "v"});
        assert_actions(r, Operation::SendMessage, "", Some(body.clone()), Some(C));
        assert_no_match(r, Operation::SendMessage, "", Some(body.clone()), Some(D));
        let d = run(
            Operation::SendMessage,
            "",
            Some(body.clone()),
            Some(C),
            &with(r, Action::Rewrite),
        );
        let mut rewritten = body.clone();
        crate::policy::decision::apply_body_edits(&mut rewritten, &d.edits);
        assert!(rewritten.get("correlation_id").is_none());
        assert!(rewritten.get("conversation_metadata").is_none());
        assert_eq!(rewritten["recipient"], body["recipient"]);
        let mut plain = body;
        plain["processing_strategy"] = json!("DEFAULT");
        assert_no_match(r, Operation::SendMessage, "", Some(plain), Some(C));
    }

    #[test]
    fn max_ttl_days() {
        let r = RuleId::MaxTtlDays;
        let rules = RuleSet::default();
        let q = Query::default();
        let body = json!({"retention_policy": {"ttl_days": 400}, "dispatch_retention_policy": {"ttl_days": 7}});
        let facts = RequestFacts {
            operation: Operation::CreateApp,
            query: &q,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        // Inert at the default cap.
        assert!(evaluate(&facts, None, &ctx(&rules)).is_empty());
        for action in [
            Action::Enforce,
            Action::Rewrite,
            Action::Shadow,
            Action::Off,
        ] {
            let rules = with(r, action);
            let capped = PolicyContext {
                max_ttl_days: 5,
                ..ctx(&rules)
            };
            let d = evaluate(&facts, None, &capped);
            match action {
                Action::Enforce => assert_eq!(d.reject.map(|x| x.rule), Some(r)),
                Action::Rewrite => {
                    let mut b = body.clone();
                    crate::policy::decision::apply_body_edits(&mut b, &d.edits);
                    assert_eq!(
                        b,
                        json!({"retention_policy": {"ttl_days": 5}, "dispatch_retention_policy": {"ttl_days": 5}})
                    );
                }
                Action::Shadow => assert_eq!(d.disposition(), crate::policy::Disposition::Shadow),
                Action::Off => assert!(d.is_empty()),
            }
        }
    }

    #[test]
    fn shadow_records_survive_a_rejection() {
        let mut rules = RuleSet::default();
        rules.set(RuleId::MessagesSource, Action::Shadow);
        let d = run(
            Operation::ListMessages,
            "contact_id=k",
            None,
            Some(D),
            &rules,
        );
        assert_eq!(
            d.matches,
            [
                Match {
                    rule: RuleId::ListMessagesContactFilter,
                    action: Action::Enforce
                },
                Match {
                    rule: RuleId::MessagesSource,
                    action: Action::Shadow
                },
            ]
        );
    }

    #[test]
    fn first_enforcing_rule_wins_and_rewrites_are_dropped_on_reject() {
        // Range and the compliance cap both enforce: the range rule comes first.
        let rules = RuleSet::default();
        let q = Query::default();
        let body = json!({"retention_policy": {"ttl_days": 5000}});
        let facts = RequestFacts {
            operation: Operation::CreateApp,
            query: &q,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        let c = PolicyContext {
            max_ttl_days: 30,
            create_app_default_mode: Some(D),
            ..ctx(&rules)
        };
        let d = evaluate(&facts, None, &c);
        assert_eq!(
            d.reject.as_ref().map(|r| r.rule),
            Some(RuleId::RetentionRange)
        );
        assert!(
            d.edits.is_empty(),
            "pin_mode edits must not survive a rejection"
        );
        assert_eq!(
            d.matches,
            [Match {
                rule: RuleId::RetentionRange,
                action: Action::Enforce
            }]
        );
    }

    #[test]
    fn per_app_override_takes_precedence_over_global() {
        let global = RuleSet::default();
        let mut app = global;
        app.set(RuleId::SendContactRecipient, Action::Shadow);
        let global_d = run(
            Operation::SendMessage,
            "",
            Some(send_to_contact()),
            Some(D),
            &global,
        );
        let app_d = run(
            Operation::SendMessage,
            "",
            Some(send_to_contact()),
            Some(D),
            &app,
        );
        assert_eq!(global_d.disposition(), crate::policy::Disposition::Rejected);
        assert_eq!(app_d.disposition(), crate::policy::Disposition::Shadow);
    }

    #[test]
    fn what_if_lists_dispatch_blockers_whatever_the_actions() {
        let mut rules = RuleSet::default();
        rules.set(RuleId::SendContactRecipient, Action::Off);
        let q = Query::default();
        let body = send_to_contact();
        let facts = RequestFacts {
            operation: Operation::SendMessage,
            query: &q,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        assert_eq!(
            what_if_blockers(&facts, &ctx(&rules)),
            [RuleId::SendContactRecipient]
        );
        let q = Query::parse(Some("app_id=a&contact_id=k"));
        let facts = RequestFacts {
            operation: Operation::ListMessages,
            query: &q,
            body: None,
            message_store: None,
            pseudo: None,
        };
        assert_eq!(
            what_if_blockers(&facts, &ctx(&rules)),
            [RuleId::ListMessagesContactFilter, RuleId::MessagesSource]
        );
        let body = json!({"retention_policy": {"ttl_days": 0}});
        let facts = RequestFacts {
            operation: Operation::CreateApp,
            query: &q,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        assert!(what_if_blockers(&facts, &ctx(&rules)).is_empty());
    }

    #[test]
    fn rules_only_apply_to_their_operations() {
        for rule in RuleId::ALL {
            for op in Operation::ALL {
                if rule.applies_to(*op) {
                    continue;
                }
                let body = json!({"recipient": {"contact_id": "k"}, "contact_ids": ["k"], "retention_policy": {"ttl_days": 0}, "processing_strategy": "DISPATCH_ONLY", "correlation_id": "c"});
                let q = Query::parse(Some("contact_id=k"));
                let facts = RequestFacts {
                    operation: *op,
                    query: &q,
                    body: Some(&body),
                    message_store: None,
                    pseudo: None,
                };
                let rules = with(*rule, Action::Shadow);
                let d = evaluate(&facts, Some(D), &ctx(&rules));
                assert!(
                    d.matches.iter().all(|m| m.rule != *rule),
                    "{rule} matched {}",
                    op.as_str()
                );
            }
        }
    }
}
