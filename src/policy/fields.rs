//! Field names as the API's own parsers read them. protojson and grpc-gateway accept each field
//! under its proto name (`contact_id`) and under its lowerCamelCase JSON name (`contactId`), in
//! JSON bodies and in query parameters alike. Every rule reads fields through this module, and
//! the JSON name is derived from the proto name mechanically here, so a new field cannot
//! forget its alias.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::RuleId;
use crate::schema::{schema, Kind, MessageId};

/// The request fields rules read, from the catalogue's declarations resolved in the schema.
struct ReadTable {
    /// Top-level body fields (proto names) built from a policy route's body.
    kept: Vec<&'static str>,
    /// Per message, per field: whether it is on a declared path.
    read: Vec<Vec<bool>>,
    /// Per message, per field: whether it is built at the top of a body of that message (a
    /// rule of one of its operations reads it, or it is the app id).
    kept_at_top: Vec<Vec<bool>>,
}

fn table() -> &'static ReadTable {
    static TABLE: OnceLock<ReadTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let s = schema();
        // The facts phase reads the subject's app id from the body.
        let mut kept: Vec<&'static str> = vec!["app_id"];
        let mut read: Vec<Vec<bool>> = (0..s.message_count()).map(|_| Vec::new()).collect();
        for rule in RuleId::ALL {
            for path in rule.reads() {
                let first = path.split('.').next().unwrap_or(path);
                if !kept.contains(&first) {
                    kept.push(first);
                }
                for def in rule.operations().iter().flat_map(|op| s.definitions(*op)) {
                    let mut current = def.body_message().unwrap_or(def.request);
                    for part in path.split('.') {
                        let Some((index, field)) = s.message(current).field(part) else {
                            break;
                        };
                        let flags = &mut read[current.index()];
                        if flags.len() <= index {
                            flags.resize(index + 1, false);
                        }
                        flags[index] = true;
                        match field.kind {
                            Kind::Message(m) => current = m,
                            _ => break,
                        }
                    }
                }
            }
        }
        // A body message keeps the top-level fields a rule of one of its operations reads,
        // and the subject's app id.
        let kept_at_top = s
            .messages()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.fields
                    .iter()
                    .enumerate()
                    .map(|(index, f)| {
                        f.proto == "app_id" || read[i].get(index).copied().unwrap_or(false)
                    })
                    .collect()
            })
            .collect();
        ReadTable {
            kept,
            read,
            kept_at_top,
        }
    })
}

/// Whether the top-level body field `proto` is one a rule (or the subject) reads: only these
/// are built from a policy route's body.
pub fn kept(proto: &str) -> bool {
    table().kept.contains(&proto)
}

/// Field `index` of `message` in a per-message, per-field table (false where it is short).
fn flag(table: &[Vec<bool>], message: MessageId, index: usize) -> bool {
    table
        .get(message.index())
        .and_then(|flags| flags.get(index))
        .copied()
        .unwrap_or(false)
}

/// Whether field `index` of `message`, the body's message, is built from a body: one table
/// lookup. Only the fields rules of the message's own operations read (and the app id).
pub fn kept_field(message: MessageId, index: usize) -> bool {
    flag(&table().kept_at_top, message, index)
}

/// Whether a rule reads field `index` of `message` (its enum values are then read strictly:
/// an unknown name is refused, not forwarded).
pub fn is_read(message: MessageId, index: usize) -> bool {
    flag(&table().read, message, index)
}

/// Whether `key` is the lowerCamelCase JSON name of `proto` (`ttl_days` → `ttlDays`).
pub fn is_json_name(key: &str, proto: &str) -> bool {
    let mut k = key.bytes();
    let mut upper = false;
    for b in proto.bytes() {
        if b == b'_' {
            upper = true;
            continue;
        }
        let want = if upper { b.to_ascii_uppercase() } else { b };
        upper = false;
        if k.next() != Some(want) {
            return false;
        }
    }
    k.next().is_none()
}

/// Whether `key` names the field `proto`, under either name.
pub fn names(key: &str, proto: &str) -> bool {
    key == proto || is_json_name(key, proto)
}

pub use crate::schema::json_name;

pub use crate::schema::proto_spelling;

/// The key under which `object` holds the field `proto`, if it does.
pub fn key_of<'m>(object: &'m Map<String, Value>, proto: &str) -> Option<&'m String> {
    object.keys().find(|k| names(k, proto))
}

/// The field `proto` of a JSON object, under either name.
pub fn get<'v>(value: &'v Value, proto: &str) -> Option<&'v Value> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| names(k, proto))
        .map(|(_, v)| v)
}

/// The field `proto` of a JSON object, mutably, under either name.
pub fn get_mut<'v>(value: &'v mut Value, proto: &str) -> Option<&'v mut Value> {
    value
        .as_object_mut()?
        .iter_mut()
        .find(|(k, _)| names(k, proto))
        .map(|(_, v)| v)
}

/// The non-empty string at `proto` (absent, empty and non-strings are `None`).
pub fn text<'v>(value: &'v Value, proto: &str) -> Option<&'v str> {
    get(value, proto)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether `proto` is present and not null.
pub fn present(value: &Value, proto: &str) -> bool {
    get(value, proto).is_some_and(|x| !x.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kept_table_agrees_with_the_kept_names() {
        let s = schema();
        let mut kept_somewhere = 0;
        for (i, m) in s.messages().iter().enumerate() {
            let id = s.message_named(&m.name).expect("named");
            assert_eq!(id.index(), i);
            for (index, f) in m.fields.iter().enumerate() {
                assert_eq!(
                    kept_field(id, index),
                    f.proto == "app_id" || is_read(id, index),
                    "{}.{}",
                    m.name,
                    f.proto
                );
                kept_somewhere += usize::from(kept_field(id, index));
            }
        }
        assert!(kept_somewhere > 0);
        let send = schema().message_named("SendMessageRequest").expect("send");
        assert!(!kept_field(send, 999));
        // A send's metadata is read by no rule of a send (the batch rule reads a batch's).
        let field = |m, name| {
            schema()
                .message(m)
                .field(name)
                .map(|(index, _)| kept_field(m, index))
        };
        assert_eq!(field(send, "message_metadata"), Some(false));
        assert_eq!(field(send, "recipient"), Some(true));
        let batch = schema().message_named("BatchSendRequest").expect("batch");
        assert_eq!(field(batch, "message_metadata"), Some(true));
    }

    #[test]
    fn json_names_are_derived_from_proto_names() {
        for (proto, json) in [
            ("contact_id", "contactId"),
            ("app_id", "appId"),
            ("processing_strategy", "processingStrategy"),
            ("dispatch_retention_policy", "dispatchRetentionPolicy"),
            ("ttl_days", "ttlDays"),
            ("recipient", "recipient"),
        ] {
            assert_eq!(json_name(proto), json);
            assert!(is_json_name(json, proto), "{json}");
            assert!(names(proto, proto) && names(json, proto));
            assert_eq!(proto_spelling(json), proto);
        }
        assert!(!names("contactid", "contact_id"));
        assert!(!names("contact_Id", "contact_id"));
        assert!(!names("contactIdx", "contact_id"));
    }

    #[test]
    fn every_field_a_rule_reads_is_in_the_schema() {
        let s = schema();
        for rule in RuleId::ALL {
            for path in rule.reads() {
                let found = rule.operations().iter().any(|op| {
                    s.definitions(*op).any(|def| {
                        s.resolve(def.body_message().unwrap_or(def.request), path)
                            .is_some()
                            || s.resolve(def.request, path).is_some()
                    })
                });
                assert!(
                    found,
                    "{}: reads {path}, which no operation of the rule has",
                    rule.as_str()
                );
            }
        }
        assert!(kept("recipient") && kept("app_id") && !kept("message"));
    }

    #[test]
    fn fields_are_read_under_either_name() {
        let body = json!({"appId": "a", "recipient": {"contactId": "c"}, "ttl_days": 3});
        assert_eq!(text(&body, "app_id"), Some("a"));
        assert_eq!(
            get(&body, "recipient").and_then(|r| text(r, "contact_id")),
            Some("c")
        );
        assert!(present(&body, "ttl_days"));
        assert!(!present(&body, "correlation_id"));
        let obj = body.as_object().expect("object");
        assert_eq!(key_of(obj, "app_id").map(String::as_str), Some("appId"));
    }
}
