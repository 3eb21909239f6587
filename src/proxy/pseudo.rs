//! The facts of rule `dispatch.pseudo_ids`: the pseudo ids a request carries, opened with the
//! keys of `callbacks.id_key_env` (no storage, no lookup). The policy turns them into edits
//! (`policy::pseudo`); here they are only read and checked: each must verify, be of the kind
//! its field holds, and have been minted for the request's project and app. Messages name the
//! field, never an identity.

use serde_json::Value;

use super::ctx::RequestCtx;
use crate::domain::{project_key, Operation};
use crate::policy::{fields, Action, PseudoFacts, PseudoField, Resolved, RuleId};
use crate::pseudo_ids::{is_pseudo, PseudoIdentity, PseudoIds, PseudoKind};

/// The pseudo ids of the request in `ctx`, opened; `None` when it carries none (or the rule
/// is off, or no keys are configured).
pub fn read(ids: Option<&PseudoIds>, ctx: &RequestCtx) -> Option<PseudoFacts> {
    let ids = ids?;
    let op = ctx.operation();
    if !RuleId::PseudoIds.applies_to(op)
        || ctx.snapshot.policy.settings.rules.action(RuleId::PseudoIds) == Action::Off
    {
        return None;
    }
    let project = ctx.subject.project.as_deref()?;
    let app = ctx.subject.app.as_deref();
    let found: Vec<(&'static str, PseudoKind, String)> = match op {
        Operation::SendMessage | Operation::SendEvent => ctx
            .body
            .as_ref()
            .and_then(|b| fields::get(b, "recipient"))
            .and_then(|r| fields::text(r, "contact_id"))
            .filter(|id| is_pseudo(id))
            .map(|id| ("recipient.contact_id", PseudoKind::Contact, id.to_string()))
            .into_iter()
            .collect(),
        Operation::ListMessages => [
            ("contact_id", PseudoKind::Contact),
            ("conversation_id", PseudoKind::Conversation),
        ]
        .into_iter()
        .filter_map(|(field, kind)| {
            ctx.query
                .get(field)
                .filter(|v| !v.is_empty())
                .map(|v| (field, kind, v.to_string()))
        })
        .collect(),
        Operation::FetchLastMessage => ctx
            .body
            .as_ref()
            .and_then(|b| fields::get(b, "contact_ids"))
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .map(|v| {
                        (
                            "contact_ids",
                            PseudoKind::Contact,
                            v.as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if !found.iter().any(|(_, _, id)| is_pseudo(id)) {
        return None;
    }
    Some(match resolve(ids, op, project, app, &found) {
        Ok(resolved) => PseudoFacts::Resolved(resolved),
        Err(message) => PseudoFacts::Refused(message),
    })
}

fn resolve(
    ids: &PseudoIds,
    op: Operation,
    project: &str,
    app: Option<&str>,
    found: &[(&'static str, PseudoKind, String)],
) -> Result<Resolved, String> {
    let mut opened: Vec<PseudoIdentity> = Vec::with_capacity(found.len());
    for (field, kind, id) in found {
        if !is_pseudo(id) {
            return Err(format!(
                "{field}: pseudo ids and other ids cannot be mixed in one request; send them in separate requests"
            ));
        }
        let who = match ids.open(id) {
            Ok((k, who)) if k == *kind => who,
            Ok(_) => {
                return Err(format!(
                    "{field}: this pseudo id is of the other kind (a contact id where a conversation id belongs, or the reverse); send it in its own field"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "{field}: this pseudo id does not verify (changed, or minted with a key the gateway no longer holds); use the id exactly as the callback carried it"
                ))
            }
        };
        let same_project = project_key(&who.project) == project_key(project);
        if !same_project || app.is_some_and(|a| a != who.app) {
            return Err(format!(
                "{field}: this pseudo id was minted for another app; use the ids of this app's callbacks"
            ));
        }
        opened.push(who);
    }
    let first = opened
        .first()
        .ok_or_else(|| "pseudo id: none".to_string())?;
    if opened
        .iter()
        .any(|w| w.channel != first.channel || w.app != first.app)
    {
        return Err(format!(
            "{}: these pseudo ids are of different channels; send one request per channel",
            found[0].0
        ));
    }
    let field = match op {
        Operation::ListMessages => {
            if opened.iter().any(|w| w.identity != first.identity) {
                return Err(
                    "contact_id: the contact and conversation pseudo ids are of different identities; send one of them".into(),
                );
            }
            PseudoField::ListFilter {
                contact: found.iter().any(|f| f.0 == "contact_id"),
                conversation: found.iter().any(|f| f.0 == "conversation_id"),
            }
        }
        Operation::FetchLastMessage => PseudoField::ContactIds,
        _ => PseudoField::Recipient,
    };
    let mut identities: Vec<String> = Vec::with_capacity(opened.len());
    for w in &opened {
        if !identities.contains(&w.identity) {
            identities.push(w.identity.clone());
        }
    }
    Ok(Resolved {
        field,
        channel: first.channel.clone(),
        identities,
        add_app: app.is_none().then(|| first.app.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PseudoIds {
        PseudoIds::from_key_bytes(vec![[9; 32]]).expect("keys")
    }

    fn who(app: &str, channel: &str, identity: &str) -> PseudoIdentity {
        PseudoIdentity {
            project: "p".into(),
            app: app.into(),
            channel: channel.into(),
            identity: identity.into(),
        }
    }

    #[test]
    fn pseudo_ids_resolve_for_their_own_app_only() {
        let ids = keys();
        let contact = ids
            .mint(PseudoKind::Contact, &who("a", "SMS", "+15550100"))
            .expect("mint");
        let found = [("recipient.contact_id", PseudoKind::Contact, contact.clone())];
        let r = resolve(&ids, Operation::SendMessage, "p", Some("a"), &found).expect("ok");
        assert_eq!(r.identities, ["+15550100"]);
        assert_eq!(r.channel, "SMS");
        let other = resolve(&ids, Operation::SendMessage, "p", Some("b"), &found);
        assert!(other.expect_err("other app").contains("another app"));
        let mut tampered = contact.clone();
        tampered.pop();
        tampered.push(if contact.ends_with('A') { 'B' } else { 'A' });
        let bad = [("recipient.contact_id", PseudoKind::Contact, tampered)];
        let e = resolve(&ids, Operation::SendMessage, "p", Some("a"), &bad).expect_err("tampered");
        assert!(e.contains("does not verify") && !e.contains("+1555"), "{e}");
    }

    #[test]
    fn mixed_channels_and_kinds_are_refused() {
        let ids = keys();
        let sms = ids
            .mint(PseudoKind::Contact, &who("a", "SMS", "+15550100"))
            .expect("mint");
        let wa = ids
            .mint(PseudoKind::Contact, &who("a", "WHATSAPP", "+15550100"))
            .expect("mint");
        let found = [
            ("contact_ids", PseudoKind::Contact, sms.clone()),
            ("contact_ids", PseudoKind::Contact, wa),
        ];
        let e = resolve(&ids, Operation::FetchLastMessage, "p", Some("a"), &found);
        assert!(e.expect_err("channels").contains("different channels"));
        let as_conversation = [("conversation_id", PseudoKind::Conversation, sms)];
        let e = resolve(&ids, Operation::ListMessages, "p", None, &as_conversation);
        assert!(e.expect_err("kind").contains("other kind"));
    }
}
