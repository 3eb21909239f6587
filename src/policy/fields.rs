//! Field names as the API's own parsers read them. protojson and grpc-gateway accept each field
//! under its proto name (`contact_id`) and under its lowerCamelCase JSON name (`contactId`), in
//! JSON bodies and in query parameters alike. Every rule reads fields through this module, and
//! the JSON name is derived from the proto name mechanically here, so a new field cannot
//! forget its alias.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// The top-level body fields rules read (by proto name): a policy route's body is parsed into
/// these alone, so a rule that reads another field must add it here.
pub const BODY_FIELDS: [&str; 10] = [
    "app_id",
    "processing_strategy",
    "recipient",
    "retention_policy",
    "dispatch_retention_policy",
    "contact_ids",
    "messages_source",
    "processing_mode",
    "conversation_metadata",
    "correlation_id",
];

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

/// The lowerCamelCase JSON name of `proto`, for messages.
pub fn json_name(proto: &str) -> String {
    let mut out = String::with_capacity(proto.len());
    let mut upper = false;
    for c in proto.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The proto-name spelling of any key (`contactId` → `contact_id`), under which a key and its
/// alias collide.
pub fn proto_spelling(key: &str) -> Cow<'_, str> {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

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
