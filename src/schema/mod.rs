//! One model of the API: its operations and request messages, as data.
//!
//! `operations.toml` and `messages.toml` (beside this file, embedded at build time) are the only
//! place a route, a field name, a field type or an enum value is written. They are read once
//! into a [`Schema`]; the classifier ([`route`]), the canonical readers of the query
//! ([`query`]) and of the body (`proxy::json`), and the rules' declared fields all read it. A
//! field's JSON name is derived from its proto name, lowerCamelCase, as protoc derives it.

use std::collections::HashMap;
use std::sync::OnceLock;

use http::Method;
use serde::Deserialize;

use crate::domain::Operation;

pub mod mask;
pub mod query;
pub mod route;

/// The API a listener serves (an operation belongs to one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `{region}.conversation.api.sinch.com`.
    Conversation,
    /// `{region}.conversationbatch.api.sinch.com`.
    Batch,
}

/// Index of a message in the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageId(u16);

impl MessageId {
    /// The dense index, for per-message tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Index of an enum in the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnumId(u16);

/// What a field holds (one value of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    String,
    /// An integer (a JSON number or a numeric string).
    Int,
    /// A bool.
    Bool,
    /// A `google.protobuf.FieldMask` (`a,b` in a query).
    Mask,
    /// A `google.protobuf.Struct`: its keys are data.
    Struct,
    /// A message the schema does not model: read conservatively.
    Any,
    /// One of an enum's names.
    Enum(EnumId),
    /// A message of the schema.
    Message(MessageId),
}

/// How many values a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One.
    Single,
    /// A list.
    Repeated,
    /// A map from string keys (data, not field names) to values.
    Map,
}

/// A field of a message.
#[derive(Clone, Debug)]
pub struct Field {
    /// The proto name (`contact_id`).
    pub proto: String,
    /// The JSON name (`contactId`).
    pub json: String,
    /// The name with case, `_` and `-` folded away: what a lenient reader would match.
    pub loose: String,
    /// What one value is.
    pub kind: Kind,
    /// How many values.
    pub shape: Shape,
}

impl Field {
    /// Whether `key` names this field exactly, under its proto or its JSON name.
    pub fn named(&self, key: &str) -> bool {
        key == self.proto || key == self.json
    }
}

/// A message: its fields.
#[derive(Clone, Debug)]
pub struct Message {
    /// The message's name in the schema.
    pub name: String,
    /// Its fields, in schema order.
    pub fields: Vec<Field>,
    /// The fields by name: an open-addressed table of `(signature, field index)` over both
    /// names of every field (index `u16::MAX` marks a free slot), sized to a power of two at
    /// least four times the names.
    by_name: Vec<(u64, u16)>,
}

/// A name's length and first seven bytes in one word: equal names have equal signatures, and
/// names of up to seven bytes are equal exactly when their signatures are.
fn signature(name: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = name.len().min(7);
    word[..n].copy_from_slice(&name[..n]);
    word[7] = name.len().min(255) as u8;
    u64::from_le_bytes(word)
}

/// The slot a signature's probe starts at in a table of `len` slots (a power of two).
fn slot(sig: u64, len: usize) -> usize {
    // Fibonacci hashing: the high bits of the product mix every byte of the signature.
    (sig.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (len - 1)
}

/// The name table of [`Message::by_name`] for `fields`.
fn name_table(fields: &[Field]) -> Vec<(u64, u16)> {
    let len = (fields.len() * 8).max(8).next_power_of_two();
    let mut table = vec![(0, u16::MAX); len];
    for (i, f) in fields.iter().enumerate() {
        for name in [&f.proto, &f.json] {
            let sig = signature(name.as_bytes());
            let mut s = slot(sig, len);
            while table[s].1 != u16::MAX {
                if table[s].0 == sig && fields[usize::from(table[s].1)].named(name) {
                    break; // A JSON name equal to the proto name: one entry.
                }
                s = (s + 1) & (len - 1);
            }
            table[s] = (sig, i as u16);
        }
    }
    table
}

impl Message {
    /// The field `key` names exactly (proto or JSON name).
    pub fn field(&self, key: &str) -> Option<(usize, &Field)> {
        // This runs for every key of every object of a body: a probe of the name table, the
        // bytes compared only past the seventh and only for the name found.
        let k = key.as_bytes();
        let sig = signature(k);
        let len = self.by_name.len();
        let mut s = slot(sig, len);
        loop {
            let (candidate, index) = self.by_name[s];
            if index == u16::MAX {
                return None;
            }
            if candidate == sig {
                let f = &self.fields[usize::from(index)];
                if k.len() <= 7 || f.named(key) {
                    return Some((usize::from(index), f));
                }
            }
            s = (s + 1) & (len - 1);
        }
    }

    /// The field a lenient reader could take `key` for, when `key` does not name it exactly.
    pub fn loosely(&self, key: &str) -> Option<&Field> {
        let folded = loose(key);
        self.fields
            .iter()
            .find(|f| f.loose == folded && !f.named(key))
    }
}

/// An enum: its names, the first being its proto3 zero value.
#[derive(Clone, Debug)]
pub struct EnumDef {
    /// The enum's name in the schema.
    pub name: String,
    /// Its value names, in number order.
    pub values: Vec<String>,
}

/// Where an operation's non-path fields come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyBinding {
    /// No body: every other field comes from the query.
    None,
    /// `body: "*"`: every other field (but the declared query fields) comes from the body.
    All,
    /// `body: "<field>"`: that field's message is the body (index into the request's fields).
    Field(usize),
}

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A literal (`messages`).
    Literal(String),
    /// `{name}`: one segment binds the field `name`.
    Var(String),
    /// `{name=**}`: the rest of the path binds `name`.
    Rest(String),
}

/// An operation of the API.
#[derive(Clone, Debug)]
pub struct OperationDef {
    /// The operation.
    pub op: Operation,
    /// The API it belongs to.
    pub api: Api,
    /// Its method.
    pub method: Method,
    /// Its path template's segments.
    pub segments: Vec<Segment>,
    /// Its custom verb (`send` of `messages:send`).
    pub verb: Option<String>,
    /// Its request message.
    pub request: MessageId,
    /// Where its fields come from.
    pub body: BodyBinding,
    /// Fields bound to the query although the body binding is `*`.
    pub query_fields: Vec<String>,
}

/// Where a field of an operation's request is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A path variable.
    Path,
    /// The query.
    Query,
    /// The JSON body.
    Body,
}

impl OperationDef {
    /// Where the request's top-level field `index` is read from.
    pub fn binding(&self, index: usize) -> Binding {
        let s = schema();
        let field = &s.message(self.request).fields[index];
        let in_path = self.segments.iter().any(|seg| match seg {
            Segment::Var(n) | Segment::Rest(n) => *n == field.proto,
            Segment::Literal(_) => false,
        });
        if in_path {
            return Binding::Path;
        }
        match self.body {
            BodyBinding::None => Binding::Query,
            BodyBinding::Field(b) if b == index => Binding::Body,
            BodyBinding::Field(_) => Binding::Query,
            BodyBinding::All if self.query_fields.contains(&field.proto) => Binding::Query,
            BodyBinding::All => Binding::Body,
        }
    }

    /// Whether the operation takes a body.
    pub fn takes_body(&self) -> bool {
        self.body != BodyBinding::None
    }

    /// The message the JSON body holds.
    pub fn body_message(&self) -> Option<MessageId> {
        match self.body {
            BodyBinding::None => None,
            BodyBinding::All => Some(self.request),
            BodyBinding::Field(i) => match schema().message(self.request).fields[i].kind {
                Kind::Message(m) => Some(m),
                _ => None,
            },
        }
    }
}

/// The whole model.
#[derive(Debug)]
pub struct Schema {
    /// Every operation, in file order.
    pub operations: Vec<OperationDef>,
    messages: Vec<Message>,
    enums: Vec<EnumDef>,
    routes: route::Routes,
}

impl Schema {
    /// How many messages the schema has (`MessageId::index` is below it).
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// Every message, in [`MessageId::index`] order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The message `id`.
    pub fn message(&self, id: MessageId) -> &Message {
        &self.messages[usize::from(id.0)]
    }

    /// The enum `id`.
    pub fn enumeration(&self, id: EnumId) -> &EnumDef {
        &self.enums[usize::from(id.0)]
    }

    /// The message named `name`.
    pub fn message_named(&self, name: &str) -> Option<MessageId> {
        self.messages
            .iter()
            .position(|m| m.name == name)
            .map(|i| MessageId(i as u16))
    }

    /// The definitions of `op` (one per method it takes), on any API.
    pub fn definitions(&self, op: Operation) -> impl Iterator<Item = &OperationDef> {
        self.operations.iter().filter(move |d| d.op == op)
    }

    /// The definition of `op` for `method`.
    pub fn definition(&self, op: Operation, method: &Method) -> Option<&OperationDef> {
        self.definitions(op).find(|d| d.method == method)
    }

    /// The path router.
    pub fn routes(&self) -> &route::Routes {
        &self.routes
    }

    /// Resolves a dotted field path (proto names) from `message`: every field on the way.
    pub fn resolve(&self, message: MessageId, path: &str) -> Option<Vec<&Field>> {
        let mut out = Vec::new();
        let mut current = Some(message);
        for part in path.split('.') {
            let (_, field) = self.message(current?).field(part)?;
            current = match field.kind {
                Kind::Message(m) => Some(m),
                _ => None,
            };
            out.push(field);
        }
        Some(out)
    }
}

/// The name with ASCII case, `_` and `-` folded away.
pub fn loose(name: &str) -> String {
    name.bytes()
        .filter(|b| *b != b'_' && *b != b'-')
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

/// The lowerCamelCase JSON name of a proto name (`ttl_days` → `ttlDays`).
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
pub fn proto_spelling(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(key);
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
    std::borrow::Cow::Owned(out)
}

/// The schema, read once from the embedded files.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        load(
            include_str!("operations.toml"),
            include_str!("messages.toml"),
        )
        .unwrap_or_else(|e| panic!("the embedded API schema is invalid: {e}"))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperations {
    operations: Vec<RawOperation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    op: String,
    api: Api,
    method: String,
    path: String,
    request: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    query: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessages {
    enums: toml::Table,
    messages: toml::Table,
}

/// Reads the schema files; every reference must resolve.
pub fn load(operations: &str, messages: &str) -> Result<Schema, String> {
    let raw_ops: RawOperations =
        toml::from_str(operations).map_err(|e| format!("operations.toml: {e}"))?;
    let raw_msgs: RawMessages =
        toml::from_str(messages).map_err(|e| format!("messages.toml: {e}"))?;
    let mut enums = Vec::new();
    for (name, values) in &raw_msgs.enums {
        let values = values
            .as_array()
            .ok_or_else(|| format!("enum {name}: expected a list of names"))?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("enum {name}: names are strings"))?;
        enums.push(EnumDef {
            name: name.clone(),
            values,
        });
    }
    let enum_index: HashMap<&str, u16> = enums
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i as u16))
        .collect();
    let message_index: HashMap<&str, u16> = raw_msgs
        .messages
        .keys()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i as u16))
        .collect();
    let mut messages = Vec::new();
    for (name, fields) in &raw_msgs.messages {
        let table = fields
            .as_table()
            .ok_or_else(|| format!("message {name}: expected a table of fields"))?;
        let mut out = Vec::new();
        for (proto, spec) in table {
            let spec = spec
                .as_str()
                .ok_or_else(|| format!("{name}.{proto}: the type is a string"))?;
            let (kind, shape) = parse_type(spec, &enum_index, &message_index)
                .map_err(|e| format!("{name}.{proto}: {e}"))?;
            out.push(Field {
                proto: proto.clone(),
                json: json_name(proto),
                loose: loose(proto),
                kind,
                shape,
            });
        }
        messages.push(Message {
            name: name.clone(),
            by_name: name_table(&out),
            fields: out,
        });
    }
    let mut defs = Vec::new();
    for raw in raw_ops.operations {
        let op = Operation::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == raw.op)
            .ok_or_else(|| format!("operation {}: no such operation", raw.op))?;
        let method = Method::from_bytes(raw.method.as_bytes())
            .map_err(|_| format!("{}: bad method {}", raw.op, raw.method))?;
        let request = message_index
            .get(raw.request.as_str())
            .map(|i| MessageId(*i))
            .ok_or_else(|| format!("{}: no message {}", raw.op, raw.request))?;
        let (segments, verb) = route::parse_template(&raw.path)
            .map_err(|e| format!("{} {}: {e}", raw.op, raw.path))?;
        let fields = &messages[usize::from(request.0)].fields;
        for seg in &segments {
            if let Segment::Var(n) | Segment::Rest(n) = seg {
                if !fields.iter().any(|f| f.proto == *n) {
                    return Err(format!(
                        "{}: path binds {n}, not a field of {}",
                        raw.op, raw.request
                    ));
                }
            }
        }
        let body = match raw.body.as_deref() {
            None => BodyBinding::None,
            Some("*") => BodyBinding::All,
            Some(field) => BodyBinding::Field(
                fields
                    .iter()
                    .position(|f| {
                        f.proto == field && matches!(f.kind, Kind::Message(_) | Kind::Any)
                    })
                    .ok_or_else(|| format!("{}: body {field} is not a message field", raw.op))?,
            ),
        };
        for q in &raw.query {
            if !fields.iter().any(|f| f.proto == *q) {
                return Err(format!("{}: query field {q} is not a field", raw.op));
            }
        }
        defs.push(OperationDef {
            op,
            api: raw.api,
            method,
            segments,
            verb,
            request,
            body,
            query_fields: raw.query,
        });
    }
    let routes = route::Routes::new(&defs);
    Ok(Schema {
        operations: defs,
        messages,
        enums,
        routes,
    })
}

fn parse_type(
    spec: &str,
    enums: &HashMap<&str, u16>,
    messages: &HashMap<&str, u16>,
) -> Result<(Kind, Shape), String> {
    let (shape, rest) = if let Some(r) = spec.strip_prefix("repeated ") {
        (Shape::Repeated, r)
    } else if let Some(r) = spec.strip_prefix("map ") {
        (Shape::Map, r)
    } else {
        (Shape::Single, spec)
    };
    let kind = match rest {
        "string" => Kind::String,
        "int" => Kind::Int,
        "bool" => Kind::Bool,
        "mask" => Kind::Mask,
        "struct" => Kind::Struct,
        "any" => Kind::Any,
        other => {
            if let Some(name) = other.strip_prefix("enum ") {
                Kind::Enum(EnumId(
                    *enums.get(name).ok_or_else(|| format!("no enum {name}"))?,
                ))
            } else {
                Kind::Message(MessageId(
                    *messages
                        .get(other)
                        .ok_or_else(|| format!("no message {other}"))?,
                ))
            }
        }
    };
    Ok((kind, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schema_loads_and_names_every_operation() {
        let s = schema();
        for op in Operation::ALL {
            let known = s.definitions(*op).next().is_some();
            let special = matches!(
                op,
                Operation::Other | Operation::OauthToken | Operation::Callback
            );
            assert_eq!(known, !special, "{}", op.as_str());
        }
    }

    /// Every key, against every message: the signature lookup finds exactly the field a plain
    /// comparison of names finds.
    #[test]
    fn field_lookup_matches_a_plain_comparison_of_names() {
        let s = schema();
        let mut keys: Vec<String> = Vec::new();
        for m in &s.messages {
            for f in &m.fields {
                for name in [&f.proto, &f.json] {
                    keys.push(name.clone());
                    // Same length and first seven bytes, another ending; one byte more or less.
                    let mut other = name.clone().into_bytes();
                    if let Some(last) = other.last_mut() {
                        *last = if *last == b'x' { b'y' } else { b'x' };
                    }
                    keys.push(String::from_utf8(other).expect("ascii"));
                    keys.push(format!("{name}_"));
                    keys.push(name[..name.len() - 1].to_string());
                }
            }
        }
        keys.extend(["", "a", "\u{e9}t\u{e9}", "0123456789abcdef"].map(String::from));
        for m in &s.messages {
            for key in &keys {
                let plain = m.fields.iter().position(|f| f.named(key));
                assert_eq!(m.field(key).map(|(i, _)| i), plain, "{}: {key:?}", m.name);
            }
        }
    }

    #[test]
    fn json_names_and_loose_names_are_derived() {
        assert_eq!(
            json_name("dispatch_retention_policy"),
            "dispatchRetentionPolicy"
        );
        assert_eq!(loose("Contact_ID"), "contactid");
        let s = schema();
        let send = s.message_named("SendMessageRequest").expect("send");
        let m = s.message(send);
        assert_eq!(
            m.field("appId").map(|(_, f)| f.proto.as_str()),
            Some("app_id")
        );
        assert_eq!(
            m.loosely("APP_ID").map(|f| f.proto.as_str()),
            Some("app_id")
        );
        assert!(m.loosely("app_id").is_none());
        assert!(s.resolve(send, "recipient.contact_id").is_some());
        assert!(s.resolve(send, "recipient.nothing").is_none());
    }

    #[test]
    fn bindings_follow_the_body_declaration() {
        let s = schema();
        let send = s
            .definition(Operation::SendMessage, &Method::POST)
            .expect("send");
        let m = s.message(send.request);
        let idx = |name: &str| m.field(name).expect(name).0;
        assert_eq!(send.binding(idx("project_id")), Binding::Path);
        assert_eq!(send.binding(idx("recipient")), Binding::Body);
        let update = s
            .definition(Operation::UpdateMessage, &Method::PATCH)
            .expect("update");
        let m = s.message(update.request);
        assert_eq!(
            update.binding(m.field("messages_source").expect("ms").0),
            Binding::Query
        );
        let app = s
            .definition(Operation::UpdateApp, &Method::PATCH)
            .expect("update app");
        let m = s.message(app.request);
        assert_eq!(app.binding(m.field("app").expect("app").0), Binding::Body);
        assert_eq!(
            app.binding(m.field("update_mask").expect("mask").0),
            Binding::Query
        );
    }

    #[test]
    fn broken_schemas_are_refused_with_the_reason() {
        let msgs = "[enums]\n[messages.R]\nproject_id = \"string\"\nx = \"Nope\"\n";
        let ops = "operations = []";
        assert!(load(ops, msgs)
            .expect_err("bad")
            .contains("no message Nope"));
        let msgs = "[enums]\n[messages.R]\nproject_id = \"string\"\n";
        let ops = r#"operations = [{ op = "list_apps", api = "conversation", method = "GET", path = "/v1/projects/{project_id}/apps/{app_id}", request = "R" }]"#;
        assert!(load(ops, msgs).expect_err("bad").contains("app_id"));
    }
}
