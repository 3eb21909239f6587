//! What the policy reads of one request: the facts the proxy extracted (operation, decoded
//! query, the fields of the body rules read, the message's store, the opened pseudo ids) and
//! the settings that shape the rules for it.

use std::borrow::Cow;

use serde_json::Value;

use super::decision::Edit;
use super::fields;
use super::{ProcessingMode, RuleSet};
use crate::domain::Operation;

/// Query parameters of a request, decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    /// Parses a raw query string (`a=1&b=2`).
    pub fn parse(raw: Option<&'a str>) -> Self {
        Query(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default(),
        )
    }

    /// Parses a raw query string into owned parts (for a request context that outlives it).
    pub fn parse_owned(raw: Option<&str>) -> Query<'static> {
        Query(
            raw.map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    /// The first value of the parameter `name`, under its proto or JSON name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| fields::names(k, name))
            .map(|(_, v)| v.as_ref())
    }

    /// Whether the parameter `name` has a non-empty value, under either name.
    pub fn has(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| fields::names(k, name) && !v.is_empty())
    }

    /// How often the parameter `name` is given, under either name.
    pub fn count(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(k, _)| fields::names(k, name))
            .count()
    }

    /// The query with `edits`' query edits applied (a set parameter replaces every occurrence).
    pub fn edited(&self, edits: &[Edit]) -> Query<'static> {
        let mut pairs: Vec<(Cow<'static, str>, Cow<'static, str>)> = self
            .0
            .iter()
            .map(|(k, v)| (Cow::Owned(k.to_string()), Cow::Owned(v.to_string())))
            .collect();
        for edit in edits {
            let (name, value) = match edit {
                Edit::SetQuery { name, value } => (*name, Some((*value).to_string())),
                Edit::SetQueryText { name, value } => (*name, Some(value.clone())),
                Edit::RemoveQuery { name } => (*name, None),
                _ => continue,
            };
            pairs.retain(|(k, _)| !fields::names(k, name));
            if let Some(v) = value {
                pairs.push((Cow::Borrowed(name), Cow::Owned(v)));
            }
        }
        Query(pairs)
    }
}

/// What the policy knows of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The API call.
    pub operation: Operation,
    /// Its query.
    pub query: &'a Query<'a>,
    /// Its JSON body, when the operation's rules read it and it parsed.
    pub body: Option<&'a Value>,
    /// For a get / update / delete of a message the gateway has seen before: the store it
    /// lives in.
    pub message_store: Option<ProcessingMode>,
    /// The pseudo ids the request carries, opened (rule `dispatch.pseudo_ids`).
    pub pseudo: Option<&'a PseudoFacts>,
}

/// Settings that shape the rules for one request.
#[derive(Debug, Clone, Copy)]
pub struct PolicyContext<'a> {
    /// Rule actions (global, or the app's override).
    pub rules: &'a RuleSet,
    /// `policy.create_app_default_mode`.
    pub create_app_default_mode: Option<ProcessingMode>,
    /// `policy.max_ttl_days`.
    pub max_ttl_days: u32,
    /// The app may use `processing_strategy = DISPATCH_ONLY`.
    pub allow_dispatch_only: bool,
    /// When the request arrived (`batch.send_after.range` measures from it).
    pub now: std::time::SystemTime,
}

/// Where in the request the pseudo ids were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PseudoField {
    /// `recipient.contact_id` of a send.
    Recipient,
    /// `contact_id` and / or `conversation_id` of a list messages call.
    ListFilter {
        /// Whether `contact_id` held one.
        contact: bool,
        /// Whether `conversation_id` held one.
        conversation: bool,
    },
    /// `contact_ids` of fetch-last-message.
    ContactIds,
}

/// The pseudo ids of one request, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Where they were.
    pub field: PseudoField,
    /// Their channel (all of them share it).
    pub channel: String,
    /// The identities they stand for, in request order.
    pub identities: Vec<String>,
    /// The app they were minted for, when the request names none (a list call): added to it.
    pub add_app: Option<String>,
}

/// What the facts phase found of pseudo ids in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PseudoFacts {
    /// Every pseudo id opened, for this project and app.
    Resolved(Resolved),
    /// One did not verify, was minted for another app, or they mix channels: the message.
    Refused(String),
}
