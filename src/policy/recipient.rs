//! The pure half of the `dispatch.send.contact_recipient` rewrite: given a contact's channel
//! identities (looked up by the I/O layer), choose the ones to send to and build the
//! `recipient.identified_by` that replaces `recipient.contact_id`.

use serde_json::{json, Value};

use crate::domain::Identity;

/// What the contact lookup found, as the choice needs it.
#[derive(Debug, Clone, Copy)]
pub enum Contact<'a> {
    /// The contact's identities.
    Found(&'a [Identity]),
    /// No such contact in the project.
    NotFound,
}

/// The `recipient` to send instead, or the message of the 400 when there is none: the contact's
/// identities on the channels of `channel_priority_order`, in that order (all of them, in the
/// contact's order, when the request names no priority).
pub fn identified_recipient(
    contact_id: &str,
    project: &str,
    contact: Contact<'_>,
    channel_priority: Option<&[String]>,
) -> Result<Value, String> {
    let identities = match contact {
        Contact::Found(ids) => ids,
        Contact::NotFound => {
            return Err(format!(
                "recipient.contact_id: contact {contact_id} was not found in project {project}; send with recipient.identified_by.channel_identities"
            ))
        }
    };
    let wanted = channel_priority.filter(|w| !w.is_empty());
    let mut chosen: Vec<(usize, &Identity)> = identities
        .iter()
        .filter_map(|i| {
            let rank = match wanted {
                Some(w) => w.iter().position(|c| *c == i.channel)?,
                None => 0,
            };
            Some((rank, i))
        })
        .collect();
    // Stable: equal ranks keep the contact's own order.
    chosen.sort_by_key(|(rank, _)| *rank);
    if chosen.is_empty() {
        return Err(match wanted {
            Some(w) => format!(
                "recipient.contact_id: contact {contact_id} has no channel identity on {}; add one to the contact or send with recipient.identified_by.channel_identities",
                w.join(", ")
            ),
            None => format!(
                "recipient.contact_id: contact {contact_id} has no channel identities; add one to the contact or send with recipient.identified_by.channel_identities"
            ),
        });
    }
    let identities: Vec<Value> = chosen
        .into_iter()
        .map(|(_, i)| json!({"channel": i.channel, "identity": i.identity}))
        .collect();
    Ok(json!({"identified_by": {"channel_identities": identities}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(channel: &str, identity: &str) -> Identity {
        Identity {
            channel: channel.into(),
            identity: identity.into(),
        }
    }

    #[test]
    fn priority_orders_and_filters_the_identities() {
        let ids = [id("SMS", "+1"), id("WHATSAPP", "+2"), id("MESSENGER", "m")];
        let r = identified_recipient(
            "bob",
            "p",
            Contact::Found(&ids),
            Some(&["WHATSAPP".into(), "SMS".into()]),
        )
        .expect("recipient");
        assert_eq!(
            r,
            json!({"identified_by": {"channel_identities": [
                {"channel": "WHATSAPP", "identity": "+2"}, {"channel": "SMS", "identity": "+1"}]}})
        );
        let all = identified_recipient("bob", "p", Contact::Found(&ids), None).expect("all");
        assert_eq!(
            all["identified_by"]["channel_identities"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
    }

    #[test]
    fn no_usable_identity_or_no_contact_is_a_clear_refusal() {
        let ids = [id("SMS", "+1")];
        let e = identified_recipient("bob", "p", Contact::Found(&ids), Some(&["RCS".into()]))
            .expect_err("none on RCS");
        assert!(e.contains("no channel identity on RCS"), "{e}");
        assert!(!e.contains("+1"), "identities never appear in messages");
        let e = identified_recipient("bob", "p", Contact::Found(&[]), None).expect_err("none");
        assert!(e.contains("no channel identities"), "{e}");
        let e = identified_recipient("zed", "p", Contact::NotFound, None).expect_err("missing");
        assert!(e.contains("zed was not found in project p"), "{e}");
    }
}
