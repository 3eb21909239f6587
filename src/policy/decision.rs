//! What the policy decides: rule matches, at most one rejection, and the edits a rewrite makes.
//! Edits are data; [`apply_body_edits`] applies the body ones (pure, no I/O).

use serde_json::Value;

use super::{fields, Action, Disposition, RuleId};

/// One rule that applied to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// The rule.
    pub rule: RuleId,
    /// What it did: enforce, rewrite or shadow.
    pub action: Action,
}

/// A rejection: the rule and a message that says what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The rule.
    pub rule: RuleId,
    /// Client-facing message (field path first, then the fix).
    pub message: String,
}

/// One change a rewrite makes to the request.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Set a query parameter: every occurrence of it (under its proto or JSON name) is replaced
    /// by one `name=value`.
    SetQuery {
        /// Parameter name.
        name: &'static str,
        /// Parameter value.
        value: &'static str,
    },
    /// Set a JSON body field (parents are created when absent).
    SetField {
        /// Field path from the body root.
        path: &'static [&'static str],
        /// New value.
        value: Value,
    },
    /// Remove a JSON body field.
    RemoveField {
        /// Field path from the body root.
        path: &'static [&'static str],
    },
    /// Set a query parameter to a value taken from the request (a resolved pseudo id).
    SetQueryText {
        /// Parameter name.
        name: &'static str,
        /// Parameter value.
        value: String,
    },
    /// Remove every occurrence of a query parameter (under its proto or JSON name).
    RemoveQuery {
        /// Parameter name.
        name: &'static str,
    },
    /// Replace `recipient.contact_id` with the contact's channel identities (needs a lookup);
    /// on a batch, every recipient's.
    ResolveContactRecipient,
    /// Remove a field from every recipient of a batch (`recipient_and_params[*]`).
    RemoveInRecipients {
        /// The recipient's field.
        field: &'static str,
    },
    /// Drop the reserved `_batch_id` from a batch's metadata maps, everywhere it is set.
    DropReservedMetadata,
    /// A message read the upstream answered 404 was retried once in this `messages_source`.
    RetryInStore(&'static str),
}

/// What the contact rewrite (`recipient.contact_id` to channel identities) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactRewrite {
    /// Every contact recipient was rewritten.
    Done,
    /// A recipient cannot be rewritten: the request is refused with this message.
    Reject(String),
    /// Nothing to rewrite; the recipient stays as sent.
    Untouched,
}

/// The outcome of evaluating every rule against one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Every rule that applied, in evaluation order.
    pub matches: Vec<Match>,
    /// The first enforcing match, if any.
    pub reject: Option<Rejection>,
    /// Edits of every rewriting match.
    pub edits: Vec<Edit>,
}

impl Decision {
    /// Whether no rule applied.
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// Whether two decisions do the same to the request (the same matches, rejecting rule and
    /// edits), whatever their messages say of why.
    pub fn same_outcome(&self, other: &Decision) -> bool {
        self.matches == other.matches
            && self.reject.as_ref().map(|r| r.rule) == other.reject.as_ref().map(|r| r.rule)
            && self.edits == other.edits
    }

    /// The `x-modegate-decision` this decision leads to.
    pub fn disposition(&self) -> Disposition {
        if self.reject.is_some() {
            Disposition::Rejected
        } else if !self.edits.is_empty() {
            Disposition::Rewritten
        } else if !self.matches.is_empty() {
            Disposition::Shadow
        } else {
            Disposition::Forwarded
        }
    }

    /// The rules that rewrote or rejected the request, in evaluation order.
    pub fn acting_rules(&self) -> impl Iterator<Item = RuleId> + '_ {
        let rejecting = self.reject.as_ref().map(|r| r.rule);
        self.matches
            .iter()
            .filter(move |m| match rejecting {
                Some(rule) => m.rule == rule,
                None => m.action == Action::Rewrite,
            })
            .map(|m| m.rule)
    }

    /// The rules that matched in shadow, in evaluation order.
    pub fn shadow_rules(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.matches
            .iter()
            .filter(|m| m.action == Action::Shadow)
            .map(|m| m.rule)
    }

    /// Records a request-family rule's finding (the request itself is at fault, whatever the
    /// mode): under enforce it rejects (the first finding wins), under shadow it is recorded
    /// as one match, off it is dropped. Nothing is recorded once the request is rejected.
    pub fn request_finding(&mut self, rule: RuleId, action: Action, message: String) {
        if action == Action::Off || self.reject.is_some() {
            return;
        }
        if !self.matches.iter().any(|m| m.rule == rule) {
            self.matches.push(Match { rule, action });
        }
        if action == Action::Enforce {
            self.reject = Some(Rejection { rule, message });
        }
    }

    /// Takes the decision the plan settled; the findings recorded before it (request rules in
    /// shadow) come first, as in evaluation order.
    pub fn settle(&mut self, settled: Decision) {
        let earlier = std::mem::replace(self, settled);
        self.matches.splice(0..0, earlier.matches);
    }

    /// Applies what the contact rewrite did: a recipient that cannot be rewritten rejects the
    /// request (rule `dispatch.send.contact_recipient`, counted as an enforcement); a request
    /// with nothing to rewrite keeps its recipient and every other edit.
    pub fn contact_rewrite(&mut self, rewrite: ContactRewrite) {
        let rule = RuleId::SendContactRecipient;
        match rewrite {
            ContactRewrite::Done => {}
            ContactRewrite::Reject(message) => self.reject_with(rule, message),
            ContactRewrite::Untouched => self.drop_edit(&Edit::ResolveContactRecipient, rule),
        }
    }

    /// Records that a message read the upstream answered 404 was sent again, and found, in the
    /// other store (`source`): a rewrite by `messages_source`.
    pub fn retried_in_store(&mut self, source: &'static str) {
        self.matches.push(Match {
            rule: RuleId::MessagesSource,
            action: Action::Rewrite,
        });
        self.edits.push(Edit::RetryInStore(source));
    }

    /// Turns the decision into a rejection by `rule` (a rewrite that cannot be made): nothing
    /// else takes effect, and the rule's match is counted as what happened, an enforcement.
    pub fn reject_with(&mut self, rule: RuleId, message: String) {
        self.edits.clear();
        self.matches
            .retain(|m| m.action == Action::Shadow || m.rule == rule);
        for m in &mut self.matches {
            if m.rule == rule {
                m.action = Action::Enforce;
            }
        }
        self.reject = Some(Rejection { rule, message });
    }

    /// Drops the edits of `rule` (a rewrite that found nothing to change); its match stays
    /// recorded as a rewrite only while one of its edits remains.
    pub fn drop_edit(&mut self, edit: &Edit, rule: RuleId) {
        self.edits.retain(|e| e != edit);
        self.matches
            .retain(|m| m.rule != rule || m.action != Action::Rewrite);
    }

    /// Whether some edit needs the body.
    pub fn edits_body(&self) -> bool {
        self.edits.iter().any(|e| {
            matches!(
                e,
                Edit::SetField { .. }
                    | Edit::RemoveField { .. }
                    | Edit::ResolveContactRecipient
                    | Edit::RemoveInRecipients { .. }
                    | Edit::DropReservedMetadata
            )
        })
    }

    /// The query parameters to set.
    pub fn query_settings(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.edits.iter().filter_map(|e| match e {
            Edit::SetQuery { name, value } => Some((*name, *value)),
            _ => None,
        })
    }

    /// Every query edit, in order: a parameter set to a value, or removed (`None`).
    pub fn query_edits(&self) -> impl Iterator<Item = (&'static str, Option<&str>)> + '_ {
        self.edits.iter().filter_map(|e| match e {
            Edit::SetQuery { name, value } => Some((*name, Some(*value))),
            Edit::SetQueryText { name, value } => Some((*name, Some(value.as_str()))),
            Edit::RemoveQuery { name } => Some((*name, None)),
            _ => None,
        })
    }
}

/// Sets `path` to `value`, creating missing parent objects; a non-object parent stops it. Each
/// step reuses the key the body already has for the field (proto or JSON name), so an edit
/// never adds an alias beside the original for the upstream to choose between.
fn set_path(node: &mut Value, path: &[&str], value: &Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = fields::key_of(obj, first)
        .cloned()
        .unwrap_or_else(|| (*first).to_string());
    if rest.is_empty() {
        obj.insert(key, value.clone());
    } else {
        let child = obj
            .entry(key)
            .or_insert_with(|| Value::Object(Default::default()));
        set_path(child, rest, value);
    }
}

/// Applies `SetField` and `RemoveField` edits to a JSON body; other edits are skipped.
/// A `SetField` whose parent is not an object leaves the body unchanged.
pub fn apply_body_edits(body: &mut Value, edits: &[Edit]) {
    for edit in edits {
        match edit {
            Edit::SetField { path, value } => set_path(body, path, value),
            Edit::RemoveField { path } => {
                let Some((last, parents)) = path.split_last() else {
                    continue;
                };
                let mut node = Some(&mut *body);
                for key in parents {
                    node = node.and_then(|n| fields::get_mut(n, key));
                }
                if let Some(obj) = node.and_then(Value::as_object_mut) {
                    if let Some(key) = fields::key_of(obj, last).cloned() {
                        obj.shift_remove(&key);
                    }
                }
            }
            Edit::RemoveInRecipients { field } => super::batch::remove_in_recipients(body, field),
            Edit::DropReservedMetadata => super::batch::drop_reserved(body),
            Edit::SetQuery { .. }
            | Edit::SetQueryText { .. }
            | Edit::RemoveQuery { .. }
            | Edit::ResolveContactRecipient
            | Edit::RetryInStore(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(rule: RuleId, action: Action) -> Match {
        Match { rule, action }
    }

    #[test]
    fn request_findings_reject_under_enforce_record_once_in_shadow_and_stop_at_a_rejection() {
        let mut shadow = Decision::default();
        shadow.request_finding(RuleId::Canonical, Action::Shadow, "a".into());
        shadow.request_finding(RuleId::Canonical, Action::Shadow, "b".into());
        assert_eq!(shadow.matches, [found(RuleId::Canonical, Action::Shadow)]);
        assert_eq!(shadow.reject, None);

        let mut off = Decision::default();
        off.request_finding(RuleId::Canonical, Action::Off, "a".into());
        assert!(off.is_empty());

        let mut enforce = Decision::default();
        enforce.request_finding(RuleId::Canonical, Action::Enforce, "first".into());
        enforce.request_finding(RuleId::MessagesSource, Action::Enforce, "second".into());
        assert_eq!(enforce.matches, [found(RuleId::Canonical, Action::Enforce)]);
        assert_eq!(enforce.reject.map(|r| r.message).as_deref(), Some("first"));
    }

    #[test]
    fn the_settled_decision_keeps_earlier_findings_first() {
        let mut decision = Decision::default();
        decision.request_finding(RuleId::Canonical, Action::Shadow, "a".into());
        let settled = Decision {
            matches: vec![found(RuleId::MessagesSource, Action::Rewrite)],
            reject: None,
            edits: vec![Edit::RetryInStore("DISPATCH_SOURCE")],
        };
        decision.settle(settled.clone());
        assert_eq!(
            decision.matches,
            [
                found(RuleId::Canonical, Action::Shadow),
                found(RuleId::MessagesSource, Action::Rewrite)
            ]
        );
        assert_eq!(decision.edits, settled.edits);
    }

    #[test]
    fn the_contact_rewrite_outcome_rejects_drops_its_edit_or_keeps_the_decision() {
        let rewrite = || Decision {
            matches: vec![
                found(RuleId::SendContactRecipient, Action::Rewrite),
                found(RuleId::Canonical, Action::Shadow),
            ],
            reject: None,
            edits: vec![
                Edit::ResolveContactRecipient,
                Edit::RemoveField { path: &["a"] },
            ],
        };
        let mut done = rewrite();
        done.contact_rewrite(ContactRewrite::Done);
        assert_eq!(done, rewrite());

        let mut refused = rewrite();
        refused.contact_rewrite(ContactRewrite::Reject("no".into()));
        assert_eq!(refused.disposition(), Disposition::Rejected);
        assert!(refused.edits.is_empty());
        assert_eq!(
            refused.matches,
            [
                found(RuleId::SendContactRecipient, Action::Enforce),
                found(RuleId::Canonical, Action::Shadow)
            ]
        );

        let mut untouched = rewrite();
        untouched.contact_rewrite(ContactRewrite::Untouched);
        assert_eq!(untouched.edits, [Edit::RemoveField { path: &["a"] }]);
        assert_eq!(
            untouched.matches,
            [found(RuleId::Canonical, Action::Shadow)]
        );
    }

    #[test]
    fn a_store_retry_that_found_the_message_is_a_messages_source_rewrite() {
        let mut decision = Decision::default();
        decision.retried_in_store("CONVERSATION_SOURCE");
        assert_eq!(decision.disposition(), Disposition::Rewritten);
        assert_eq!(
            decision.acting_rules().collect::<Vec<_>>(),
            [RuleId::MessagesSource]
        );
        assert_eq!(decision.edits, [Edit::RetryInStore("CONVERSATION_SOURCE")]);
    }

    #[test]
    fn set_and_remove_fields() {
        let mut body =
            json!({"a": 1, "retention_policy": {"ttl_days": 9000, "retention_type": "X"}});
        apply_body_edits(
            &mut body,
            &[
                Edit::SetField {
                    path: &["retention_policy", "ttl_days"],
                    value: json!(30),
                },
                Edit::SetField {
                    path: &["processing_mode"],
                    value: json!("DISPATCH"),
                },
                Edit::RemoveField { path: &["a"] },
                Edit::RemoveField {
                    path: &["missing", "deeper"],
                },
            ],
        );
        assert_eq!(
            body,
            json!({"retention_policy": {"ttl_days": 30, "retention_type": "X"}, "processing_mode": "DISPATCH"})
        );
    }

    #[test]
    fn edits_use_the_key_the_body_already_has() {
        let mut body = json!({"retentionPolicy": {"ttlDays": 9000}, "correlationId": "c"});
        apply_body_edits(
            &mut body,
            &[
                Edit::SetField {
                    path: &["retention_policy", "ttl_days"],
                    value: json!(30),
                },
                Edit::RemoveField {
                    path: &["correlation_id"],
                },
            ],
        );
        assert_eq!(body, json!({"retentionPolicy": {"ttlDays": 30}}));
    }

    #[test]
    fn set_under_a_non_object_is_a_no_op() {
        let mut body = json!({"retention_policy": 5});
        let before = body.clone();
        apply_body_edits(
            &mut body,
            &[Edit::SetField {
                path: &["retention_policy", "ttl_days"],
                value: json!(1),
            }],
        );
        assert_eq!(body, before);
    }

    #[test]
    fn disposition_and_headline_follow_precedence() {
        let mut d = Decision::default();
        assert_eq!(d.disposition(), Disposition::Forwarded);
        d.matches.push(Match {
            rule: RuleId::MessagesSource,
            action: Action::Shadow,
        });
        assert_eq!(d.disposition(), Disposition::Shadow);
        assert_eq!(
            d.shadow_rules().collect::<Vec<_>>(),
            [RuleId::MessagesSource]
        );
        d.matches.push(Match {
            rule: RuleId::CreatePinMode,
            action: Action::Rewrite,
        });
        d.edits.push(Edit::RemoveField { path: &["x"] });
        assert_eq!(d.disposition(), Disposition::Rewritten);
        assert_eq!(
            d.acting_rules().collect::<Vec<_>>(),
            [RuleId::CreatePinMode]
        );
        d.reject = Some(Rejection {
            rule: RuleId::RetentionRange,
            message: String::new(),
        });
        assert_eq!(d.disposition(), Disposition::Rejected);
        assert_eq!(d.acting_rules().collect::<Vec<_>>(), Vec::<RuleId>::new());
        d.reject_with(RuleId::CreatePinMode, "no".into());
        assert_eq!(d.disposition(), Disposition::Rejected);
        assert_eq!(
            d.acting_rules().collect::<Vec<_>>(),
            [RuleId::CreatePinMode]
        );
        assert_eq!(
            d.shadow_rules().collect::<Vec<_>>(),
            [RuleId::MessagesSource]
        );
        assert!(d
            .matches
            .iter()
            .any(|m| m.rule == RuleId::CreatePinMode && m.action == Action::Enforce));
    }
}
