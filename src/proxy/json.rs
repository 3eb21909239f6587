//! A policy route's JSON body, read the strict way: one meaning or none. serde_json keeps the
//! last of two equal keys while another parser may keep the first, and protojson accepts a
//! field under its proto name and its JSON name alike; so an object holding a key twice, or a
//! key and its alias (`app_id` and `appId`), anywhere in the body is refused — detected while
//! parsing, not by scanning again.
//!
//! The body is read as the operation's message in the API schema: keys are its fields (a key
//! a lenient reader could take for a field is refused), keys of map and Struct fields are data
//! (no alias check among them), and enum values must be exactly one of their names. Rules read
//! a handful of top-level fields (declared in the rule catalogue); only those are built into a
//! `Value`. The rest of the body (a message's text, media, templates) is walked once for
//! syntax and duplicates and never copied: keys are borrowed from the input, strings are only
//! validated. A rewrite reads the whole body again ([`parse_whole`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::policy::fields::{self, json_name, proto_spelling};
use crate::schema::query::{enum_problem, read_enum, EnumReading};
use crate::schema::{schema, EnumId, Kind, MessageId, Shape};

/// Why a body was not accepted.
#[derive(Debug)]
pub enum JsonProblem {
    /// A key given twice, or with its alias: the message says which and how to fix it.
    Ambiguous(String),
    /// Not JSON, or not an object: the message says where (never the input itself).
    Invalid(String),
}

impl From<JsonProblem> for crate::error::GatewayError {
    /// A body refused outright: 400 with the problem's message.
    fn from(problem: JsonProblem) -> Self {
        let (JsonProblem::Ambiguous(message) | JsonProblem::Invalid(message)) = problem;
        crate::error::GatewayError::InvalidBody { message }
    }
}

/// Objects up to this size are checked for duplicates without hashing.
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
    let camel = |k: &str| k.bytes().any(|c| c.is_ascii_uppercase());
    // Without a capital in either, each is its own proto spelling.
    a == b || ((camel(a) || camel(b)) && spelled(a).eq(spelled(b)))
}

/// Marks the visitor's own errors among serde_json's.
const DUPLICATE: &str = "\u{1}duplicate key\u{1}";
const AMBIGUOUS: &str = "\u{2}";

/// The keys of the objects being read, innermost object's last: one buffer for the whole body.
type KeyStack<'de> = RefCell<Vec<Cow<'de, str>>>;

fn spelling(aliases: bool, key: &str) -> String {
    if aliases {
        proto_spelling(key).into_owned()
    } else {
        key.to_string()
    }
}

/// The keys of one object seen so far, for the duplicate check: compared in place while the
/// object is small (kept on the body's [`KeyStack`], so nothing is allocated per object),
/// hashed once it is large. Where keys are field names (`aliases`), a key and its alias are the
/// same key (compared by proto spelling); where they are data (maps, Structs), only equal keys
/// are.
struct Seen<'k, 'de> {
    aliases: bool,
    stack: &'k KeyStack<'de>,
    /// Where this object's keys start on the stack.
    start: usize,
    large: Option<HashSet<String>>,
}

impl<'k, 'de> Seen<'k, 'de> {
    fn new(aliases: bool, stack: &'k KeyStack<'de>) -> Self {
        Seen {
            aliases,
            stack,
            start: stack.borrow().len(),
            large: None,
        }
    }

    /// Records `key`; false when the object already has it (or its alias).
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        let aliases = self.aliases;
        if let Some(set) = self.large.as_mut() {
            return set.insert(spelling(aliases, &key));
        }
        let mut keys = self.stack.borrow_mut();
        if keys[self.start..].iter().any(|k| {
            if aliases {
                same_field(k, &key)
            } else {
                *k == key
            }
        }) {
            return false;
        }
        keys.push(key);
        if keys.len() - self.start == LINEAR_LIMIT {
            self.large = Some(
                keys.drain(self.start..)
                    .map(|k| spelling(aliases, &k))
                    .collect(),
            );
        }
        true
    }
}

impl Drop for Seen<'_, '_> {
    fn drop(&mut self) {
        self.stack.borrow_mut().truncate(self.start);
    }
}

/// An object key, borrowed from the input unless it holds an escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Where in the body a value is, which decides what is built of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The body itself: an object of which only the fields rules read are kept.
    Top,
    /// A field rules read, or inside one: built in full.
    Kept,
    /// A kept field that is a message or a list of messages (a send's `recipient`, an app's
    /// retention policies, a batch's recipients), or inside one: of each message only the
    /// fields on a path a rule declares are built (maps and Structs among them in full; a
    /// message on such a path keeps its presence as an object of its own read fields), so a
    /// recipient's identities or a thousand recipients' parameters are walked, never copied.
    Facts,
    /// Anything else: checked, not built (read as `Null`).
    Skipped,
}

/// What the schema says a value is.
#[derive(Clone, Copy)]
enum Ty {
    /// A message of the schema: keys are field names.
    Message(MessageId),
    /// A map field: keys are data; values are of this kind.
    Map(Kind),
    /// A list: elements are of this kind.
    List(Kind),
    /// A `google.protobuf.Struct`, or inside one: keys are data.
    Struct,
    /// A value the schema does not model: keys are read as field names, conservatively.
    Any,
    /// One enum value.
    Enum(EnumId),
    /// A string, number or bool.
    Scalar,
}

impl Ty {
    fn of(kind: Kind, shape: Shape) -> Ty {
        match shape {
            Shape::Repeated => Ty::List(kind),
            Shape::Map => Ty::Map(kind),
            Shape::Single => Ty::one(kind),
        }
    }

    fn one(kind: Kind) -> Ty {
        match kind {
            Kind::String | Kind::Int | Kind::Bool | Kind::Mask => Ty::Scalar,
            Kind::Struct => Ty::Struct,
            Kind::Any => Ty::Any,
            Kind::Enum(e) => Ty::Enum(e),
            Kind::Message(m) => Ty::Message(m),
        }
    }

    /// Whether keys of an object of this type are field names (a key and its alias collide).
    fn names_fields(self) -> bool {
        !matches!(self, Ty::Map(_) | Ty::Struct)
    }
}

/// Reads one value: `strict` refuses what has two readings, otherwise the last of equal keys
/// wins and spellings are not judged.
#[derive(Clone, Copy)]
struct Read<'k, 'de> {
    /// The keys of the enclosing objects, for the duplicate check.
    keys: &'k KeyStack<'de>,
    strict: bool,
    part: Part,
    ty: Ty,
    /// The field this value belongs to (proto name), for messages.
    field: &'static str,
    /// Whether a rule reads it (an unknown enum name is then refused).
    read: bool,
}

impl<'k, 'de> Read<'k, 'de> {
    /// The value of `key` in an object of this type; an error message when the key is a
    /// lenient spelling of a field.
    fn child(self, key: &str) -> Result<Self, String> {
        let (ty, field, read, kept) = match self.ty {
            Ty::Message(m) => {
                let message = schema().message(m);
                match message.field(key) {
                    Some((index, f)) => {
                        let read = fields::is_read(m, index);
                        let kept = match self.part {
                            Part::Top => fields::kept_field(m, index),
                            Part::Facts => read,
                            Part::Kept | Part::Skipped => false,
                        };
                        (Ty::of(f.kind, f.shape), f.proto.as_str(), read, kept)
                    }
                    None => {
                        if let Some(f) = message.loosely(key).filter(|_| self.strict) {
                            return Err(format!(
                                "body: {key:?} is not a field name, but a lenient reader could take it for {}; send {} (or {}) exactly",
                                f.proto, f.proto, f.json
                            ));
                        }
                        (Ty::Any, self.field, false, false)
                    }
                }
            }
            Ty::Map(kind) => (Ty::one(kind), self.field, self.read, false),
            Ty::Struct => (Ty::Struct, self.field, self.read, false),
            // Without a schema type, the top level keeps what rules read by proto spelling.
            Ty::Any if self.part == Part::Top => (
                Ty::Any,
                self.field,
                false,
                fields::kept(&proto_spelling(key)),
            ),
            Ty::Any | Ty::List(_) | Ty::Enum(_) | Ty::Scalar => (Ty::Any, self.field, false, false),
        };
        let part = match self.part {
            Part::Kept => Part::Kept,
            // A kept message (or list of them) is built along its declared paths; any other
            // kept value in full.
            Part::Top | Part::Facts if kept => match ty {
                Ty::Message(_) | Ty::List(Kind::Message(_)) => Part::Facts,
                _ => Part::Kept,
            },
            _ => Part::Skipped,
        };
        Ok(Read {
            keys: self.keys,
            strict: self.strict,
            part,
            ty,
            field,
            read,
        })
    }

    fn element(self) -> Self {
        Read {
            part: match self.part {
                Part::Kept | Part::Facts => self.part,
                Part::Top | Part::Skipped => Part::Skipped,
            },
            ty: match self.ty {
                Ty::List(kind) => Ty::one(kind),
                Ty::Struct => Ty::Struct,
                _ => Ty::Any,
            },
            ..self
        }
    }

    fn kept(self) -> bool {
        matches!(self.part, Part::Kept | Part::Facts)
    }

    fn scalar(self, value: impl FnOnce() -> Value) -> Value {
        if self.kept() {
            value()
        } else {
            Value::Null
        }
    }

    /// An enum given as a number.
    fn number<E: de::Error>(self) -> Result<(), E> {
        match self.ty {
            Ty::Enum(e) if self.strict => Err(ambiguity(enum_problem(
                self.field,
                schema().enumeration(e),
                EnumReading::Number,
            ))),
            _ => Ok(()),
        }
    }

    /// An enum given as a string: exactly one of its names, or refused.
    fn text<E: de::Error>(self, v: &str) -> Result<(), E> {
        let Ty::Enum(e) = self.ty else {
            return Ok(());
        };
        if !self.strict {
            return Ok(());
        }
        let def = schema().enumeration(e);
        match read_enum(def, v) {
            EnumReading::Exact => Ok(()),
            EnumReading::Unknown if !self.read => Ok(()),
            reading => Err(ambiguity(enum_problem(self.field, def, reading))),
        }
    }
}

fn ambiguity<E: de::Error>(message: String) -> E {
    de::Error::custom(format!("{AMBIGUOUS}{message}{AMBIGUOUS}"))
}

impl<'de> DeserializeSeed<'de> for Read<'_, 'de> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Read<'_, 'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(self.scalar(|| Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.number()?;
        Ok(self.scalar(|| Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.number()?;
        Ok(self.scalar(|| Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.number()?;
        Ok(self.scalar(|| Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.text(v)?;
        Ok(self.scalar(|| Value::String(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.text(&v)?;
        Ok(self.scalar(|| Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let element = self.element();
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(element)? {
            if element.kept() {
                items.push(v);
            }
        }
        Ok(self.scalar(|| Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let builds = self.part != Part::Skipped;
        let mut map = Map::new();
        let mut seen = Seen::new(self.ty.names_fields(), self.keys);
        while let Some(Key(key)) = access.next_key()? {
            // Cloning a key borrowed from the input copies a pointer.
            if self.strict && !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("{DUPLICATE}{key}{DUPLICATE}")));
            }
            let child = self.child(&key).map_err(ambiguity::<A::Error>)?;
            let value = access.next_value_seed(child)?;
            if builds && child.kept() {
                map.insert(key.into_owned(), value);
            }
        }
        Ok(if builds {
            Value::Object(map)
        } else {
            Value::Null
        })
    }
}

/// Reads a policy route's body: a JSON object with one meaning (`strict`), or read the lenient
/// way (the last of equal keys wins, for shadow mode). `message` is the operation's body
/// message in the schema (keys are then read as its fields, map and Struct keys as data, enum
/// values by name); without one, every key is read as a field name. Returns the object with the
/// fields rules read, under the keys the body gives them.
pub fn read_fields(
    bytes: &[u8],
    strict: bool,
    message: Option<MessageId>,
) -> Result<Value, JsonProblem> {
    // JSON text is UTF-8 (RFC 8259 §8.1): checked once for the whole body, so the parser does
    // not check each string again.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        JsonProblem::Invalid(format!(
            "body: not valid UTF-8 (at byte {}); JSON text must be UTF-8",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let keys = KeyStack::default();
    let read = Read {
        keys: &keys,
        strict,
        part: Part::Top,
        ty: message.map_or(Ty::Any, Ty::Message),
        field: "body",
        read: false,
    };
    let value = read
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| describe(&e))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(JsonProblem::Invalid("body: expected a JSON object".into()))
    }
}

/// Reads a whole body that [`read_fields`] accepted, for a rewrite.
pub fn parse_whole(bytes: &[u8]) -> Result<Value, JsonProblem> {
    serde_json::from_slice::<Value>(bytes).map_err(|e| describe(&e))
}

fn describe(e: &serde_json::Error) -> JsonProblem {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(AMBIGUOUS) {
        let message = rest.split(AMBIGUOUS).next().unwrap_or_default();
        return JsonProblem::Ambiguous(message.to_string());
    }
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
    use proptest::prelude::*;

    /// The reading without a schema type (every key a field name), as most tests here use it.
    fn read_fields(bytes: &[u8], strict: bool) -> Result<Value, JsonProblem> {
        super::read_fields(bytes, strict, None)
    }

    fn send(text: &str) -> Result<Value, JsonProblem> {
        let m = schema().message_named("SendMessageRequest");
        super::read_fields(text.as_bytes(), true, m)
    }

    #[test]
    fn a_batch_keeps_compact_facts_of_each_recipient() {
        let m = schema().message_named("BatchSendRequest");
        let body = r#"{"app_id":"a","message":{"text_message":{"text":"Hi ${n}"}},"send_after":"x",
            "recipient_and_params":[
              {"recipient":{"contact_id":"c1"},"parameters":{"n":"Ann"},"message_metadata":{"_batch_id":"m","k":1}},
              {"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"conversation_metadata":{"x":[1]}}]}"#;
        let facts = super::read_fields(body.as_bytes(), true, m).expect("read");
        assert_eq!(
            facts["recipient_and_params"],
            serde_json::json!([
                {"recipient":{"contact_id":"c1"},"message_metadata":{"_batch_id":"m","k":1}},
                {"recipient":{"identified_by":{}},"conversation_metadata":{"x":[1]}}
            ]),
            "parameters and identities are walked, not built"
        );
        assert!(facts.get("message").is_none());
        assert_eq!(facts["send_after"], "x");
        // Duplicates are still refused inside what is not built.
        let dup = r#"{"recipient_and_params":[{"parameters":{"n":"a","n":"b"}}]}"#;
        assert!(super::read_fields(dup.as_bytes(), true, m).is_err());
    }

    #[test]
    fn a_send_keeps_compact_facts_of_its_recipient() {
        let facts = send(
            r#"{"app_id":"a","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},
                "message":{"text_message":{"text":"hi"}},"processing_strategy":"DISPATCH_ONLY"}"#,
        )
        .expect("read");
        assert_eq!(
            facts,
            serde_json::json!({"app_id":"a","recipient":{"identified_by":{}},"processing_strategy":"DISPATCH_ONLY"}),
            "the identities are walked, not built; identified_by keeps its presence"
        );
        let facts = send(r#"{"recipient":{"contactId":"c1","channel_priority_order":["SMS"]}}"#)
            .expect("read");
        assert_eq!(facts["recipient"], serde_json::json!({"contactId":"c1"}));
        // An app's retention policies keep the fields the retention rules read.
        let m = schema().message_named("App");
        let app = r#"{"display_name":"x","retention_policy":{"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":5000}}"#;
        let facts = super::read_fields(app.as_bytes(), true, m).expect("read");
        assert_eq!(
            facts["retention_policy"],
            serde_json::json!({"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":5000})
        );
        // Duplicates and enum spellings are still judged inside what is not built.
        for refused in [
            r#"{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","channel":"MMS"}]}}}"#,
            r#"{"recipient":{"identified_by":{"channel_identities":[{"channel":"1","identity":"+1"}]}}}"#,
        ] {
            assert!(send(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn map_and_struct_keys_are_data() {
        for body in [
            r#"{"app_id":"a","conversation_metadata":{"orderId":1,"order_id":2}}"#,
            r#"{"message":{"template_message":{"omni_template":{"template_id":"t","parameters":{"first_name":"a","firstName":"b"}}}}}"#,
            r#"{"channel_properties":{"WHATSAPP_X":"1","whatsappX":"2"}}"#,
            r#"{"conversation_metadata":{"deep":{"aB":1,"a_b":2}}}"#,
        ] {
            assert!(send(body).is_ok(), "{body}");
        }
        assert!(matches!(
            send(r#"{"conversation_metadata":{"k":1,"k":2}}"#),
            Err(JsonProblem::Ambiguous(_))
        ));
    }

    #[test]
    fn enums_are_read_by_exact_name_only() {
        assert!(send(r#"{"processing_strategy":"DISPATCH_ONLY"}"#).is_ok());
        for bad in [
            r#"{"processing_strategy":1}"#,
            r#"{"processing_strategy":"1"}"#,
            r#"{"processing_strategy":"01"}"#,
            r#"{"processing_strategy":"+1"}"#,
            r#"{"processing_strategy":" 1"}"#,
            r#"{"processing_strategy":"dispatch_only"}"#,
            r#"{"processing_strategy":"DISPATCH-ONLY"}"#,
            r#"{"processing_strategy":"NEW_STRATEGY"}"#,
            r#"{"recipient":{"identified_by":{"channel_identities":[{"channel":2,"identity":"+1"}]}}}"#,
            r#"{"recipient":{"identified_by":{"channel_identities":[{"channel":"sms","identity":"+1"}]}}}"#,
        ] {
            match send(bad) {
                Err(JsonProblem::Ambiguous(m)) => assert!(!m.contains("+1\""), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // An unknown name on a field no rule reads: the API may have added it.
        assert!(send(r#"{"queue":"NEW_QUEUE"}"#).is_ok());
        assert!(send(r#"{"queue":"1"}"#).is_err());
    }

    #[test]
    fn lenient_spellings_of_field_names_are_refused() {
        for bad in [
            r#"{"App_ID":"a"}"#,
            r#"{"recipient":{"contactID":"k"}}"#,
            r#"{"recipient":{"Contact_Id":"k"}}"#,
            r#"{"processingstrategy":"DEFAULT"}"#,
        ] {
            assert!(matches!(send(bad), Err(JsonProblem::Ambiguous(_))), "{bad}");
        }
        assert!(send(r#"{"appId":"a","some_future_field":{"x":1}}"#).is_ok());
    }

    fn ambiguous(text: &str) -> String {
        match read_fields(text.as_bytes(), true) {
            Err(JsonProblem::Ambiguous(m)) => m,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// What `read_fields` should give: serde_json's reading, with the fields rules read.
    fn rule_fields(whole: &Value) -> Value {
        let mut kept = whole.as_object().expect("object").clone();
        kept.retain(|k, _| fields::kept(&proto_spelling(k)));
        Value::Object(kept)
    }

    #[test]
    fn the_fields_rules_read_are_serde_jsons_reading() {
        let text = r#"{"appId":"a","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]},"n":1.5,"m":-3,"b":[true,null,"x\u00e9"]},"message":{"text_message":{"text":"hi \"there\""}},"retentionPolicy":{"ttl_days":"30"},"processing_mode":7}"#;
        let whole: Value = serde_json::from_str(text).expect("plain");
        let fields = read_fields(text.as_bytes(), true).expect("strict");
        assert_eq!(fields, rule_fields(&whole));
        assert!(fields.get("message").is_none(), "{fields}");
        assert_eq!(fields["recipient"], whole["recipient"]);
        assert_eq!(parse_whole(text.as_bytes()).expect("whole"), whole);
        assert_eq!(
            read_fields(text.as_bytes(), false).expect("lenient"),
            fields
        );
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
        assert!(read_fields(br#"{"app_id":"a","app_idx":"b","appID":"c"}"#, true).is_ok());
    }

    #[test]
    fn large_objects_are_checked_as_well_as_small_ones() {
        let mut fields: Vec<String> = (0..40).map(|i| format!("\"f{i}\":{i}")).collect();
        let ok = format!("{{{}}}", fields.join(","));
        assert!(read_fields(ok.as_bytes(), true).is_ok());
        fields.push("\"f3\":0".into());
        ambiguous(&format!("{{{}}}", fields.join(",")));
        fields.pop();
        fields.push("\"someKey\":0,\"some_key\":1".into());
        ambiguous(&format!("{{{}}}", fields.join(",")));
    }

    #[test]
    fn invalid_bodies_say_where_without_echoing_the_input() {
        let bodies: [&[u8]; 7] = [
            br#"{"a":"secret-value""#,
            b"[1,2]",
            br#"{"a": secret}"#,
            br#""secret""#,
            b"null",
            br#"{"a":1} {"secret":2}"#,
            b"{\"message\":\"\xff secret\"}",
        ];
        for text in bodies {
            match read_fields(text, true) {
                Err(JsonProblem::Invalid(m)) => assert!(!m.contains("secret"), "{m}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    #[test]
    fn bodies_must_be_utf8_anywhere_and_the_error_says_where() {
        for (text, at) in [
            (&b"{\"message\":{\"text\":\"\xff\"}}"[..], 20),
            (&b"{\"app\xc0\xafid\":\"a\"}"[..], 5),
            (&b"{\"a\":1}\xed\xa0\x80"[..], 7),
        ] {
            for strict in [true, false] {
                match read_fields(text, strict) {
                    Err(JsonProblem::Invalid(m)) => {
                        assert_eq!(
                            m,
                            format!(
                                "body: not valid UTF-8 (at byte {at}); JSON text must be UTF-8"
                            )
                        )
                    }
                    other => panic!("{}: {other:?}", String::from_utf8_lossy(text)),
                }
            }
        }
        let fine = "{\"app_id\":\"\u{e9}t\u{e9} \u{1f600}\",\"message\":{\"text_message\":{\"text\":\"\u{65e5}\"}}}";
        assert_eq!(
            send(fine).expect("UTF-8")["app_id"],
            "\u{e9}t\u{e9} \u{1f600}"
        );
    }

    #[test]
    fn the_lenient_reader_keeps_the_last_duplicate() {
        let v = read_fields(br#"{"app_id":"a","app_id":"b","x":1,"x":2}"#, false).expect("lenient");
        assert_eq!(v, serde_json::json!({"app_id": "b"}));
        assert!(read_fields(br#"{"x":{"y":1,"y":2}}"#, false).is_ok());
    }

    /// Whether any object in `v` holds a key and its alias.
    fn has_alias_pair(v: &Value) -> bool {
        match v {
            Value::Object(map) => {
                let keys: Vec<_> = map.keys().collect();
                keys.iter()
                    .enumerate()
                    .any(|(i, a)| keys[i + 1..].iter().any(|b| same_field(a, b)))
                    || map.values().any(has_alias_pair)
            }
            Value::Array(items) => items.iter().any(has_alias_pair),
            _ => false,
        }
    }

    fn arbitrary_body() -> impl Strategy<Value = Value> {
        const KEYS: [&str; 14] = [
            "app_id",
            "appId",
            "recipient",
            "contact_id",
            "contactId",
            "message",
            "text",
            "ttl_days",
            "ttlDays",
            "retention_policy",
            "processingStrategy",
            "x",
            "caf\u{e9}",
            "a\"b",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\u{e9}\\\"\n]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..6).prop_map(
                    |pairs| Value::Object(
                        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )
                ),
            ]
        })
        .prop_map(|v| match v {
            Value::Object(_) => v,
            other => serde_json::json!({ "message": other, "app_id": "a" }),
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Any object: the strict reading refuses it exactly when some object in it holds a
        /// key and its alias, and otherwise gives serde_json's reading of the fields rules
        /// read; the lenient reading always does.
        #[test]
        fn readings_agree_with_serde_json(body in arbitrary_body()) {
            let text = serde_json::to_vec(&body).expect("serialise");
            let whole: Value = serde_json::from_slice(&text).expect("reparse");
            match read_fields(&text, true) {
                Ok(fields) => {
                    proptest::prop_assert!(!has_alias_pair(&whole));
                    proptest::prop_assert_eq!(fields, rule_fields(&whole));
                }
                Err(JsonProblem::Ambiguous(_)) => proptest::prop_assert!(has_alias_pair(&whole)),
                Err(JsonProblem::Invalid(m)) => proptest::prop_assert!(false, "{}", m),
            }
            proptest::prop_assert_eq!(read_fields(&text, false).expect("lenient"), rule_fields(&whole));
        }

        /// Cut anywhere, a body is refused (as invalid, or as ambiguous when a duplicate comes
        /// before the cut), never read.
        #[test]
        fn truncated_bodies_are_invalid(body in arbitrary_body(), cut in 0.0f64..1.0) {
            let text = serde_json::to_vec(&body).expect("serialise");
            let at = ((text.len() as f64) * cut) as usize;
            proptest::prop_assume!(at < text.len());
            let truncated = &text[..at];
            proptest::prop_assert!(read_fields(truncated, true).is_err());
            proptest::prop_assert!(read_fields(truncated, false).is_err());
        }
    }

    /// Whether every rule, alone and in each action, under each pinned mode, decides the same
    /// for `op` on each of `readings` as on the whole body: the first rule found deciding
    /// otherwise.
    fn first_disagreement(
        op: crate::domain::Operation,
        whole: &Value,
        readings: &[&Value],
    ) -> Option<String> {
        use crate::domain::ProcessingMode;
        use crate::policy::{
            evaluate, Action, PolicyContext, Query, RequestFacts, RuleId, RuleSet,
        };
        let query = Query::parse(None);
        for mode in [
            None,
            Some(ProcessingMode::Conversation),
            Some(ProcessingMode::Dispatch),
        ] {
            for &rule in RuleId::ALL {
                for action in [Action::Shadow, Action::Rewrite, Action::Enforce] {
                    let mut rules = RuleSet::default();
                    for &r in RuleId::ALL {
                        rules.set(r, Action::Off);
                    }
                    rules.set(rule, action);
                    let ctx = PolicyContext {
                        rules: &rules,
                        create_app_default_mode: mode,
                        max_ttl_days: 30,
                        allow_dispatch_only: false,
                        now: std::time::UNIX_EPOCH,
                    };
                    let decide = |body: &Value| {
                        let facts = RequestFacts {
                            operation: op,
                            query: &query,
                            body: Some(body),
                            message_store: None,
                            pseudo: None,
                        };
                        evaluate(&facts, mode, &ctx)
                    };
                    let expected = decide(whole);
                    if let Some(fields) = readings.iter().find(|f| decide(f) != expected) {
                        return Some(format!("{rule:?} {action:?} {op:?} {mode:?}: {fields}"));
                    }
                }
            }
        }
        None
    }

    /// Every rule decides the same on the fields [`read_fields`] keeps as on the whole body,
    /// read without a schema type and as each operation's body message (where only the
    /// declared paths of message fields are built): a rule reading a field its catalogue row
    /// does not declare fails this.
    #[test]
    fn rules_decide_the_same_on_the_fields_as_on_the_whole_body() {
        let bodies = [
            r#"{"app_id":"a","recipient":{"contact_id":"k"},"message":{"text_message":{"text":"x"}}}"#,
            r#"{"appId":"a","recipient":{"contactId":"k"},"processingStrategy":"DISPATCH_ONLY","correlationId":"c","conversationMetadata":{"k":"v"}}"#,
            r#"{"app_id":"a","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"processing_strategy":"DISPATCH_ONLY","correlation_id":"c"}"#,
            r#"{"display_name":"x","retention_policy":{"retention_type":"PERSIST","ttl_days":5000},"dispatchRetentionPolicy":{"retentionType":"MESSAGE_EXPIRE","ttlDays":"9"}}"#,
            r#"{"retentionPolicy":{"ttlDays":400},"processing_mode":"DISPATCH"}"#,
            r#"{"dispatch_retention_policy":{"ttl_days":60}}"#,
            r#"{"app_id":"a","contact_ids":["k"],"messages_source":"CONVERSATION_SOURCE"}"#,
            r#"{"appId":"a","contactIds":["k"],"channel_identities":[{"identity":"+1"}]}"#,
            r#"{"retention_policy":{"ttl_days":0},"processing_mode":2,"processing_strategy":1}"#,
            r#"{"app_id":"a","recipient":{"contact_id":"k","identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"channel_priority_order":["SMS"],"message_metadata":"m"}"#,
            r#"{"app_id":"a","send_after":"2030-01-01T00:00:00Z","message_metadata":{"_batch_id":"x"},"recipient_and_params":[{"recipient":{"contactId":"k"},"parameters":{"n":"a"}},{"recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+1"}]}},"conversation_metadata":{"_batch_id":"y"}}]}"#,
            r#"{"app_id":"a","recipient_and_params":[],"processing_strategy":"DISPATCH_ONLY","conversation_metadata":{"k":1}}"#,
        ];
        for text in bodies {
            let whole: Value = serde_json::from_str(text).expect("json");
            let untyped = read_fields(text.as_bytes(), true).expect("fields");
            for &op in crate::domain::Operation::ALL {
                let message = schema().definitions(op).find_map(|d| d.body_message());
                // A body the operation's message refuses (an enum by number) is never judged.
                let typed = super::read_fields(text.as_bytes(), true, message).ok();
                let readings: Vec<&Value> =
                    std::iter::once(&untyped).chain(typed.as_ref()).collect();
                if let Some(found) = first_disagreement(op, &whole, &readings) {
                    panic!("{found}\nbody: {text}");
                }
            }
        }
    }

    /// One value of a field of `kind`: strings and numbers that rules judge (empty, a verb, a
    /// time, ttl days in and out of range, numeric strings), every name of an enum, messages
    /// nested to `depth`, sometimes null.
    fn generated_value(kind: Kind, depth: u32) -> BoxedStrategy<Value> {
        use serde_json::json;
        let value = match kind {
            Kind::String => proptest::sample::select(vec![
                json!("k"),
                json!(""),
                json!("DISPATCH_ONLY"),
                json!("2030-01-01T00:00:00Z"),
                json!("mgpc_x"),
            ])
            .boxed(),
            Kind::Int => proptest::sample::select(vec![
                json!(0),
                json!(7),
                json!(30),
                json!(5000),
                json!("31"),
                json!(-1),
            ])
            .boxed(),
            Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            Kind::Mask => Just(json!("a,b")).boxed(),
            Kind::Struct => proptest::sample::select(vec![
                json!({"_batch_id": "x", "k": 1}),
                json!({"orderId": 1, "order_id": [2]}),
            ])
            .boxed(),
            Kind::Any => Just(json!({"k": {"v": 1}})).boxed(),
            Kind::Enum(e) => proptest::sample::select(schema().enumeration(e).values.clone())
                .prop_map(Value::String)
                .boxed(),
            Kind::Message(m) if depth > 0 => generated_body(m, depth - 1),
            Kind::Message(_) => Just(json!({})).boxed(),
        };
        prop_oneof![9 => value, 1 => Just(Value::Null)].boxed()
    }

    /// A body of `message` as the schema describes it: a random subset of its fields, each
    /// under its proto or its JSON name, with values of its kind and shape.
    fn generated_body(message: MessageId, depth: u32) -> BoxedStrategy<Value> {
        let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema()
            .message(message)
            .fields
            .iter()
            .map(|f| {
                let name = proptest::sample::select(vec![f.proto.clone(), f.json.clone()]);
                let value = match f.shape {
                    Shape::Single => generated_value(f.kind, depth),
                    Shape::Repeated => {
                        proptest::collection::vec(generated_value(f.kind, depth), 0..3)
                            .prop_map(Value::Array)
                            .boxed()
                    }
                    Shape::Map => generated_value(f.kind, depth)
                        .prop_map(|v| serde_json::json!({"k": v, "firstName": 1}))
                        .boxed(),
                };
                proptest::option::weighted(0.4, (name, value)).boxed()
            })
            .collect();
        fields
            .prop_map(|entries| Value::Object(entries.into_iter().flatten().collect()))
            .boxed()
    }

    /// An operation that takes a body and a body generated from its message.
    fn operation_and_body() -> impl Strategy<Value = (crate::domain::Operation, MessageId, Value)> {
        let with_bodies: Vec<_> = crate::domain::Operation::ALL
            .iter()
            .flat_map(|&op| {
                schema()
                    .definitions(op)
                    .filter_map(move |d| d.body_message().map(|m| (op, m)))
            })
            .collect();
        proptest::sample::select(with_bodies)
            .prop_flat_map(|(op, m)| generated_body(m, 3).prop_map(move |body| (op, m, body)))
    }

    proptest::proptest! {
        // 256 cases, or `PROPTEST_CASES` for a longer run.

        /// Bodies generated from the schema, for every operation that takes one: the facts read
        /// as its body message lead every rule to the decision the whole body does.
        #[test]
        fn rules_decide_the_same_on_generated_bodies((op, message, body) in operation_and_body()) {
            let text = serde_json::to_vec(&body).expect("serialise");
            // Every generated body has one reading (exact names and enum names, one spelling
            // per key, aliases only among map and Struct keys): none may be refused.
            let facts = super::read_fields(&text, true, Some(message));
            proptest::prop_assert!(facts.is_ok(), "{:?}: {}", facts.err(), body);
            let facts = facts.expect("read");
            let found = first_disagreement(op, &body, &[&facts]);
            proptest::prop_assert!(found.is_none(), "{}\nbody: {}", found.unwrap_or_default(), body);
        }
    }
}
