//! A policy route's JSON body, read the strict way: one meaning or none. serde_json keeps the
//! last of two equal keys while another parser may keep the first, and protojson accepts a
//! field under its proto name and its JSON name alike; so an object holding a key twice, or a
//! key and its alias (`app_id` and `appId`), anywhere in the body is refused — detected while
//! parsing, not by scanning again.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::policy::fields::{json_name, proto_spelling};

/// Why a body was not accepted.
#[derive(Debug)]
pub enum JsonProblem {
    /// A key given twice, or with its alias: the message says which and how to fix it.
    Ambiguous(String),
    /// Not JSON, or not an object: the message says where (never the input itself).
    Invalid(String),
}

/// Objects up to this size are checked for duplicates without allocating.
const LINEAR_LIMIT: usize = 16;

/// The bytes of a key in its proto spelling (`contactId` → `contact_id`), without allocating.
fn spelled(key: &str) -> impl Iterator<Item = u8> + '_ {
    key.bytes().flat_map(|b| {
        let (first, second) = if b.is_ascii_uppercase() {
            (b'_', Some(b.to_ascii_lowercase()))
        } else {
            (b, None)
        };
        std::iter::once(first).chain(second)
    })
}

/// Whether two keys name the same field (equal, or a key and its alias).
fn same_field(a: &str, b: &str) -> bool {
    a == b || spelled(a).eq(spelled(b))
}

/// Marks the visitor's own error among serde_json's.
const DUPLICATE: &str = "\u{1}duplicate key\u{1}";

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        // Small objects (nearly all of them) are checked by comparing spellings in place; a
        // large one switches to a set.
        let mut large: Option<HashSet<String>> = None;
        while let Some(key) = access.next_key::<String>()? {
            let duplicate = match &mut large {
                Some(set) => !set.insert(proto_spelling(&key).into_owned()),
                None => map.keys().any(|k| same_field(k, &key)),
            };
            if duplicate {
                return Err(de::Error::custom(format!("{DUPLICATE}{key}{DUPLICATE}")));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
            if large.is_none() && map.len() >= LINEAR_LIMIT {
                large = Some(map.keys().map(|k| proto_spelling(k).into_owned()).collect());
            }
        }
        Ok(Value::Object(map))
    }
}

/// Parses a policy route's body: a JSON object with one meaning.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonProblem> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(value)) if value.is_object() => Ok(value),
        Ok(_) => Err(JsonProblem::Invalid("body: expected a JSON object".into())),
        Err(e) => Err(describe(&e)),
    }
}

/// Parses a body the lenient way (the last of equal keys wins), for shadow mode.
pub fn parse_lenient(bytes: &[u8]) -> Result<Value, JsonProblem> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(JsonProblem::Invalid("body: expected a JSON object".into())),
        Err(e) => Err(describe(&e)),
    }
}

fn describe(e: &serde_json::Error) -> JsonProblem {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(DUPLICATE) {
        let key = rest.split(DUPLICATE).next().unwrap_or_default();
        let proto = proto_spelling(key);
        let json = json_name(&proto);
        return JsonProblem::Ambiguous(format!(
            "body: the field {proto} is given more than once (as {proto} or {json}), so parsers may read different values; send it once, under one name"
        ));
    }
    JsonProblem::Invalid(match e.classify() {
        serde_json::error::Category::Eof => "body: the JSON ends too early".to_string(),
        _ => format!(
            "body: not valid JSON (line {}, column {}): {}",
            e.line(),
            e.column(),
            match text.find(" at line ") {
                Some(i) => &text[..i],
                None => &text,
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ambiguous(text: &str) -> String {
        match parse_strict(text.as_bytes()) {
            Err(JsonProblem::Ambiguous(m)) => m,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn one_meaning_parses_to_the_same_value_as_serde_json() {
        let text = r#"{"app_id":"a","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"n":1.5,"m":-3,"b":[true,null,"x"]}"#;
        let strict = parse_strict(text.as_bytes()).expect("strict");
        let plain: Value = serde_json::from_str(text).expect("plain");
        assert_eq!(strict, plain);
    }

    #[test]
    fn duplicates_and_aliases_are_refused_anywhere() {
        assert!(ambiguous(r#"{"app_id":"a","app_id":"b"}"#).contains("app_id"));
        assert!(ambiguous(r#"{"app_id":"a","appId":"b"}"#).contains("appId"));
        let nested = ambiguous(r#"{"recipient":{"contact_id":"a","contactId":"b"}}"#);
        assert!(
            nested.contains("contact_id") && nested.contains("contactId"),
            "{nested}"
        );
        ambiguous(r#"{"x":[{"ttl_days":1,"ttlDays":2}]}"#);
        // Different keys, even similar ones, are fine.
        assert!(parse_strict(br#"{"app_id":"a","app_idx":"b","appID":"c"}"#).is_ok());
    }

    #[test]
    fn large_objects_are_checked_as_well_as_small_ones() {
        let mut fields: Vec<String> = (0..40).map(|i| format!("\"f{i}\":{i}")).collect();
        let ok = format!("{{{}}}", fields.join(","));
        assert!(parse_strict(ok.as_bytes()).is_ok());
        fields.push("\"f3\":0".into());
        ambiguous(&format!("{{{}}}", fields.join(",")));
        fields.pop();
        fields.push("\"someKey\":0,\"some_key\":1".into());
        ambiguous(&format!("{{{}}}", fields.join(",")));
    }

    #[test]
    fn invalid_bodies_say_where_without_echoing_the_input() {
        for text in [r#"{"a":"secret-value""#, "[1,2]", r#"{"a": secret}"#] {
            match parse_strict(text.as_bytes()) {
                Err(JsonProblem::Invalid(m)) => assert!(!m.contains("secret"), "{m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_lenient_reader_keeps_the_last_duplicate() {
        let v = parse_lenient(br#"{"a":1,"a":2}"#).expect("lenient");
        assert_eq!(v["a"], 2);
    }
}
