//! Property: for requests that break a DISPATCH rule, disguised at random — characters
//! percent-encoded, slashes doubled, dot segments and trailing slashes added, names given in
//! lowerCamelCase, duplicates added — the gateway either refuses the request, or forwards one
//! whose lenient reading (tests/support/lenient.rs, written independently of the gateway)
//! breaks no rule. Driven in-process through the whole stack against a recording upstream.

use crate::support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use modegate::proxy::{Connection, GatewayBody};
use modegate::upstream::{full, UpstreamFailure};
use modegate::Deps;
use proptest::prelude::*;
use support::lenient::{fixture_answer, snake, violation};
use support::*;
use tower::ServiceExt;

type Seen = support::Seen;

fn recording_upstream(log: Arc<Mutex<Vec<Seen>>>) -> modegate::upstream::Upstream {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<GatewayBody>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_string();
            if !parts
                .headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("modegate/"))
            {
                log.lock().expect("lock").push(Seen {
                    method: parts.method,
                    uri: parts.uri,
                    headers: parts.headers,
                    body_len: body.len() as u64,
                    body,
                });
            }
            let answer = fixture_answer(&path);
            Ok::<_, UpstreamFailure>(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(full(answer))
                    .expect("response"),
            )
        }
    }))
}

/// Sends one request through the whole stack in-process, in front of a recording upstream:
/// refused with nothing forwarded, or forwarded as a request whose lenient reading breaks no
/// rule, else the problem.
fn refused_or_harmless(method: Method, target: &str, body: String) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let config = config_toml("[upstream]\nbase_url = \"http://api.test\"\n");
        let state = modegate::build(
            &config,
            Deps {
                upstream: Some(recording_upstream(log.clone())),
                ..Deps::default()
            },
        )
        .expect("build");
        let Ok(req) = Request::builder()
            .method(method)
            .uri(target)
            .header("authorization", "Bearer t")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
        else {
            // Not even a valid request target: nothing to forward.
            return Ok(());
        };
        let stack = modegate::proxy::stack(
            state,
            Connection::in_process("127.0.0.1:1".parse().expect("addr")),
        );
        let Ok(resp) = stack.oneshot(req).await;
        let decision = resp
            .headers()
            .get("x-modegate-decision")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let seen = log.lock().expect("lock").clone();
        if decision == "rejected" {
            return if seen.is_empty() {
                Ok(())
            } else {
                Err(format!("refused yet forwarded: {target}"))
            };
        }
        match seen.first().and_then(violation) {
            Some(problem) => Err(format!("{target}: {problem}")),
            None => Ok(()),
        }
    })
}

fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// How one request is disguised.
#[derive(Debug, Clone)]
struct Disguise {
    encode: Vec<bool>,
    upper_hex: bool,
    double_slash: Option<usize>,
    dot_segment: Option<usize>,
    trailing_slash: bool,
    camel: Vec<bool>,
    duplicate: bool,
}

fn disguise() -> impl Strategy<Value = Disguise> {
    (
        prop::collection::vec(prop::bool::weighted(0.15), 64),
        any::<bool>(),
        prop::option::of(0usize..6),
        prop::option::of(0usize..6),
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<bool>(), 8),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(encode, upper_hex, double_slash, dot_segment, trailing_slash, camel, duplicate)| {
                Disguise {
                    encode,
                    upper_hex,
                    double_slash,
                    dot_segment,
                    trailing_slash,
                    camel,
                    duplicate,
                }
            },
        )
}

fn disguise_path(path: &str, d: &Disguise) -> String {
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if d.encode.get(i % d.encode.len()).copied().unwrap_or(false) {
                        let hex = format!("%{:02x}", c as u32);
                        if d.upper_hex {
                            hex.to_uppercase()
                        } else {
                            hex
                        }
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    if let Some(i) = d.dot_segment {
        let at = i.min(segments.len());
        segments.insert(at, "..".into());
        segments.insert(at, "x".into());
    }
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        out.push('/');
        if d.double_slash == Some(i) {
            out.push('/');
        }
        out.push_str(s);
    }
    if d.trailing_slash {
        out.push('/');
    }
    out
}

/// A request breaking a DISPATCH rule for `d-app`, disguised.
fn attack(kind: usize, d: &Disguise) -> (Method, String, String) {
    let name = |i: usize, n: &str| {
        if d.camel.get(i).copied().unwrap_or(false) {
            camel(n)
        } else {
            n.to_string()
        }
    };
    match kind {
        0 => {
            let mut q = format!(
                "{}=d-app&{}=alice",
                name(0, "app_id"),
                name(1, "contact_id")
            );
            if d.duplicate {
                q = format!("{}=c-app&{q}", name(2, "app_id"));
            }
            (
                Method::GET,
                format!("{}?{q}", disguise_path("/v1/projects/p/messages", d)),
                String::new(),
            )
        }
        1 => {
            let dup = if d.duplicate {
                format!(r#""{}":"c-app","#, name(2, "app_id"))
            } else {
                String::new()
            };
            let body = format!(
                r#"{{{dup}"{}":"d-app","recipient":{{"{}":"alice"}},"message":{{}}}}"#,
                name(0, "app_id"),
                name(1, "contact_id")
            );
            (
                Method::POST,
                disguise_path("/v1/projects/p/messages:send", d),
                body,
            )
        }
        2 => (
            Method::GET,
            format!(
                "{}?{}=d-app",
                disguise_path("/v1/projects/p/conversations", d),
                name(0, "app_id")
            ),
            String::new(),
        ),
        _ => {
            let body = format!(
                r#"{{"display_name":"x","{}":{{"{}":30}}}}"#,
                name(0, "dispatch_retention_policy"),
                name(1, "ttl_days")
            );
            (Method::POST, disguise_path("/v1/projects/p/apps", d), body)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn a_disguised_attack_is_refused_or_harmless_upstream(kind in 0usize..4, d in disguise()) {
        let (method, target, body) = attack(kind, &d);
        let outcome = refused_or_harmless(method, &target, body);
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
    }
}

// ---------------------------------------------------------------------------------------------
// Requests generated from the API schema itself: a rule-breaking request of each kind, then
// mutations drawn from its operation's request message — a field moved into the query (dotted,
// either name, a named body's prefix or not), a key spelled by its JSON name, an enum given as a
// number, a numeric string or a case variant, a key duplicated, a field nulled, a field masked
// and dropped, any field of the message added to the query. The gateway must refuse the result
// or forward a request whose transcoder-style reading (tests/support/lenient.rs) breaks no rule.

use modegate::domain::Operation;
use modegate::schema::{schema, Binding, Kind, MessageId, Shape};

/// A JSON value that can hold duplicate keys.
#[derive(Clone, Debug)]
enum Node {
    Obj(Vec<(String, Node)>),
    Arr(Vec<Node>),
    Text(String),
    Num(i64),
    Null,
}

impl Node {
    fn from_json(v: &serde_json::Value) -> Node {
        match v {
            serde_json::Value::Object(m) => Node::Obj(
                m.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
            serde_json::Value::Array(a) => Node::Arr(a.iter().map(Node::from_json).collect()),
            serde_json::Value::String(s) => Node::Text(s.clone()),
            serde_json::Value::Number(n) => Node::Num(n.as_i64().unwrap_or(0)),
            _ => Node::Null,
        }
    }

    fn text(&self) -> String {
        match self {
            Node::Obj(pairs) => format!(
                "{{{}}}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), v.text()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Node::Arr(items) => format!(
                "[{}]",
                items.iter().map(Node::text).collect::<Vec<_>>().join(",")
            ),
            Node::Text(s) => serde_json::Value::from(s.as_str()).to_string(),
            Node::Num(n) => n.to_string(),
            Node::Null => "null".into(),
        }
    }

    /// The object at `path` (keys compared by proto spelling).
    fn object_at(&mut self, path: &[String]) -> Option<&mut Vec<(String, Node)>> {
        let Node::Obj(pairs) = self else { return None };
        match path.split_first() {
            None => Some(pairs),
            Some((head, rest)) => pairs
                .iter_mut()
                .find(|(k, _)| snake(k) == *head)
                .and_then(|(_, v)| v.object_at(rest)),
        }
    }

    /// Every present leaf or object path, in proto spelling.
    fn paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Node::Obj(pairs) = self {
            for (k, v) in pairs {
                prefix.push(snake(k));
                out.push(prefix.clone());
                v.paths(prefix, out);
                prefix.pop();
            }
        }
    }
}

/// A rule-breaking base request: operation, method, path, query, body.
fn bases() -> Vec<(Operation, Method, &'static str, &'static str, &'static str)> {
    use Operation as O;
    vec![
        (
            O::SendMessage,
            Method::POST,
            "/v1/projects/p/messages:send",
            "",
            r#"{"app_id":"d-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}},"processing_strategy":"DEFAULT"}"#,
        ),
        (
            O::SendMessage,
            Method::POST,
            "/v1/projects/p/messages:send",
            "",
            r#"{"app_id":"c-app","recipient":{"contact_id":"alice"},"processing_strategy":"DISPATCH_ONLY","message":{}}"#,
        ),
        (
            O::SendEvent,
            Method::POST,
            "/v1/projects/p/events:send",
            "",
            r#"{"app_id":"d-app","recipient":{"contact_id":"alice"},"event":{}}"#,
        ),
        (
            O::ListMessages,
            Method::GET,
            "/v1/projects/p/messages",
            "app_id=d-app&contact_id=alice",
            "",
        ),
        (
            O::RecentConversations,
            Method::GET,
            "/v1/projects/p/conversations:recent",
            "app_id=d-app",
            "",
        ),
        (
            O::FetchLastMessage,
            Method::POST,
            "/v1/projects/p/messages:fetch-last-message",
            "",
            r#"{"app_id":"c-app","contact_ids":["alice"],"messages_source":"DISPATCH_SOURCE"}"#,
        ),
        (
            O::CreateApp,
            Method::POST,
            "/v1/projects/p/apps",
            "",
            r#"{"display_name":"x","dispatch_retention_policy":{"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":30}}"#,
        ),
        (
            O::UpdateApp,
            Method::PATCH,
            "/v1/projects/p/apps/c-app",
            "",
            r#"{"retention_policy":{"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":5000}}"#,
        ),
    ]
}

/// Every field path of `message` down to `depth`, with its field (proto names).
fn field_paths(message: MessageId, depth: usize) -> Vec<(Vec<String>, Kind, Shape)> {
    let s = schema();
    let mut out = Vec::new();
    for f in &s.message(message).fields {
        out.push((vec![f.proto.clone()], f.kind, f.shape));
        if let (Kind::Message(m), Shape::Single, true) = (f.kind, f.shape, depth > 1) {
            for (mut p, k, sh) in field_paths(m, depth - 1) {
                p.insert(0, f.proto.clone());
                out.push((p, k, sh));
            }
        }
    }
    out
}

fn kind_at(message: MessageId, path: &[String]) -> Option<(Kind, Shape)> {
    field_paths(message, 4)
        .into_iter()
        .find(|(p, _, _)| p == path)
        .map(|(_, k, s)| (k, s))
}

/// A value of `kind` as text for a query, chosen to break rules where it can.
fn query_value(kind: Kind, path: &[String], variant: usize) -> String {
    match kind {
        Kind::Enum(e) => {
            let names = &schema().enumeration(e).values;
            let name = &names[variant % names.len()];
            match variant % 4 {
                0 => name.clone(),
                1 => (variant % names.len()).to_string(),
                2 => name.to_ascii_lowercase(),
                _ => format!("+{}", variant % names.len()),
            }
        }
        Kind::Int => ["5000", "30", "0"][variant % 3].into(),
        Kind::Bool => "true".into(),
        _ if path.last().is_some_and(|l| l == "app_id") => "d-app".into(),
        _ => "alice".into(),
    }
}

#[derive(Clone, Debug)]
struct Mutation {
    what: usize,
    pick: usize,
    variant: usize,
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        (0usize..7, any::<usize>(), any::<usize>()).prop_map(|(what, pick, variant)| Mutation {
            what,
            pick,
            variant,
        }),
        1..4,
    )
}

/// Applies `m` to the request: (query pairs, body).
fn mutate(
    op: Operation,
    method: &Method,
    query: &mut Vec<(String, String)>,
    body: &mut Node,
    m: &Mutation,
) {
    let s = schema();
    let def = s.definition(op, method).expect("definition");
    let body_message = def.body_message();
    let request = s.message(def.request);
    let mut present = Vec::new();
    body.paths(&mut Vec::new(), &mut present);
    let typed: Vec<(Vec<String>, Kind, Shape)> = body_message
        .map(|bm| {
            present
                .iter()
                .filter_map(|p| kind_at(bm, p).map(|(k, sh)| (p.clone(), k, sh)))
                .collect()
        })
        .unwrap_or_default();
    let name = |p: &str, v: usize| if v % 2 == 1 { camel(p) } else { p.to_string() };
    match m.what {
        // A present body field moved into the query (a named body's prefix, or not).
        0 if !typed.is_empty() => {
            let (path, kind, _) = &typed[m.pick % typed.len()];
            if let Some(parent) = body.object_at(&path[..path.len() - 1]) {
                parent.retain(|(k, _)| snake(k) != *path.last().expect("leaf"));
            }
            let mut key: Vec<String> = path.iter().map(|p| name(p, m.variant)).collect();
            if let (Some(i), true) = (
                request
                    .fields
                    .iter()
                    .position(|f| Some(f.kind) == body_message.map(Kind::Message)),
                m.variant.is_multiple_of(3),
            ) {
                if def.binding(i) == Binding::Body && def.body != modegate::schema::BodyBinding::All
                {
                    key.insert(0, request.fields[i].proto.clone());
                }
            }
            query.push((key.join("."), query_value(*kind, path, m.variant)));
        }
        // A present key spelled by its JSON name.
        1 if !typed.is_empty() => {
            let (path, _, _) = &typed[m.pick % typed.len()];
            if let Some(parent) = body.object_at(&path[..path.len() - 1]) {
                for (k, _) in parent
                    .iter_mut()
                    .filter(|(k, _)| snake(k) == *path.last().expect("leaf"))
                {
                    *k = camel(k);
                }
            }
        }
        // An enum given as a number, a numeric string or a case variant.
        2 => {
            let enums: Vec<_> = typed
                .iter()
                .filter(|(_, k, sh)| matches!(k, Kind::Enum(_)) && *sh == Shape::Single)
                .collect();
            if enums.is_empty() {
                return;
            }
            let (path, kind, _) = enums[m.pick % enums.len()];
            let Kind::Enum(e) = kind else { return };
            let names = &s.enumeration(*e).values;
            let leaf = path.last().expect("leaf").clone();
            let current = names
                .iter()
                .position(|n| {
                    body.clone()
                        .object_at(&path[..path.len() - 1])
                        .is_some_and(|o| {
                            o.iter().any(|(k, v)| {
                                snake(k) == leaf && matches!(v, Node::Text(t) if t == n)
                            })
                        })
                })
                .unwrap_or(0);
            let value = match m.variant % 5 {
                0 => Node::Num(current as i64),
                1 => Node::Text(current.to_string()),
                2 => Node::Text(format!("0{current}")),
                3 => Node::Text(names[current].to_ascii_lowercase()),
                _ => Node::Text(names[current].replace('_', "-")),
            };
            if let Some(parent) = body.object_at(&path[..path.len() - 1]) {
                for (_, v) in parent.iter_mut().filter(|(k, _)| snake(k) == leaf) {
                    *v = value.clone();
                }
            }
        }
        // A key given twice (the same name or its alias), the second with another value.
        3 if !typed.is_empty() => {
            let (path, kind, _) = &typed[m.pick % typed.len()];
            let leaf = path.last().expect("leaf").clone();
            let value = match kind {
                Kind::Int => Node::Num(1),
                _ => Node::Text(query_value(*kind, path, m.variant)),
            };
            if let Some(parent) = body.object_at(&path[..path.len() - 1]) {
                parent.insert(0, (name(&leaf, m.variant), value));
            }
        }
        // A field nulled.
        4 if !typed.is_empty() => {
            let (path, _, _) = &typed[m.pick % typed.len()];
            let leaf = path.last().expect("leaf").clone();
            if let Some(parent) = body.object_at(&path[..path.len() - 1]) {
                for (_, v) in parent.iter_mut().filter(|(k, _)| snake(k) == leaf) {
                    *v = Node::Null;
                }
            }
        }
        // A field masked and dropped from the body (operations with an update_mask).
        5 => {
            if !request.fields.iter().any(|f| f.proto == "update_mask") {
                return;
            }
            let Some(bm) = body_message else { return };
            let paths = field_paths(bm, 2);
            let (path, _, _) = &paths[m.pick % paths.len()];
            if let Some(parent) = body.object_at(&path[..path.len() - 1]) {
                parent.retain(|(k, _)| snake(k) != *path.last().expect("leaf"));
            }
            query.push((name("update_mask", m.variant), path.join(".")));
        }
        // Any field of the request message added to the query.
        _ => {
            let paths: Vec<_> = field_paths(def.request, 3)
                .into_iter()
                .filter(|(p, _, _)| p[0] != "project_id")
                .collect();
            let (path, kind, _) = &paths[m.pick % paths.len()];
            let key: Vec<String> = path.iter().map(|p| name(p, m.variant)).collect();
            query.push((key.join("."), query_value(*kind, path, m.variant)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, .. ProptestConfig::default() })]

    #[test]
    fn a_request_generated_from_the_schema_is_refused_or_harmless_upstream(
        base in 0usize..8,
        ms in mutations(),
    ) {
        let (op, method, path, query, body) = bases()[base].clone();
        let mut q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut node = if body.is_empty() {
            Node::Obj(Vec::new())
        } else {
            Node::from_json(&serde_json::from_str(body).expect("base body"))
        };
        for m in &ms {
            mutate(op, &method, &mut q, &mut node, m);
        }
        let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&q).finish();
        let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        let text = if body.is_empty() && matches!(node, Node::Obj(ref p) if p.is_empty()) {
            String::new()
        } else {
            node.text()
        };
        let outcome = refused_or_harmless(method.clone(), &target, text.clone())
            .map_err(|e| format!("{method} {text}: {e}"));
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
    }
}
