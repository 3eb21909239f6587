//! The processing-mode policy: pure data in, decision out. Nothing here does I/O.

pub mod rules;

pub use crate::domain::{mode_label, Disposition, ProcessingMode};
pub use rules::{Action, Family, RuleId, RuleSet};

pub mod batch;
pub mod decision;
pub mod evaluate;
pub mod facts;
pub mod fields;
pub mod plan;
pub mod pseudo;
pub mod recipient;

pub use decision::{apply_body_edits, ContactRewrite, Decision, Edit, Match, Rejection};
pub use evaluate::{evaluate, what_if_blockers, PolicyContext, Query, RequestFacts};
pub use plan::{ModeUnavailable, Plan, ProjectApps, Settled};
pub use pseudo::{PseudoFacts, PseudoField, Resolved};
