//! Filling a DISPATCH callback's empty ids with pseudo ids.
//!
//! A callback's mode is its own `processing_mode` (in the trigger object, or at the top level):
//! the listener never asks the API. Only a `contact_id` or `conversation_id` that is present
//! and `""` changes; everything else keeps its value and its key order (serde_json with
//! `preserve_order`). A callback with nothing to fill is left as its exact bytes.

use serde_json::{Map, Value};

use crate::pseudo_ids::{PseudoIdentity, PseudoIds, PseudoKind};

/// The body with pseudo ids filled in, or `None` when nothing changes (not JSON, not DISPATCH,
/// no empty id, or no identity to seal).
pub fn fill(body: &[u8], ids: &PseudoIds) -> Option<Vec<u8>> {
    let mut root: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let project = text(root.get("project_id"));
    let app = text(root.get("app_id"));
    if project.is_empty() || app.is_empty() {
        return None;
    }
    let top_dispatch = root.get("processing_mode").and_then(Value::as_str) == Some("DISPATCH");
    let mut changed = false;
    for (_, trigger) in root.iter_mut() {
        let Value::Object(obj) = trigger else {
            continue;
        };
        let dispatch = match obj.get("processing_mode").and_then(Value::as_str) {
            Some(mode) => mode == "DISPATCH",
            None => top_dispatch,
        };
        if !dispatch {
            continue;
        }
        // MO, receipts and events carry `channel_identity`; opt-in/out notifications carry
        // `channel` and `identity` themselves.
        let (channel, identity) = match obj.get("channel_identity").and_then(Value::as_object) {
            Some(ci) => (text(ci.get("channel")), text(ci.get("identity"))),
            None => (text(obj.get("channel")), text(obj.get("identity"))),
        };
        let who = PseudoIdentity {
            project: project.clone(),
            app: app.clone(),
            channel,
            identity,
        };
        if who.channel.is_empty() || who.identity.is_empty() {
            continue;
        }
        for (field, kind) in [
            ("contact_id", PseudoKind::Contact),
            ("conversation_id", PseudoKind::Conversation),
        ] {
            if obj.get(field).and_then(Value::as_str) != Some("") {
                continue;
            }
            match ids.mint(kind, &who) {
                Ok(id) => {
                    obj.insert(field.to_string(), Value::String(id));
                    changed = true;
                }
                Err(e) => tracing::debug!(field, error = %e, "no pseudo id for this callback"),
            }
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&root).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PseudoIds {
        PseudoIds::from_key_bytes(vec![[7; 32]]).expect("keys")
    }

    const MO: &str = r#"{"app_id":"01HAPP00000000000000000000","accepted_time":"2026-01-01T00:00:00Z","project_id":"p1","message":{"id":"01HMSG","direction":"TO_APP","contact_message":{"text_message":{"text":"hi"}},"channel_identity":{"channel":"SMS","identity":"46700000001","app_id":"01HAPP00000000000000000000"},"conversation_id":"","contact_id":"","metadata":"","accept_time":"2026-01-01T00:00:00Z","sender_id":"","processing_mode":"DISPATCH","injected":false},"message_metadata":""}"#;

    #[test]
    fn a_dispatch_mo_gets_both_ids_and_keeps_its_shape() {
        let out = fill(MO.as_bytes(), &ids()).expect("filled");
        let v: Value = serde_json::from_slice(&out).expect("json");
        let contact = v["message"]["contact_id"].as_str().expect("contact");
        let conversation = v["message"]["conversation_id"]
            .as_str()
            .expect("conversation");
        let (kind, who) = ids().open(contact).expect("opens");
        assert_eq!(kind, PseudoKind::Contact);
        assert_eq!(
            (who.channel.as_str(), who.identity.as_str()),
            ("SMS", "46700000001")
        );
        assert_eq!(
            ids().open(conversation).expect("opens").0,
            PseudoKind::Conversation
        );
        // Same keys, same order, only the two ids differ.
        let original: Value = serde_json::from_str(MO).expect("json");
        let keys = |v: &Value| {
            v["message"]
                .as_object()
                .expect("obj")
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&v), keys(&original));
        let mut back = v.clone();
        back["message"]["contact_id"] = Value::from("");
        back["message"]["conversation_id"] = Value::from("");
        assert_eq!(serde_json::to_string(&back).expect("text"), MO);
        // Deterministic.
        assert_eq!(fill(MO.as_bytes(), &ids()), Some(out));
    }

    #[test]
    fn conversation_callbacks_and_filled_ids_are_left_alone() {
        let conversation = MO.replace("\"DISPATCH\"", "\"CONVERSATION\"");
        assert_eq!(fill(conversation.as_bytes(), &ids()), None);
        let already = MO.replace("\"contact_id\":\"\"", "\"contact_id\":\"01HCONTACT\"");
        let out: Value =
            serde_json::from_slice(&fill(already.as_bytes(), &ids()).expect("conversation id"))
                .expect("json");
        assert_eq!(out["message"]["contact_id"], "01HCONTACT");
        assert_eq!(fill(b"not json", &ids()), None);
        let no_mode = MO.replace(",\"processing_mode\":\"DISPATCH\"", "");
        assert_eq!(fill(no_mode.as_bytes(), &ids()), None);
    }

    #[test]
    fn opt_out_notifications_use_their_own_identity() {
        let body = r#"{"app_id":"a1","project_id":"p1","opt_out_notification":{"request_id":"r","contact_id":"","channel":"SMS","identity":"46700000002","status":"OPT_OUT_SUCCEEDED","processing_mode":"DISPATCH"}}"#;
        let out: Value =
            serde_json::from_slice(&fill(body.as_bytes(), &ids()).expect("filled")).expect("json");
        let id = out["opt_out_notification"]["contact_id"]
            .as_str()
            .expect("id");
        assert_eq!(ids().open(id).expect("opens").1.identity, "46700000002");
    }
}
