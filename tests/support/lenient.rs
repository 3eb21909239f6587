//! What a lenient upstream makes of a request the gateway forwarded, written independently of
//! the gateway: full percent-decoding of the path (`%2F` too), dot segments and empty segments
//! resolved, path literals in any case, a verb written as a segment, proto and lowerCamelCase
//! names, every duplicate considered, query parameters woven into the body (a transcoder's
//! `a.b=v` binding, with and without a named body's prefix), enums as numbers and numeric
//! strings, a body on a GET read too, `update_mask` fields the body omits stored as zero, the
//! form fallback of a POST to a GET route, and method overrides (`_method`, headers).
//! [`violation`] says which DISPATCH rule the request breaks for the DISPATCH app `d-app`, or
//! what it leaves ambiguous.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Seen;

/// The DISPATCH app of the attack fixtures.
pub const DISPATCH_APP: &str = "d-app";

/// The fixtures' upstream answer for `path`: `d-app` is DISPATCH, `c-app` CONVERSATION,
/// anything else `{}`.
pub fn fixture_answer(path: &str) -> &'static str {
    if path.ends_with("/apps/d-app") {
        r#"{"id":"d-app","processing_mode":"DISPATCH"}"#
    } else if path.ends_with("/apps/c-app") {
        r#"{"id":"c-app","processing_mode":"CONVERSATION"}"#
    } else {
        "{}"
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b'+' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A key in its proto spelling (`contactId` → `contact_id`).
pub fn snake(k: &str) -> String {
    let mut o = String::new();
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            o.push('_');
            o.push(c.to_ascii_lowercase());
        } else {
            o.push(c);
        }
    }
    o
}

/// Every value of every query parameter, by proto name.
fn params(raw: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        out.entry(snake(&k)).or_default().push(v.into_owned());
    }
    out
}

/// Every value a key may take in a JSON text (any duplicate), keys in proto spelling, found by
/// walking the raw text with a small parser that keeps duplicates.
#[derive(Debug, Clone)]
enum J {
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    Leaf(Value),
}

fn to_j(v: &Value) -> J {
    match v {
        Value::Object(m) => J::Obj(m.iter().map(|(k, v)| (snake(k), to_j(v))).collect()),
        Value::Array(a) => J::Arr(a.iter().map(to_j).collect()),
        other => J::Leaf(other.clone()),
    }
}

/// Parses JSON keeping duplicate keys (as serde_json's stream deserializer cannot, this
/// re-reads objects with a visitor that collects every pair).
fn parse_all(bytes: &[u8]) -> Option<J> {
    struct All(J);
    impl<'de> serde::Deserialize<'de> for All {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = J;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("json")
                }
                fn visit_bool<E>(self, v: bool) -> Result<J, E> {
                    Ok(J::Leaf(Value::Bool(v)))
                }
                fn visit_i64<E>(self, v: i64) -> Result<J, E> {
                    Ok(J::Leaf(Value::from(v)))
                }
                fn visit_u64<E>(self, v: u64) -> Result<J, E> {
                    Ok(J::Leaf(Value::from(v)))
                }
                fn visit_f64<E>(self, v: f64) -> Result<J, E> {
                    Ok(J::Leaf(Value::from(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<J, E> {
                    Ok(J::Leaf(Value::from(v)))
                }
                fn visit_unit<E>(self) -> Result<J, E> {
                    Ok(J::Leaf(Value::Null))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<J, A::Error> {
                    let mut v = Vec::new();
                    while let Some(All(x)) = s.next_element()? {
                        v.push(x);
                    }
                    Ok(J::Arr(v))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<J, A::Error> {
                    let mut v = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        let All(x) = m.next_value()?;
                        v.push((snake(&k), x));
                    }
                    Ok(J::Obj(v))
                }
            }
            d.deserialize_any(V).map(All)
        }
    }
    serde_json::from_slice::<All>(bytes).ok().map(|a| a.0)
}

impl J {
    /// Every value of `key` in this object (all duplicates).
    fn all<'a>(&'a self, key: &str) -> Vec<&'a J> {
        match self {
            J::Obj(pairs) => pairs
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn texts(&self, key: &str) -> Vec<String> {
        self.all(key)
            .into_iter()
            .filter_map(|v| match v {
                J::Leaf(Value::String(s)) => Some(s.clone()),
                J::Leaf(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .collect()
    }

    fn has_duplicates(&self) -> bool {
        // Keys of map and Struct fields are data: `orderId` and `order_id` are two keys there.
        const DATA: [&str; 7] = [
            "conversation_metadata",
            "parameters",
            "channel_properties",
            "batch_metadata",
            "message_metadata",
            "metadata_json",
            "channel_template",
        ];
        match self {
            J::Obj(pairs) => {
                let mut keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
                keys.sort();
                let n = keys.len();
                keys.dedup();
                keys.len() != n
                    || pairs
                        .iter()
                        .any(|(k, v)| !DATA.contains(&k.as_str()) && v.has_duplicates())
            }
            J::Arr(items) => items.iter().any(J::has_duplicates),
            J::Leaf(_) => false,
        }
    }
}

/// Whether `s` is, to a lenient enum parser, the value `name` (number `number`).
fn enum_number(s: &str, name: &str, number: i64) -> bool {
    let t = s.trim();
    t.trim_start_matches('+').parse::<f64>().ok() == Some(number as f64)
        || t.to_ascii_uppercase().replace(['-', ' ', '.'], "_") == name
}

/// Adds `value` at the dotted `path` of an object (every reading is kept, as duplicates are).
fn weave(node: &mut J, path: &str, value: &str) {
    let J::Obj(pairs) = node else {
        return;
    };
    match path.split_once('.') {
        None => pairs.push((snake(path), J::Leaf(Value::from(value)))),
        Some((head, rest)) => {
            let head = snake(head);
            if !pairs
                .iter()
                .any(|(k, v)| *k == head && matches!(v, J::Obj(_)))
            {
                pairs.push((head.clone(), J::Obj(Vec::new())));
            }
            for (k, v) in pairs.iter_mut().filter(|(k, _)| *k == head) {
                let _ = k;
                weave(v, rest, value);
            }
        }
    }
}

/// `update_mask`: a masked field the body omits or nulls is stored as its zero value.
fn apply_mask(body: &mut J, query: &BTreeMap<String, Vec<String>>) {
    let masked: Vec<String> = ["update_mask", "update_mask.paths"]
        .iter()
        .filter_map(|k| query.get(*k))
        .flatten()
        .flat_map(|v| v.split(',').map(|p| snake(p.trim())).collect::<Vec<_>>())
        .collect();
    for path in masked {
        let path = path.strip_prefix("app.").unwrap_or(&path).to_string();
        let policy = path.split('.').next().unwrap_or("").to_string();
        if !policy.ends_with("retention_policy") || !(path == policy || path.ends_with(".ttl_days"))
        {
            continue;
        }
        // A masked policy is replaced whole: a ttl_days it does not give is stored as 0.
        let given = body.all(&policy).into_iter().any(|p| {
            p.all("ttl_days")
                .into_iter()
                .any(|v| !matches!(v, J::Leaf(Value::Null)))
        });
        if !given {
            weave(body, &format!("{policy}.ttl_days"), "0");
        }
    }
}

fn ttl_out_of_range(policy: &J, lo: i64, hi: i64) -> bool {
    policy.all("ttl_days").into_iter().any(|v| match v {
        J::Leaf(Value::Number(n)) => n.as_f64().is_some_and(|d| d < lo as f64 || d > hi as f64),
        J::Leaf(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_or(true, |d| d < lo as f64 || d > hi as f64),
        _ => false,
    })
}

/// What a lenient upstream would find wrong with a forwarded request for `d-app`, or `None`.
pub fn violation(seen: &Seen) -> Option<String> {
    let path = seen.uri.path();
    if path.starts_with("/v1/projects/")
        && (path.contains('%')
            || path.contains("//")
            || path.ends_with('/')
            || path.split('/').any(|s| s == "." || s == ".."))
    {
        return Some(format!("non-canonical path forwarded: {path}"));
    }
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        if seen.headers.contains_key(h) {
            return Some(format!("{h} forwarded"));
        }
    }
    if seen.headers.get_all("authorization").iter().count() > 1 {
        return Some("two credentials forwarded".into());
    }
    let segs: Vec<String> = decode(path)
        .split(['/', '\\'])
        .filter(|s| !s.is_empty() && *s != ".")
        .fold(Vec::new(), |mut acc, s| {
            if s == ".." {
                acc.pop();
            } else {
                acc.push(s.to_string());
            }
            acc
        });
    let rest: Vec<&str> = segs.iter().skip(3).map(String::as_str).collect();
    let form = seen
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut query = params(seen.uri.query().unwrap_or(""));
    let overridden = query.get("_method").and_then(|v| v.last()).cloned();
    let method = overridden.as_deref().unwrap_or(seen.method.as_str());
    let (method, body) = if method == "POST" && form {
        for (k, v) in params(&String::from_utf8_lossy(&seen.body)) {
            query.entry(k).or_default().extend(v);
        }
        ("GET", None)
    } else {
        (method, parse_all(&seen.body))
    };
    // A repeated field (`update_mask.paths`) is a list, not a duplicate.
    if query
        .iter()
        .any(|(k, v)| v.len() > 1 && !k.ends_with(".paths"))
    {
        return Some(format!("a parameter given twice forwarded: {:?}", seen.uri));
    }
    if body.as_ref().is_some_and(J::has_duplicates) {
        return Some("a duplicate or aliased JSON key forwarded".into());
    }
    // A transcoder weaves every `a.b=v` parameter into the request message (a named body's
    // `app.` prefix or not), and a lenient front end reads a GET's body as well.
    let mut body = body.unwrap_or(J::Obj(Vec::new()));
    for (k, values) in &query {
        let path = k.strip_prefix("app.").unwrap_or(k);
        for v in values {
            weave(&mut body, path, v);
        }
    }
    apply_mask(&mut body, &query);
    let body_texts = |k: &str| body.texts(k);
    let q = |k: &str| {
        let mut v = query.get(k).cloned().unwrap_or_default();
        v.extend(body_texts(k));
        v
    };
    let apps: Vec<String> = body
        .texts("app_id")
        .into_iter()
        .chain(q("app_id"))
        .collect();
    let dispatch_only = body
        .texts("processing_strategy")
        .iter()
        .any(|s| enum_number(s, "DISPATCH_ONLY", 1));
    let dispatch = apps.iter().any(|a| a == DISPATCH_APP);
    let last = rest.last().copied().unwrap_or("").to_ascii_lowercase();
    let first = rest.first().copied().unwrap_or("").to_ascii_lowercase();
    let (collection, verb, depth) = match last.rsplit_once(':') {
        Some((c, v)) if rest.len() == 1 => (c.to_string(), Some(v.to_string()), 1),
        // A verb written as a segment: `conversations/recent`.
        _ if rest.len() == 2 && first == "conversations" && last == "recent" => {
            (first.clone(), Some(last.clone()), 1)
        }
        _ => (first.clone(), None, rest.len()),
    };
    let method = method.to_ascii_uppercase();
    match (collection.as_str(), verb.as_deref(), method.as_str(), depth) {
        ("messages" | "events", Some("send"), "POST", 1) if dispatch || dispatch_only => {
            let contact = body
                .all("recipient")
                .into_iter()
                .any(|r| !r.texts("contact_id").is_empty());
            contact.then(|| "send with recipient.contact_id for a DISPATCH app".into())
        }
        ("messages", None, "GET", 1) if dispatch => (!q("contact_id").is_empty()
            || !q("conversation_id").is_empty())
        .then(|| "list messages by contact or conversation for a DISPATCH app".into()),
        ("conversations", None, "GET" | "POST", 1)
        | ("conversations", Some("recent"), "GET", 1)
            if dispatch =>
        {
            Some("a conversation call for a DISPATCH app".into())
        }
        ("messages", Some("fetch-last-message"), "POST", 1) => {
            let ids = body
                .all("contact_ids")
                .into_iter()
                .any(|v| matches!(v, J::Arr(a) if !a.is_empty()));
            let sources = body.texts("messages_source");
            let dispatch_source =
                sources.is_empty() || sources.iter().any(|s| s != "CONVERSATION_SOURCE");
            (ids && (dispatch || dispatch_source))
                .then(|| "fetch-last-message by contact_ids from DISPATCH_SOURCE".into())
        }
        ("apps", None, "POST" | "PATCH", _) => {
            let conv = body
                .all("retention_policy")
                .into_iter()
                .any(|p| ttl_out_of_range(p, 1, 3650));
            let disp = body
                .all("dispatch_retention_policy")
                .into_iter()
                .any(|p| ttl_out_of_range(p, 0, 7));
            (conv || disp).then(|| "retention outside its range".into())
        }
        _ => None,
    }
}
