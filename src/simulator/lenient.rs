//! The simulator's own reading of a request: lenient the way the API's HTTP → gRPC front end
//! is, and independent of the gateway's code, so that the test suite can catch any request the
//! gateway reads one way and the upstream another.
//!
//! - Paths are percent-decoded in full (`%2F` included), dot segments resolved and empty
//!   segments dropped; a `:verb` belongs to the last segment.
//! - Query parameters and JSON fields answer to their proto name and their lowerCamelCase JSON
//!   name; of duplicates the last wins (serde's and Go's way).
//! - Enums are accepted as numbers and numeric strings (`1`, `"1"`, `" 1"`, `"+1"`, `"01"`),
//!   and in any case with `-` for `_` (`"dispatch-only"`).
//! - On a `POST` or `PATCH`, every query parameter `a.b=v` the body leaves unset is woven into
//!   the body (a transcoder's binding; a named body's `app.` prefix is dropped), except the
//!   query-bound `update_mask`, `metadata_update_strategy` and `messages_source`.
//! - A form-encoded `POST` to a route the API only defines for `GET` is read as that `GET`,
//!   the form as its query (grpc-gateway's fallback); `X-HTTP-Method-Override` is honoured.
//! - Of several `Authorization` headers, the last is used.

use http::{header, HeaderMap, Method};
use serde_json::{Map, Value};

use crate::domain::Operation;

/// A routed call: the operation, its project and the resource id in the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) operation: Operation,
    pub(crate) project: String,
    pub(crate) id: Option<String>,
    /// Segments after the fixed part of the path (the consents sub-resource).
    pub(crate) tail: Vec<String>,
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path's segments as the front end sees them.
pub(crate) fn segments(raw: &str) -> Vec<String> {
    let decoded = percent_decode(raw);
    let mut out: Vec<String> = Vec::new();
    for s in decoded.split(['/', '\\']) {
        match s {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    out
}

/// Routes a request, leniently.
pub(crate) fn route(method: &Method, raw_path: &str) -> Option<Route> {
    let segs = segments(raw_path);
    if segs == ["oauth2", "token"] {
        return (method == Method::POST).then(|| Route {
            operation: Operation::OauthToken,
            project: String::new(),
            id: None,
            tail: Vec::new(),
        });
    }
    let [v1, projects, project, rest @ ..] = segs.as_slice() else {
        return None;
    };
    if v1 != "v1" || projects != "projects" || rest.is_empty() {
        return None;
    }
    // The verb belongs to the last segment.
    let mut parts: Vec<&str> = rest.iter().map(String::as_str).collect();
    let last = parts.pop().unwrap_or_default();
    let (last, verb) = match last.rsplit_once(':') {
        Some((l, v)) => (l, Some(v)),
        None => (last, None),
    };
    parts.push(last);
    use Operation as Op;
    let m = method.as_str();
    let (op, id) = match (parts.as_slice(), verb, m) {
        (["apps"], None, "GET") => (Op::ListApps, None),
        (["apps"], None, "POST") => (Op::CreateApp, None),
        (["apps", id], None, "GET") => (Op::GetApp, Some(*id)),
        (["apps", id], None, "PATCH") => (Op::UpdateApp, Some(*id)),
        (["apps", id], None, "DELETE") => (Op::DeleteApp, Some(*id)),
        (["apps", id, "webhooks"], None, "GET") => (Op::ListAppWebhooks, Some(*id)),
        (["apps", id, "consents", ..], _, "GET") => (Op::ListConsents, Some(*id)),
        (["messages"], Some("send"), "POST") => (Op::SendMessage, None),
        (["messages"], Some("fetch-last-message"), "POST") => (Op::FetchLastMessage, None),
        (["messages"], Some("transcode"), "POST") => (Op::TranscodeMessage, None),
        (["messages"], None, "GET") => (Op::ListMessages, None),
        (["messages", id], None, "GET") => (Op::GetMessage, Some(*id)),
        (["messages", id], None, "PATCH") => (Op::UpdateMessage, Some(*id)),
        (["messages", id], None, "DELETE") => (Op::DeleteMessage, Some(*id)),
        (["events"], Some("send"), "POST") => (Op::SendEvent, None),
        (["events"], None, "GET") => (Op::ListEvents, None),
        (["events", id], None, "GET") => (Op::GetEvent, Some(*id)),
        (["events", id], None, "DELETE") => (Op::DeleteEvent, Some(*id)),
        (["conversations"], None, "GET") => (Op::ListConversations, None),
        (["conversations"], None, "POST") => (Op::CreateConversation, None),
        (["conversations"], Some("recent"), "GET") => (Op::RecentConversations, None),
        (["conversations", id], None, "GET") => (Op::GetConversation, Some(*id)),
        (["conversations", id], None, "PATCH") => (Op::UpdateConversation, Some(*id)),
        (["conversations", id], None, "DELETE") => (Op::DeleteConversation, Some(*id)),
        (["conversations", id], Some("stop"), "POST") => (Op::StopConversation, Some(*id)),
        (["conversations", id], Some("inject-message"), "POST") => (Op::InjectMessage, Some(*id)),
        (["conversations", id], Some("inject-event"), "POST") => (Op::InjectEvent, Some(*id)),
        (["contacts"], None, "GET") => (Op::ListContacts, None),
        (["contacts"], None, "POST") => (Op::CreateContact, None),
        (["contacts"], Some("identityConflicts"), "GET") => (Op::IdentityConflicts, None),
        (["contacts"], Some("getChannelProfile"), "POST") => (Op::GetChannelProfile, None),
        (["contacts", id], None, "GET") => (Op::GetContact, Some(*id)),
        (["contacts", id], None, "PATCH") => (Op::UpdateContact, Some(*id)),
        (["contacts", id], None, "DELETE") => (Op::DeleteContact, Some(*id)),
        (["contacts", id], Some("merge"), "POST") => (Op::MergeContact, Some(*id)),
        (["capability"], Some("query"), "POST") => (Op::QueryCapability, None),
        (["webhooks"], None, "POST") => (Op::CreateWebhook, None),
        (["webhooks", id], None, "GET") => (Op::GetWebhook, Some(*id)),
        (["webhooks", id], None, "PATCH") => (Op::UpdateWebhook, Some(*id)),
        (["webhooks", id], None, "DELETE") => (Op::DeleteWebhook, Some(*id)),
        (["settings", ..], _, _) => (Op::Settings, None),
        _ => return None,
    };
    let tail = match op {
        Op::ListConsents => rest.iter().skip(3).cloned().collect(),
        _ => Vec::new(),
    };
    Some(Route {
        operation: op,
        project: project.clone(),
        id: id.map(str::to_string),
        tail,
    })
}

/// The method the front end runs: the override header's, if any.
pub(crate) fn effective_method(method: &Method, headers: &HeaderMap) -> Method {
    headers
        .get("x-http-method-override")
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        .unwrap_or_else(|| method.clone())
}

/// The headers with only the last `Authorization` kept.
pub(crate) fn last_authorization(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    if let Some(last) = headers.get_all(header::AUTHORIZATION).iter().next_back() {
        out.insert(header::AUTHORIZATION, last.clone());
    }
    out
}

/// Whether a body is form-encoded.
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// A key in its proto spelling (`contactId` → `contact_id`).
pub(crate) fn proto_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Query parameters with proto-spelled names and enum numbers named (the last duplicate wins
/// where a handler reads one value).
pub(crate) fn query(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let k = proto_name(&k);
            let v = enum_name(&k, &Value::String(v.clone())).unwrap_or(v);
            (k, v)
        })
        .collect()
}

/// Fields whose values are free-form maps: their keys are the caller's, never renamed.
const FREE_FORM: [&str; 5] = [
    "conversation_metadata",
    "metadata",
    "message_metadata",
    "event_metadata",
    "channel_properties",
];

/// The name of an enum value given as a number, a numeric string or a variant of its name, for
/// the enum fields the simulator reads.
fn enum_name(field: &str, value: &Value) -> Option<String> {
    let names: &[&str] = match field {
        "messages_source" => &["CONVERSATION_SOURCE", "DISPATCH_SOURCE"],
        "processing_strategy" => &["DEFAULT", "DISPATCH_ONLY"],
        "processing_mode" => &["CONVERSATION", "DISPATCH"],
        "retention_type" => &[
            "MESSAGE_EXPIRE_POLICY",
            "CONVERSATION_EXPIRE_POLICY",
            "PERSIST_RETENTION_POLICY",
        ],
        _ => return None,
    };
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let t = s.trim();
            match t.trim_start_matches('+').parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    let folded = t.to_ascii_uppercase().replace('-', "_");
                    return (folded != *s && names.contains(&folded.as_str())).then_some(folded);
                }
            }
        }
        _ => return None,
    };
    names
        .get(usize::try_from(n).ok()?)
        .map(|s| (*s).to_string())
}

/// Query parameters bound to the query, never woven into a body.
const QUERY_BOUND: [&str; 4] = [
    "update_mask",
    "metadata_update_strategy",
    "messages_source",
    "_method",
];

/// Weaves the query into a `POST` / `PATCH` body, as a transcoder binds `a.b=v` to the field
/// `a.b` wherever the body leaves it unset.
pub(crate) fn weave(mut body: Value, method: &str, query: &[(String, String)]) -> Value {
    if !matches!(method, "POST" | "PATCH") {
        return body;
    }
    for (k, v) in query {
        let path = k.strip_prefix("app.").unwrap_or(k);
        if QUERY_BOUND.contains(&path) {
            continue;
        }
        let mut node = &mut body;
        let parts: Vec<String> = path.split('.').map(proto_name).collect();
        for (i, part) in parts.iter().enumerate() {
            let Some(object) = node.as_object_mut() else {
                break;
            };
            let last = i + 1 == parts.len();
            let slot = object.entry(part.clone()).or_insert(Value::Null);
            if last {
                if slot.is_null() {
                    *slot = enum_name(part, &Value::String(v.clone()))
                        .map_or_else(|| Value::String(v.clone()), Value::String);
                }
                break;
            }
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            node = slot;
        }
    }
    body
}

/// A JSON body with proto-spelled keys and enum numbers named.
pub(crate) fn body(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let k = proto_name(&k);
                let v = if FREE_FORM.contains(&k.as_str()) {
                    v
                } else {
                    match enum_name(&k, &v) {
                        Some(name) => Value::String(name),
                        None => body(v),
                    }
                };
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(body).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_parameters_are_woven_into_a_body_and_enums_read_leniently() {
        let q = query(vec![
            ("recipient.contactId".into(), "alice".into()),
            ("app_id".into(), "from-query".into()),
            ("processing_strategy".into(), "+1".into()),
            ("messages_source".into(), "DISPATCH_SOURCE".into()),
        ]);
        let woven = weave(body(json!({"app_id": "from-body"})), "POST", &q);
        assert_eq!(woven["recipient"]["contact_id"], "alice");
        assert_eq!(
            woven["app_id"], "from-body",
            "the body wins where it sets the field"
        );
        assert_eq!(woven["processing_strategy"], "DISPATCH_ONLY");
        assert!(woven.get("messages_source").is_none(), "query-bound");
        assert_eq!(weave(json!({}), "GET", &q), json!({}));
        for v in ["1", " 1", "01", "dispatch-only", "dispatch_only"] {
            assert_eq!(
                body(json!({"processing_strategy": v}))["processing_strategy"],
                "DISPATCH_ONLY",
                "{v}"
            );
        }
    }

    #[test]
    fn paths_are_read_the_lenient_way() {
        let r = route(&Method::POST, "/v1/projects/%70/m%65ssages%3Asend").expect("route");
        assert_eq!(r.operation, Operation::SendMessage);
        assert_eq!(r.project, "p");
        let r = route(&Method::GET, "/v1//projects/p/x/../apps%2Fa1/").expect("route");
        assert_eq!(
            (r.operation, r.id.as_deref()),
            (Operation::GetApp, Some("a1"))
        );
        assert!(route(&Method::PUT, "/v1/projects/p/apps").is_none());
    }

    #[test]
    fn names_and_enums_are_read_both_ways() {
        let b = body(json!({"appId": "a", "processingStrategy": 1,
            "retentionPolicy": {"retentionType": 2, "ttlDays": 5},
            "conversationMetadata": {"orderId": 1}}));
        assert_eq!(
            b,
            json!({"app_id": "a", "processing_strategy": "DISPATCH_ONLY",
                "retention_policy": {"retention_type": "PERSIST_RETENTION_POLICY", "ttl_days": 5},
                "conversation_metadata": {"orderId": 1}})
        );
        assert_eq!(
            query(vec![("messagesSource".into(), "1".into())]),
            [("messages_source".to_string(), "DISPATCH_SOURCE".to_string())]
        );
    }
}
