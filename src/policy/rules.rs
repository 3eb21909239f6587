//! The rule catalogue: every rule id, the actions each supports, and its default action.

use std::fmt;
use std::str::FromStr;

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

macro_rules! rules {
    ($($variant:ident => $id:literal, enforce: $e:literal, rewrite: $r:literal, default: $d:ident;)*) => {
        /// A policy rule, named by its id in config, headers, metrics and error details.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RuleId {
            $(#[doc = concat!("`", $id, "`")] $variant,)*
        }

        impl RuleId {
            /// Every rule, in catalogue order (`ALL[r.index()] == r`).
            pub const ALL: &'static [RuleId] = &[$(RuleId::$variant,)*];

            /// The rule id, e.g. `dispatch.send.contact_recipient`.
            pub const fn as_str(self) -> &'static str {
                match self { $(RuleId::$variant => $id,)* }
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
    SendContactRecipient => "dispatch.send.contact_recipient", enforce: true, rewrite: true, default: Enforce;
    ListMessagesContactFilter => "dispatch.list_messages.contact_filter", enforce: true, rewrite: false, default: Enforce;
    MessagesSource => "dispatch.messages_source", enforce: false, rewrite: true, default: Rewrite;
    ConversationOnlyEndpoint => "dispatch.conversation_only_endpoint", enforce: true, rewrite: false, default: Enforce;
    FetchLastMessageContactIds => "dispatch.fetch_last_message.contact_ids", enforce: true, rewrite: false, default: Enforce;
    RetentionRange => "app.retention.range", enforce: true, rewrite: false, default: Enforce;
    CreatePinMode => "app.create.pin_mode", enforce: false, rewrite: true, default: Rewrite;
    DispatchOnlyOverride => "send.dispatch_only_override", enforce: true, rewrite: false, default: Off;
    DispatchOnlyMetadata => "send.dispatch_only_metadata", enforce: true, rewrite: true, default: Enforce;
    MaxTtlDays => "compliance.max_ttl_days", enforce: true, rewrite: true, default: Enforce;
}

impl RuleId {
    /// Dense index for per-rule tables.
    pub const fn index(self) -> usize {
        self as usize
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
        let mut ids: Vec<_> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 10);
    }

    #[test]
    fn defaults_follow_the_interface_table() {
        let set = RuleSet::default();
        assert_eq!(set.action(RuleId::SendContactRecipient), Action::Enforce);
        assert_eq!(set.action(RuleId::MessagesSource), Action::Rewrite);
        assert_eq!(set.action(RuleId::CreatePinMode), Action::Rewrite);
        assert_eq!(set.action(RuleId::DispatchOnlyOverride), Action::Off);
        assert_eq!(set.action(RuleId::MaxTtlDays), Action::Enforce);
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
