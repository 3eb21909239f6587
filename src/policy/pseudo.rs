//! Rule `dispatch.pseudo_ids`: a CONVERSATION-era client replies to, lists and fetches by the
//! pseudo contact and conversation ids the callback listener filled into DISPATCH callbacks.
//!
//! The facts phase opens every pseudo id the request carries with the configured keys (the
//! policy does no cryptography) and hands over what they stand for, or why they do not verify.
//! Here that becomes edits — a send's `recipient.contact_id` becomes `recipient.identified_by`,
//! a list's `contact_id` / `conversation_id` becomes `channel_identity` + `channel` from
//! `DISPATCH_SOURCE`, fetch-last-message's `contact_ids` become `channel_identities` — and the
//! other rules judge the request as rewritten: a resolved pseudo id is no contact id to them.

use serde_json::{json, Value};

use super::decision::{apply_body_edits, Edit};
pub use super::facts::{PseudoFacts, PseudoField, Resolved};
use super::facts::{Query, RequestFacts};
use crate::domain::Operation;

/// The edits that resolve the pseudo ids.
pub fn edits(op: Operation, resolved: &Resolved) -> Vec<Edit> {
    let identity = |i: &String| json!({"channel": resolved.channel, "identity": i});
    match resolved.field {
        PseudoField::Recipient => vec![Edit::SetField {
            path: &["recipient"],
            value: json!({"identified_by": {
                "channel_identities": resolved.identities.iter().map(identity).collect::<Vec<_>>()
            }}),
        }],
        PseudoField::ContactIds => vec![
            Edit::RemoveField {
                path: &["contact_ids"],
            },
            Edit::SetField {
                path: &["channel_identities"],
                value: Value::from(resolved.identities.clone()),
            },
            Edit::SetField {
                path: &["channel"],
                value: Value::from(resolved.channel.clone()),
            },
            Edit::SetField {
                path: &["messages_source"],
                value: Value::from("DISPATCH_SOURCE"),
            },
        ],
        PseudoField::ListFilter { .. } if op == Operation::ListMessages => {
            let mut out = vec![
                Edit::RemoveQuery { name: "contact_id" },
                Edit::RemoveQuery {
                    name: "conversation_id",
                },
                Edit::SetQueryText {
                    name: "channel_identity",
                    value: resolved.identities.first().cloned().unwrap_or_default(),
                },
                Edit::SetQueryText {
                    name: "channel",
                    value: resolved.channel.clone(),
                },
                Edit::SetQuery {
                    name: "messages_source",
                    value: "DISPATCH_SOURCE",
                },
            ];
            if let Some(app) = &resolved.add_app {
                out.push(Edit::SetQueryText {
                    name: "app_id",
                    value: app.clone(),
                });
            }
            out
        }
        PseudoField::ListFilter { .. } => Vec::new(),
    }
}

/// The request as the other rules see it once the pseudo ids are resolved: (body, query).
pub fn substituted(facts: &RequestFacts<'_>, edits: &[Edit]) -> (Option<Value>, Query<'static>) {
    let body = facts.body.map(|b| {
        let mut b = b.clone();
        apply_body_edits(&mut b, edits);
        b
    });
    (body, facts.query.edited(edits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(field: PseudoField) -> Resolved {
        Resolved {
            field,
            channel: "SMS".into(),
            identities: vec!["+15550100".into()],
            add_app: None,
        }
    }

    #[test]
    fn a_send_addresses_the_identity() {
        let body = json!({"app_id": "a", "recipient": {"contact_id": "mgpc_x"}});
        let query = Query::parse(None);
        let facts = RequestFacts {
            operation: Operation::SendMessage,
            query: &query,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        let e = edits(Operation::SendMessage, &resolved(PseudoField::Recipient));
        let (b, _) = substituted(&facts, &e);
        assert_eq!(
            b.expect("body")["recipient"],
            json!({"identified_by": {"channel_identities": [{"channel": "SMS", "identity": "+15550100"}]}})
        );
    }

    #[test]
    fn a_list_filters_by_identity_from_the_dispatch_store() {
        let query = Query::parse(Some("app_id=a&contactId=mgpc_x&page_size=5"));
        let facts = RequestFacts {
            operation: Operation::ListMessages,
            query: &query,
            body: None,
            message_store: None,
            pseudo: None,
        };
        let e = edits(
            Operation::ListMessages,
            &resolved(PseudoField::ListFilter {
                contact: true,
                conversation: false,
            }),
        );
        let (_, q) = substituted(&facts, &e);
        assert!(!q.has("contact_id"));
        assert_eq!(q.get("channel_identity"), Some("+15550100"));
        assert_eq!(q.get("channel"), Some("SMS"));
        assert_eq!(q.get("messages_source"), Some("DISPATCH_SOURCE"));
        assert_eq!(q.get("page_size"), Some("5"));
    }

    #[test]
    fn fetch_last_message_takes_the_identities() {
        let body = json!({"app_id": "a", "contactIds": ["mgpc_x", "mgpc_y"]});
        let query = Query::parse(None);
        let facts = RequestFacts {
            operation: Operation::FetchLastMessage,
            query: &query,
            body: Some(&body),
            message_store: None,
            pseudo: None,
        };
        let mut r = resolved(PseudoField::ContactIds);
        r.identities.push("+15550101".into());
        let (b, _) = substituted(&facts, &edits(Operation::FetchLastMessage, &r));
        let b = b.expect("body");
        assert!(b.get("contactIds").is_none());
        assert_eq!(b["channel_identities"], json!(["+15550100", "+15550101"]));
        assert_eq!(b["channel"], json!("SMS"));
    }
}
