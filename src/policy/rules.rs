//! The rule catalogue: every rule id, the actions each supports, and its default action.

use std::fmt;
use std::str::FromStr;

use crate::domain::Operation;

/// What a rule does when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Reject with 400 in the API's error shape; the upstream never sees the request.
    Enforce,
    /// Change the request so the upstream accepts it, then forward.
    Rewrite,
    /// Forward unchanged; record what enforce or rewrite would have done.
    Shadow,
    /// Skip the rule.
    Off,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [
        Action::Enforce,
        Action::Rewrite,
        Action::Shadow,
        Action::Off,
    ];

    /// The config / metric spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Enforce => "enforce",
            Action::Rewrite => "rewrite",
            Action::Shadow => "shadow",
            Action::Off => "off",
        }
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unknown action {s:?} (expected enforce, rewrite, shadow or off)")
            })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The family a rule belongs to: what part of the API contract it guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// The request itself: one meaning for the gateway and the upstream.
    Request,
    /// App create / update.
    App,
    /// Organisation compliance caps.
    Compliance,
    /// Per-MT send overrides.
    Send,
    /// What DISPATCH processing mode refuses or needs; the migration report asks which of them
    /// a CONVERSATION app's traffic would trip.
    Dispatch,
    /// A Batch API send's own limits.
    Batch,
    /// Pseudo ids the callback listener minted, resolved on the way back.
    Identity,
}

macro_rules! rules {
    ($($variant:ident => $id:literal, $family:ident, [$($op:ident),*], body: $body:literal,
        reads: [$($read:literal),*], enforce: $e:literal, rewrite: $r:literal, default: $d:ident;)*) => {
        /// A policy rule, named by its id in config, headers, metrics and error details.
        ///
        /// The catalogue below is the one source of truth: declaration order is evaluation
        /// order (so which rejection wins), and what each rule applies to, whether it reads the
        /// body and which actions it takes are declared on its row; every index the request
        /// path uses is derived from these rows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RuleId {
            $(#[doc = concat!("`", $id, "`")] $variant,)*
        }

        impl RuleId {
            /// Every rule, in evaluation order (`ALL[r.index()] == r`).
            pub const ALL: &'static [RuleId] = &[$(RuleId::$variant,)*];

            /// The rule id, e.g. `dispatch.send.contact_recipient`.
            pub const fn as_str(self) -> &'static str {
                match self { $(RuleId::$variant => $id,)* }
            }

            /// The rule's family.
            pub const fn family(self) -> Family {
                match self { $(RuleId::$variant => Family::$family,)* }
            }

            /// The operations the rule can apply to.
            pub const fn operations(self) -> &'static [Operation] {
                match self { $(RuleId::$variant => &[$(Operation::$op),*],)* }
            }

            /// Whether the rule reads the JSON body.
            pub const fn reads_body(self) -> bool {
                match self { $(RuleId::$variant => $body,)* }
            }

            /// The request fields the rule reads, as dotted proto paths from the operation's
            /// body message (or its request message where it takes no body). Each must be in the
            /// API schema: only these fields are built from a body, and their enums are read
            /// strictly.
            pub const fn reads(self) -> &'static [&'static str] {
                match self { $(RuleId::$variant => &[$($read),*],)* }
            }

            /// Whether the rule can reject.
            pub const fn supports_enforce(self) -> bool {
                match self { $(RuleId::$variant => $e,)* }
            }

            /// Whether the rule can rewrite.
            pub const fn supports_rewrite(self) -> bool {
                match self { $(RuleId::$variant => $r,)* }
            }

            /// The action when config says nothing.
            pub const fn default_action(self) -> Action {
                match self { $(RuleId::$variant => Action::$d,)* }
            }
        }
    };
}

rules! {
    Canonical => "request.canonical", Request, [], body: false,
        reads: [], enforce: true, rewrite: false, default: Enforce;
    UnrecognizedRoute => "request.unrecognized_route", Request, [], body: false,
        reads: [], enforce: true, rewrite: false, default: Off;
    PseudoIds => "dispatch.pseudo_ids", Identity, [SendMessage, SendEvent, ListMessages, FetchLastMessage], body: true,
        reads: ["recipient.contact_id", "contact_id", "conversation_id", "contact_ids"], enforce: false, rewrite: true, default: Rewrite;
    RetentionRange => "app.retention.range", App, [CreateApp, UpdateApp], body: true,
        reads: ["retention_policy.retention_type", "retention_policy.ttl_days", "dispatch_retention_policy.retention_type", "dispatch_retention_policy.ttl_days"], enforce: true, rewrite: false, default: Enforce;
    MaxTtlDays => "compliance.max_ttl_days", Compliance, [CreateApp, UpdateApp], body: true,
        reads: ["retention_policy.ttl_days", "dispatch_retention_policy.ttl_days"], enforce: true, rewrite: true, default: Enforce;
    BatchRecipientsRange => "batch.recipients.range", Batch, [BatchSend], body: true,
        reads: ["recipient_and_params"], enforce: true, rewrite: false, default: Enforce;
    BatchSendAfterRange => "batch.send_after.range", Batch, [BatchSend], body: true,
        reads: ["send_after"], enforce: true, rewrite: false, default: Enforce;
    BatchReservedMetadata => "batch.reserved_metadata", Batch, [BatchSend], body: true,
        reads: ["message_metadata", "conversation_metadata", "recipient_and_params.message_metadata", "recipient_and_params.conversation_metadata"], enforce: true, rewrite: true, default: Shadow;
    DispatchOnlyOverride => "send.dispatch_only_override", Send, [SendMessage, BatchSend], body: true,
        reads: ["processing_strategy"], enforce: true, rewrite: false, default: Off;
    DispatchOnlyMetadata => "send.dispatch_only_metadata", Send, [SendMessage, BatchSend], body: true,
        reads: ["processing_strategy", "conversation_metadata", "correlation_id", "recipient_and_params.conversation_metadata"], enforce: true, rewrite: true, default: Enforce;
    SendContactRecipient => "dispatch.send.contact_recipient", Dispatch, [SendMessage, SendEvent, BatchSend], body: true,
        reads: ["recipient.contact_id", "recipient.identified_by", "channel_priority_order", "processing_strategy", "recipient_and_params.recipient.contact_id", "recipient_and_params.recipient.identified_by"], enforce: true, rewrite: true, default: Enforce;
    ListMessagesContactFilter => "dispatch.list_messages.contact_filter", Dispatch, [ListMessages, ListEvents], body: false,
        reads: ["contact_id", "conversation_id"], enforce: true, rewrite: false, default: Enforce;
    FetchLastMessageContactIds => "dispatch.fetch_last_message.contact_ids", Dispatch, [FetchLastMessage], body: true,
        reads: ["contact_ids", "messages_source"], enforce: true, rewrite: false, default: Enforce;
    ConversationOnlyEndpoint => "dispatch.conversation_only_endpoint", Dispatch,
        [ListConversations, CreateConversation, RecentConversations, InjectMessage, InjectEvent], body: false,
        reads: ["app_id"], enforce: true, rewrite: false, default: Enforce;
    MessagesSource => "dispatch.messages_source", Dispatch, [ListMessages, GetMessage, UpdateMessage, DeleteMessage], body: false,
        reads: ["messages_source"], enforce: false, rewrite: true, default: Rewrite;
    CreatePinMode => "app.create.pin_mode", App, [CreateApp], body: true,
        reads: ["processing_mode"], enforce: false, rewrite: true, default: Rewrite;
}

impl RuleId {
    /// Dense index for per-rule tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the rule could ever apply to `op`.
    pub fn applies_to(self, op: Operation) -> bool {
        self.operations().contains(&op)
    }

    /// Whether `action` is valid for this rule (shadow and off always are).
    pub const fn supports(self, action: Action) -> bool {
        match action {
            Action::Enforce => self.supports_enforce(),
            Action::Rewrite => self.supports_rewrite(),
            Action::Shadow | Action::Off => true,
        }
    }

    /// The actions this rule accepts, for error messages.
    pub fn supported_actions(self) -> Vec<&'static str> {
        Action::ALL
            .into_iter()
            .filter(|a| self.supports(*a))
            .map(Action::as_str)
            .collect()
    }
}

impl FromStr for RuleId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleId::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown rule id {s:?}"))
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The action of every rule: the global `[policy.rules]` table or one app's view of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSet {
    actions: [Action; RuleId::ALL.len()],
}

impl Default for RuleSet {
    fn default() -> Self {
        let mut actions = [Action::Off; RuleId::ALL.len()];
        for rule in RuleId::ALL {
            actions[rule.index()] = rule.default_action();
        }
        Self { actions }
    }
}

impl RuleSet {
    /// The action configured for `rule`.
    pub fn action(&self, rule: RuleId) -> Action {
        self.actions[rule.index()]
    }

    /// Sets the action for `rule` (callers validate support first).
    pub fn set(&mut self, rule: RuleId, action: Action) {
        self.actions[rule.index()] = action;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for rule in RuleId::ALL {
            assert_eq!(rule.as_str().parse::<RuleId>(), Ok(*rule));
        }
        let ids: std::collections::HashSet<_> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(ids.len(), RuleId::ALL.len());
    }

    #[test]
    fn the_catalogue_indexes_itself_and_every_rule_applies_somewhere() {
        for (i, rule) in RuleId::ALL.iter().enumerate() {
            assert_eq!(rule.index(), i, "evaluation order is catalogue order");
            // Request rules judge the request itself, before any operation's rules run.
            assert_eq!(
                rule.operations().is_empty(),
                rule.family() == Family::Request,
                "{rule}"
            );
            assert!(
                rule.supports_enforce() || rule.supports_rewrite(),
                "{rule} can do nothing but shadow"
            );
        }
        // Rejections from validity rules win over mode rules, and the create-time pin is last.
        let pos = |r: RuleId| RuleId::ALL.iter().position(|x| *x == r);
        assert!(pos(RuleId::Canonical) < pos(RuleId::RetentionRange));
        assert!(pos(RuleId::RetentionRange) < pos(RuleId::SendContactRecipient));
        assert!(pos(RuleId::DispatchOnlyOverride) < pos(RuleId::SendContactRecipient));
        assert_eq!(RuleId::ALL.last(), Some(&RuleId::CreatePinMode));
    }

    #[test]
    fn defaults_follow_the_interface_table() {
        let set = RuleSet::default();
        assert_eq!(set.action(RuleId::SendContactRecipient), Action::Enforce);
        assert_eq!(set.action(RuleId::MessagesSource), Action::Rewrite);
        assert_eq!(set.action(RuleId::CreatePinMode), Action::Rewrite);
        assert_eq!(set.action(RuleId::DispatchOnlyOverride), Action::Off);
        assert_eq!(set.action(RuleId::MaxTtlDays), Action::Enforce);
        assert_eq!(set.action(RuleId::BatchRecipientsRange), Action::Enforce);
        assert_eq!(set.action(RuleId::BatchSendAfterRange), Action::Enforce);
        assert_eq!(set.action(RuleId::BatchReservedMetadata), Action::Shadow);
        for rule in RuleId::ALL {
            assert!(rule.supports(rule.default_action()), "{rule}");
        }
    }

    #[test]
    fn unsupported_actions_are_known() {
        assert!(!RuleId::ListMessagesContactFilter.supports(Action::Rewrite));
        assert!(!RuleId::MessagesSource.supports(Action::Enforce));
        assert!(RuleId::SendContactRecipient.supports(Action::Rewrite));
        assert_eq!(
            RuleId::RetentionRange.supported_actions(),
            ["enforce", "shadow", "off"]
        );
    }
}
