//! The processing-mode policy: pure data in, decision out. Nothing here does I/O.

pub mod rules;

use std::fmt;
use std::str::FromStr;

pub use rules::{Action, RuleId, RuleSet};

/// An app's processing mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessingMode {
    /// Contacts and conversations are stored.
    Conversation,
    /// Neither contacts nor conversations are stored.
    Dispatch,
}

impl ProcessingMode {
    /// Both modes.
    pub const ALL: [ProcessingMode; 2] = [ProcessingMode::Conversation, ProcessingMode::Dispatch];

    /// The API spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProcessingMode::Conversation => "CONVERSATION",
            ProcessingMode::Dispatch => "DISPATCH",
        }
    }
}

impl FromStr for ProcessingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CONVERSATION" => Ok(ProcessingMode::Conversation),
            "DISPATCH" => Ok(ProcessingMode::Dispatch),
            other => Err(format!(
                "unknown processing mode {other:?} (expected CONVERSATION or DISPATCH)"
            )),
        }
    }
}

impl fmt::Display for ProcessingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the gateway did with a request, as told in `x-modegate-decision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Forwarded as is.
    Forwarded,
    /// Changed, then forwarded.
    Rewritten,
    /// Answered by the gateway with an error; not forwarded.
    Rejected,
    /// Forwarded as is while a rule recorded what it would have done.
    Shadow,
}

impl Disposition {
    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Disposition::Forwarded => "forwarded",
            Disposition::Rewritten => "rewritten",
            Disposition::Rejected => "rejected",
            Disposition::Shadow => "shadow",
        }
    }
}

pub mod decision;
pub mod evaluate;

pub use decision::{apply_body_edits, Decision, Edit, Match, Rejection};
pub use evaluate::{evaluate, what_if_blockers, PolicyContext, Query, RequestFacts};

/// The metric / log spelling of an optional mode (`unknown` when not known).
pub fn mode_label(mode: Option<ProcessingMode>) -> &'static str {
    mode.map_or("unknown", ProcessingMode::as_str)
}
