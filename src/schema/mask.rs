//! `update_mask`: what an update with a field mask stores, judged the way the upstream stores it.
//!
//! A field the mask names that the body omits or sets to null is written as its proto3 zero
//! value (`ttl_days` 0, an enum's first value, an empty string), not the API's create-time
//! default; a masked parent the body omits clears all its fields. [`effective`] fills those
//! zero values into the body the rules judge, so a mask cannot carry a value past them.

use serde_json::{Map, Value};

use super::{schema, Kind, MessageId, Shape};

/// The paths of an `update_mask` query: `a,b` and repeated parameters alike (either name,
/// `update_mask.paths` too), each in proto spelling.
pub fn paths(query: Option<&str>) -> Vec<String> {
    let Some(q) = query else {
        return Vec::new();
    };
    form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| {
            matches!(
                k.as_ref(),
                "update_mask" | "updateMask" | "update_mask.paths" | "updateMask.paths"
            )
        })
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|p| {
                    p.trim()
                        .split('.')
                        .map(|s| super::proto_spelling(s).into_owned())
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The zero value of a field (what the upstream stores for a masked field it was not given).
fn zero(kind: Kind, shape: Shape) -> Value {
    match shape {
        Shape::Repeated => return Value::Array(Vec::new()),
        Shape::Map => return Value::Object(Map::new()),
        Shape::Single => {}
    }
    let s = schema();
    match kind {
        Kind::String | Kind::Mask => Value::String(String::new()),
        Kind::Int => Value::from(0),
        Kind::Bool => Value::Bool(false),
        Kind::Struct | Kind::Any => Value::Object(Map::new()),
        Kind::Enum(e) => s
            .enumeration(e)
            .values
            .first()
            .map_or(Value::Null, |v| Value::String(v.clone())),
        Kind::Message(m) => {
            let mut out = Map::new();
            for f in &s.message(m).fields {
                if matches!(f.kind, Kind::Message(_) | Kind::Any | Kind::Struct) {
                    continue;
                }
                out.insert(f.proto.clone(), zero(f.kind, f.shape));
            }
            Value::Object(out)
        }
    }
}

/// Fills the zero value of every masked field that `body` (a `message`) omits or nulls.
pub fn effective(message: MessageId, body: &mut Value, mask: &[String]) {
    for path in mask {
        fill(message, body, &path.split('.').collect::<Vec<_>>());
    }
}

fn fill(message: MessageId, node: &mut Value, path: &[&str]) {
    let s = schema();
    let (Some(first), Some(object)) = (path.first(), node.as_object_mut()) else {
        return;
    };
    let Some((_, field)) = s.message(message).field(first) else {
        return;
    };
    let key = object
        .keys()
        .find(|k| field.named(k))
        .cloned()
        .unwrap_or_else(|| field.proto.clone());
    let slot = object.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = zero(field.kind, field.shape);
    }
    let Kind::Message(m) = field.kind else {
        return;
    };
    if path.len() > 1 {
        fill(m, slot, &path[1..]);
        return;
    }
    // A masked message is replaced whole: every field it does not give is stored as zero.
    for f in &s.message(m).fields {
        if !matches!(f.kind, Kind::Message(_) | Kind::Any | Kind::Struct) {
            fill(m, slot, &[f.proto.as_str()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> MessageId {
        schema().message_named("App").expect("App")
    }

    #[test]
    fn masked_fields_the_body_omits_are_their_zero_values() {
        let mut body = json!({"display_name": "x"});
        effective(
            app(),
            &mut body,
            &paths(Some(
                "update_mask=retention_policy.ttl_days,processing_mode",
            )),
        );
        assert_eq!(body["retention_policy"]["ttl_days"], json!(0));
        assert_eq!(body["processing_mode"], json!("CONVERSATION"));
        let mut body = json!({"retentionPolicy": null});
        effective(app(), &mut body, &paths(Some("updateMask=retentionPolicy")));
        assert_eq!(
            body["retentionPolicy"],
            json!({"retention_type": "MESSAGE_EXPIRE_POLICY", "ttl_days": 0})
        );
        let mut body = json!({"retention_policy": {"retention_type": "PERSIST_RETENTION_POLICY"}});
        effective(
            app(),
            &mut body,
            &paths(Some("update_mask=retention_policy")),
        );
        assert_eq!(
            body["retention_policy"]["ttl_days"],
            json!(0),
            "replaced whole"
        );
        let mut body = json!({"retention_policy": {"ttl_days": 30}});
        effective(
            app(),
            &mut body,
            &paths(Some(
                "update_mask.paths=retention_policy.ttl_days&update_mask=display_name",
            )),
        );
        assert_eq!(
            body["retention_policy"]["ttl_days"],
            json!(30),
            "given values stay"
        );
        assert_eq!(body["display_name"], json!(""));
    }
}
