//! The query of a known operation, read as the API's transcoder reads it, and refused where
//! that reading differs from the gateway's.
//!
//! An HTTP → gRPC transcoder (Envoy's, ESPv2's, grpc-gateway's) turns every `a.b=v` query
//! parameter into the field `a.b` of the request message, whatever the body binding, wherever
//! the body leaves it unset. So a parameter naming a field the operation reads from the body or
//! the path has two readings, and is refused; so is an enum given as anything but one of its
//! exact names, a single-valued field given twice, and — on operations a rule reads —
//! a name that is not exactly a field's but that a lenient reader could take for one. Query
//! parameters the schema does not know are forwarded untouched (`_method`, which some front
//! ends read as the method, is refused for every request by the admit phase).

use super::{schema, Binding, EnumDef, Field, Kind, OperationDef, Shape};

/// How a value reads as an enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumReading {
    /// Exactly one of its names.
    Exact,
    /// A number or a numeric string (`1`, `"01"`, `"+1"`, `" 1"`): some parsers take it as
    /// the value with that number.
    Number,
    /// A case or format variant of a name (`dispatch_only`, `DISPATCH-ONLY`).
    Variant,
    /// Not a name this schema knows (the API may have added one).
    Unknown,
}

/// Reads `value` as a name of `e`.
pub fn read_enum(e: &EnumDef, value: &str) -> EnumReading {
    if e.values.iter().any(|v| v == value) {
        return EnumReading::Exact;
    }
    let trimmed = value.trim();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        || trimmed.parse::<f64>().is_ok()
    {
        return EnumReading::Number;
    }
    let folded: String = trimmed
        .chars()
        .map(|c| match c {
            '-' | ' ' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    if e.values.contains(&folded) {
        return EnumReading::Variant;
    }
    EnumReading::Unknown
}

/// The refusal message for an enum value that is not one of its names.
pub fn enum_problem(path: &str, e: &EnumDef, reading: EnumReading) -> String {
    let names = e.values.join(", ");
    match reading {
        EnumReading::Number => format!(
            "{path}: give the enum by name ({names}), not as a number: parsers disagree on numbers"
        ),
        EnumReading::Variant => format!(
            "{path}: give the enum exactly as one of its names ({names}); a case or format variant has two readings"
        ),
        EnumReading::Exact | EnumReading::Unknown => {
            format!("{path}: not one of {names}; send one of them")
        }
    }
}

/// What the query reader needs to know of the rules.
pub trait RuleReads {
    /// Whether a rule reads the request field at this dotted proto path.
    fn reads(&self, path: &str) -> bool;
    /// Whether any rule applies to the operation (lenient spellings are refused there).
    fn any(&self) -> bool;
}

/// Checks the query of `def`; the first problem is returned as a client-facing message.
pub fn check(def: &OperationDef, raw: Option<&str>, rules: &dyn RuleReads) -> Option<String> {
    let raw = raw.filter(|q| !q.is_empty())?;
    let s = schema();
    let request = s.message(def.request);
    let mut counts = [0u8; 64];
    // Occurrences of a field mask as repeated `.paths` and as one string.
    let mut mask_forms = [0u32; 2];
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let mut path = key.split('.');
        let first = path.next().unwrap_or("");
        let Some((index, field)) = request.field(first) else {
            if let Some(problem) = lenient_name(def, first, &key, rules) {
                return Some(problem);
            }
            continue;
        };
        match def.binding(index) {
            Binding::Path => {
                return Some(format!(
                    "{key}: {} is taken from the path; do not repeat it in the query",
                    field.proto
                ))
            }
            Binding::Body => {
                return Some(format!(
                    "{key}: {} is read from the JSON body of {}; a front end would also read it from the query, so send it in the body only",
                    field.proto,
                    def.op.as_str()
                ))
            }
            Binding::Query => {}
        }
        let rest: Vec<&str> = path.collect();
        if field.kind == Kind::Mask {
            // `update_mask=a,b` once, or the repeated `update_mask.paths=a`: not both, and
            // the single-string form once (parsers differ on which of two they keep).
            let plain = match rest.as_slice() {
                [] => true,
                ["paths"] => false,
                _ => {
                    return Some(format!(
                        "{key}: a field mask is given as {}=a,b",
                        field.proto
                    ))
                }
            };
            mask_forms[usize::from(plain)] += 1;
            if mask_forms[1] > 1 || (mask_forms[0] > 0 && mask_forms[1] > 0) {
                return Some(format!(
                    "{}: given more than once, so parsers may read different masks; send it once, as {}=a,b",
                    field.proto, field.proto
                ));
            }
            continue;
        }
        let Some(leaf) = nested(field, &rest) else {
            continue;
        };
        if let Some(slot) = counts.get_mut(index) {
            *slot = slot.saturating_add(1);
            if *slot > 1 && leaf.shape == Shape::Single && rest.is_empty() {
                return Some(format!(
                    "{}: given more than once (as {} or {}), so parsers may read different values; send it once",
                    field.proto, field.proto, field.json
                ));
            }
        }
        if let Kind::Enum(id) = leaf.kind {
            let e = s.enumeration(id);
            let reading = read_enum(e, &value);
            let dotted = dotted(field, &rest);
            let refused = match reading {
                EnumReading::Exact => false,
                EnumReading::Number | EnumReading::Variant => true,
                // An empty value is the parameter left unset.
                EnumReading::Unknown => !value.is_empty() && rules.reads(&dotted),
            };
            if refused {
                return Some(enum_problem(&dotted, e, reading));
            }
        }
    }
    None
}

/// The field at `rest` below `field`, if the schema has it.
fn nested<'a>(field: &'a Field, rest: &[&str]) -> Option<&'a Field> {
    let s = schema();
    let mut current = field;
    for part in rest {
        let Kind::Message(m) = current.kind else {
            return None;
        };
        current = s.message(m).field(part)?.1;
    }
    Some(current)
}

fn dotted(field: &Field, rest: &[&str]) -> String {
    let mut out = field.proto.clone();
    for r in rest {
        out.push('.');
        out.push_str(r);
    }
    out
}

/// A parameter that names no field exactly: refused where a lenient reader could take it for
/// one (a case or separator variant, or a field of a named body given without its prefix).
fn lenient_name(
    def: &OperationDef,
    first: &str,
    key: &str,
    rules: &dyn RuleReads,
) -> Option<String> {
    let s = schema();
    let request = s.message(def.request);
    if let Some(field) = request.loosely(first).filter(|_| rules.any()) {
        return Some(format!(
            "{key}: not a parameter name, but a lenient reader could take it for {}; send {} (or {}) exactly",
            field.proto, field.proto, field.json
        ));
    }
    let body = def.body_message()?;
    if def.body == super::BodyBinding::All {
        return None;
    }
    let message = s.message(body);
    let field = message
        .field(first)
        .map(|(_, f)| f)
        .or_else(|| message.loosely(first))?;
    Some(format!(
        "{key}: {} is a field of the JSON body; a front end could read it from the query too, so send it in the body only",
        field.proto
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Operation;
    use http::Method;

    struct Reads(&'static [&'static str]);
    impl RuleReads for Reads {
        fn reads(&self, path: &str) -> bool {
            self.0.contains(&path)
        }
        fn any(&self) -> bool {
            !self.0.is_empty()
        }
    }

    fn check_op(op: Operation, method: Method, q: &str) -> Option<String> {
        let def = schema().definition(op, &method).expect("def");
        check(def, Some(q), &Reads(&["messages_source", "contact_id"]))
    }

    #[test]
    fn enum_readings() {
        let s = schema();
        let e = s
            .operations
            .iter()
            .find(|d| d.op == Operation::ListMessages)
            .map(|d| s.message(d.request))
            .and_then(|m| m.field("messages_source"))
            .map(|(_, f)| f.kind)
            .and_then(|k| match k {
                Kind::Enum(id) => Some(s.enumeration(id)),
                _ => None,
            })
            .expect("enum");
        assert_eq!(read_enum(e, "DISPATCH_SOURCE"), EnumReading::Exact);
        for n in ["1", "01", "+1", " 1", "-1", "1.0", "1e0"] {
            assert_eq!(read_enum(e, n), EnumReading::Number, "{n}");
        }
        for v in ["dispatch_source", "DISPATCH-SOURCE", " DISPATCH_SOURCE"] {
            assert_eq!(read_enum(e, v), EnumReading::Variant, "{v}");
        }
        assert_eq!(read_enum(e, "NEW_SOURCE"), EnumReading::Unknown);
    }

    #[test]
    fn body_fields_in_the_query_are_refused() {
        for q in [
            "recipient.contact_id=K1",
            "recipient.contactId=K1",
            "app_id=D",
            "appId=D",
            "processing_strategy=DISPATCH_ONLY",
            "project_id=p",
        ] {
            assert!(
                check_op(Operation::SendMessage, Method::POST, q).is_some(),
                "{q}"
            );
        }
        assert!(check_op(Operation::SendMessage, Method::POST, "trace=1").is_none());
        for q in [
            "app.retention_policy.ttl_days=5000",
            "dispatch_retention_policy.ttl_days=30",
            "retentionPolicy.ttlDays=1",
        ] {
            assert!(
                check_op(Operation::CreateApp, Method::POST, q).is_some(),
                "{q}"
            );
        }
        assert!(check_op(Operation::UpdateApp, Method::PATCH, "update_mask=a,b").is_none());
        assert!(check_op(Operation::UpdateApp, Method::PATCH, "update_mask.paths=a").is_none());
        assert!(check_op(
            Operation::UpdateApp,
            Method::PATCH,
            "update_mask.paths=a&update_mask.paths=b"
        )
        .is_none());
        for twice in [
            "update_mask=a&update_mask=b",
            "update_mask=a&updateMask=b",
            "update_mask=a&update_mask.paths=b",
        ] {
            assert!(
                check_op(Operation::UpdateApp, Method::PATCH, twice).is_some(),
                "{twice}"
            );
        }
    }

    #[test]
    fn query_fields_are_checked_by_type() {
        let list = |q| check_op(Operation::ListMessages, Method::GET, q);
        assert!(list("messages_source=DISPATCH_SOURCE&page_size=5").is_none());
        assert!(list("messages_source=1").is_some());
        assert!(list("messages_source=%2B1").is_some());
        assert!(list("messages_source=dispatch_source").is_some());
        assert!(list("messages_source=NEW").is_some(), "a rule reads it");
        assert!(list("view=NEW").is_none(), "no rule reads it");
        assert!(list("view=1").is_some());
        assert!(list("app_id=a&appId=b").is_some());
        assert!(list("Contact_ID=K").is_some());
        assert!(list("unknown_param=1").is_none());
        assert!(list("messages_source=").is_none());
        let get = |q| check_op(Operation::GetMessage, Method::GET, q);
        assert!(get("messages_source=CONVERSATION_SOURCE").is_none());
        let update = |q| check_op(Operation::UpdateMessage, Method::PATCH, q);
        assert!(update("messages_source=CONVERSATION_SOURCE").is_none());
        assert!(update("metadata=x").is_some());
    }
}
