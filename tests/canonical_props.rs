//! Property: for requests that break a DISPATCH rule, disguised at random — characters
//! percent-encoded, slashes doubled, dot segments and trailing slashes added, names given in
//! lowerCamelCase, duplicates added — the gateway either refuses the request, or forwards one
//! whose lenient reading (tests/support/lenient.rs, written independently of the gateway)
//! breaks no rule. Driven in-process through the whole stack against a recording upstream.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use modegate::proxy::{Connection, GatewayBody};
use modegate::upstream::{full, UpstreamFailure};
use modegate::Deps;
use proptest::prelude::*;
use support::lenient::{fixture_answer, violation};
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let (method, target, body) = attack(kind, &d);
        let outcome = rt.block_on(async {
            let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
            let config = config_toml("[upstream]\nbase_url = \"http://api.test\"\n");
            let state = modegate::build(
                &config,
                Deps { upstream: Some(recording_upstream(log.clone())), ..Deps::default() },
            )
            .expect("build");
            let Ok(req) = Request::builder()
                .method(method)
                .uri(&target)
                .header("authorization", "Bearer t")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
            else {
                // Not even a valid request target: nothing to forward.
                return Ok(());
            };
            let stack = modegate::proxy::stack(state, Connection::in_process("127.0.0.1:1".parse().expect("addr")));
            let Ok(resp) = stack.oneshot(req).await;
            let decision = resp
                .headers()
                .get("x-modegate-decision")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let seen = log.lock().expect("lock").clone();
            if decision == "rejected" {
                return if seen.is_empty() { Ok(()) } else { Err(format!("refused yet forwarded: {target}")) };
            }
            match seen.first().and_then(violation) {
                Some(problem) => Err(format!("{target}: {problem}")),
                None => Ok(()),
            }
        });
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
    }
}
