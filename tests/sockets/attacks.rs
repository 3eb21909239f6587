//! The attack corpus: one case per class of request the gateway could read one way and a
//! lenient upstream another — encodings, slashes and dot segments, lowerCamelCase names, enums
//! as numbers, duplicates, the form fallback, method overrides, two credentials. Every case is
//! sent through real sockets over HTTP/1.1 (raw bytes, as no client library would tidy them)
//! and over h2c, to `modegate serve` in front of a recording upstream. Each must be refused by
//! the gateway, or reach the upstream as a request whose lenient reading breaks no rule.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::lenient::{fixture_answer, violation, DISPATCH_APP};
use support::*;

/// The upstream: `d-app` is DISPATCH, `c-app` CONVERSATION; everything else answers `{}`.
async fn upstream() -> Upstream {
    Upstream::start(Arc::new(|seen: Seen| {
        Box::pin(async move {
            let body = fixture_answer(seen.uri.path());
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("response")
        })
    }))
    .await
}

struct Case {
    class: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
}

const AUTH: (&str, &str) = ("authorization", "Bearer t");
const JSON: (&str, &str) = ("content-type", "application/json");
const SEND_CONTACT: &str = r#"{"app_id":"d-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#;

fn corpus() -> Vec<Case> {
    let c = |class, method, path, headers, body| Case {
        class,
        method,
        path,
        headers,
        body,
    };
    vec![
        c(
            "encoded project id",
            "POST",
            "/v1/projects/%70/messages:send",
            &[AUTH, JSON],
            SEND_CONTACT,
        ),
        c(
            "encoded letter in a literal",
            "POST",
            "/v1/projects/p/m%65ssages:send",
            &[AUTH, JSON],
            SEND_CONTACT,
        ),
        c(
            "encoded verb",
            "POST",
            "/v1/projects/p/messages%3Asend",
            &[AUTH, JSON],
            SEND_CONTACT,
        ),
        c(
            "encoded letter in the verb",
            "POST",
            "/v1/projects/p/messages:s%65nd",
            &[AUTH, JSON],
            SEND_CONTACT,
        ),
        c(
            "encoded app id in PATCH",
            "PATCH",
            "/v1/projects/p/apps/%64-app",
            &[AUTH, JSON],
            r#"{"dispatch_retention_policy":{"ttl_days":30}}"#,
        ),
        c(
            "encoded slash",
            "POST",
            "/v1/projects/p%2Fmessages:send",
            &[AUTH, JSON],
            SEND_CONTACT,
        ),
        c(
            "encoded backslash",
            "GET",
            "/v1/projects/p/messages%5C?app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "trailing slash",
            "GET",
            "/v1/projects/p/messages/?app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "doubled slashes",
            "GET",
            "/v1//projects/p//messages?app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "dot segments",
            "GET",
            "/v1/projects/p/x/../messages?app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "encoded dot segments",
            "GET",
            "/v1/projects/p/x/%2e%2e/messages?app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "camelCase query contactId",
            "GET",
            "/v1/projects/p/messages?app_id=d-app&contactId=alice",
            &[AUTH],
            "",
        ),
        c(
            "camelCase query appId",
            "GET",
            "/v1/projects/p/messages?appId=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "camelCase query conversationId",
            "GET",
            "/v1/projects/p/messages?app_id=d-app&conversationId=k",
            &[AUTH],
            "",
        ),
        c(
            "camelCase conversations appId",
            "GET",
            "/v1/projects/p/conversations?appId=d-app",
            &[AUTH],
            "",
        ),
        c(
            "camelCase JSON appId",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"appId":"d-app","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "camelCase JSON recipient.contactId",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"d-app","recipient":{"contactId":"alice"},"message":{}}"#,
        ),
        c(
            "camelCase JSON ttlDays",
            "POST",
            "/v1/projects/p/apps",
            &[AUTH, JSON],
            r#"{"display_name":"x","dispatchRetentionPolicy":{"ttlDays":30}}"#,
        ),
        c(
            "camelCase JSON contactIds",
            "POST",
            "/v1/projects/p/messages:fetch-last-message",
            &[AUTH, JSON],
            r#"{"appId":"c-app","contactIds":["alice"]}"#,
        ),
        c(
            "camelCase JSON on send event",
            "POST",
            "/v1/projects/p/events:send",
            &[AUTH, JSON],
            r#"{"appId":"d-app","recipient":{"contactId":"alice"},"event":{}}"#,
        ),
        c(
            "enum as a number",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","processing_strategy":1,"correlation_id":"x","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "nested enum as a number",
            "POST",
            "/v1/projects/p/apps",
            &[AUTH, JSON],
            r#"{"display_name":"x","retention_policy":{"retention_type":2,"ttl_days":9999}}"#,
        ),
        c(
            "duplicate JSON key",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","app_id":"d-app","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "JSON key and its alias",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","appId":"d-app","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "duplicate nested key",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"d-app","recipient":{"identified_by":{"channel_identities":[]},"contactId":"alice","contact_id":"x"},"message":{}}"#,
        ),
        c(
            "key given with a unicode escape",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app\u005fid":"d-app","recipient":{"contact\u005fid":"alice"},"message":{}}"#,
        ),
        c(
            "field names inside a string",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"message":{"text_message":{"text":"\",\"app_id\":\"c-app\"}"}},"app_id":"d-app","recipient":{"contact_id":"alice"}}"#,
        ),
        c(
            "alias after a field no rule reads",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","message":{"text_message":{"text":"hi"}},"appId":"d-app","recipient":{"contact_id":"alice"}}"#,
        ),
        c(
            "duplicate key inside a field no rule reads",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"d-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"a","text":"b"}}}"#,
        ),
        c(
            "duplicate query app_id",
            "GET",
            "/v1/projects/p/messages?app_id=c-app&app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "query app_id and its alias",
            "GET",
            "/v1/projects/p/messages?app_id=c-app&appId=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "form body to a GET-only route",
            "POST",
            "/v1/projects/p/messages",
            &[AUTH, ("content-type", "application/x-www-form-urlencoded")],
            "app_id=d-app&contact_id=alice",
        ),
        c(
            "method override",
            "POST",
            "/v1/projects/p/messages?app_id=d-app&contact_id=alice",
            &[AUTH, JSON, ("x-http-method-override", "GET")],
            "{}",
        ),
        c(
            "method override on a rule route",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON, ("x-http-method-override", "GET")],
            SEND_CONTACT,
        ),
        c(
            "two credentials",
            "GET",
            "/v1/projects/p/apps/c-app",
            &[AUTH, ("authorization", "Bearer other")],
            "",
        ),
        // One model of the API: what a transcoder reads that a list of cases missed.
        c(
            "a send's recipient carried in the query",
            "POST",
            "/v1/projects/p/messages:send?recipient.contact_id=alice",
            &[AUTH, JSON],
            r#"{"app_id":"d-app","message":{"text_message":{"text":"hi"}}}"#,
        ),
        c(
            "a send's app id carried in the query",
            "POST",
            "/v1/projects/p/messages:send?appId=d-app",
            &[AUTH, JSON],
            r#"{"recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}"#,
        ),
        c(
            "a whole send carried in the query",
            "POST",
            "/v1/projects/p/messages:send?app_id=d-app&recipient.contact_id=alice&message.text_message.text=hi",
            &[AUTH, JSON],
            "",
        ),
        c(
            "DISPATCH_ONLY carried in the query",
            "POST",
            "/v1/projects/p/messages:send?processing_strategy=DISPATCH_ONLY",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "DISPATCH_ONLY as a number in the query",
            "POST",
            "/v1/projects/p/messages:send?processing_strategy=1",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "DISPATCH_ONLY as a numeric string",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","processing_strategy":"1","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "DISPATCH_ONLY as a zero-padded numeric string",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","processing_strategy":"01","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "DISPATCH_ONLY as a signed numeric string",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","processingStrategy":"+1","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "DISPATCH_ONLY in lower case",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","processing_strategy":"dispatch_only","recipient":{"contact_id":"alice"},"message":{}}"#,
        ),
        c(
            "messages_source as a signed number",
            "GET",
            "/v1/projects/p/messages?app_id=c-app&contact_id=alice&messages_source=%2B1",
            &[AUTH],
            "",
        ),
        c(
            "dispatch retention carried in the query of a create",
            "POST",
            "/v1/projects/p/apps?dispatch_retention_policy.ttl_days=30",
            &[AUTH, JSON],
            r#"{"display_name":"x"}"#,
        ),
        c(
            "app-prefixed retention carried in the query of a create",
            "POST",
            "/v1/projects/p/apps?app.retention_policy.ttl_days=5000",
            &[AUTH, JSON],
            r#"{"display_name":"x"}"#,
        ),
        c(
            "retention carried in the query of an update",
            "PATCH",
            "/v1/projects/p/apps/c-app?retention_policy.ttl_days=5000",
            &[AUTH, JSON],
            r#"{"display_name":"x"}"#,
        ),
        c(
            "a masked ttl the body omits",
            "PATCH",
            "/v1/projects/p/apps/c-app?update_mask=retention_policy.ttl_days",
            &[AUTH, JSON],
            r#"{"display_name":"x"}"#,
        ),
        c(
            "a masked policy the body gives in part",
            "PATCH",
            "/v1/projects/p/apps/c-app?update_mask=retention_policy",
            &[AUTH, JSON],
            r#"{"retention_policy":{"retention_type":"PERSIST_RETENTION_POLICY"}}"#,
        ),
        c(
            "a verb read as an id",
            "GET",
            "/v1/projects/p/conversations/recent?app_id=d-app",
            &[AUTH],
            "",
        ),
        c(
            "a verb written as a segment",
            "POST",
            "/v1/projects/p/conversations/C1/inject-message",
            &[AUTH, JSON],
            "{}",
        ),
        c(
            "an id written as a verb",
            "PATCH",
            "/v1/projects/p/apps:d-app",
            &[AUTH, JSON],
            r#"{"dispatch_retention_policy":{"ttl_days":30}}"#,
        ),
        c(
            "upper-case path literals",
            "POST",
            "/V1/PROJECTS/p/MESSAGES:SEND",
            &[AUTH, JSON],
            SEND_CONTACT,
        ),
        c(
            "a body on a list",
            "GET",
            "/v1/projects/p/messages?app_id=d-app",
            &[AUTH, JSON],
            r#"{"contact_id":"alice"}"#,
        ),
        c(
            "_method in the query",
            "POST",
            "/v1/projects/p/messages?_method=GET&app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "X-Original-URL",
            "GET",
            "/v1/projects/p/apps/c-app",
            &[AUTH, ("x-original-url", "/v1/projects/p/messages?app_id=d-app&contact_id=alice")],
            "",
        ),
        c(
            "X-Rewrite-URL",
            "GET",
            "/v1/projects/p/apps/c-app",
            &[AUTH, ("x-rewrite-url", "/v1/projects/p/messages?app_id=d-app&contact_id=alice")],
            "",
        ),
        c(
            "a gRPC content type",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, ("content-type", "application/grpc+json")],
            SEND_CONTACT,
        ),
        c(
            "a gRPC method path",
            "POST",
            "/sinch.conversationapi.v1.Messages/SendMessage",
            &[AUTH, ("content-type", "application/json")],
            SEND_CONTACT,
        ),
        c(
            "an encoded percent outside the API",
            "GET",
            "/other/%2541",
            &[AUTH],
            "",
        ),
        c(
            "overlong UTF-8 outside the API",
            "GET",
            "/other/%C0%AE%C0%AE/v1/projects/p/messages?app_id=d-app&contact_id=alice",
            &[AUTH],
            "",
        ),
        c(
            "a lenient spelling of a field name",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"d-app","recipient":{"Contact_ID":"alice"},"message":{}}"#,
        ),
    ]
}

/// Legitimate traffic, which must reach the upstream unchanged in meaning.
fn legitimate() -> Vec<Case> {
    let c = |class, method, path, headers, body| Case {
        class,
        method,
        path,
        headers,
        body,
    };
    vec![
        c(
            "camelCase send that breaks no rule",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"appId":"c-app","recipient":{"contactId":"alice"},"message":{"textMessage":{"text":"hi"}}}"#,
        ),
        c(
            "encoded query value",
            "GET",
            "/v1/projects/p/messages?app_id=c-app&channel_identity=%2B15550100",
            &[AUTH],
            "",
        ),
        c(
            "camelCase list for a CONVERSATION app",
            "GET",
            "/v1/projects/p/messages?appId=c-app&contactId=alice",
            &[AUTH],
            "",
        ),
        c(
            "identified send to the DISPATCH app",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"appId":"d-app","recipient":{"identifiedBy":{"channelIdentities":[{"channel":"SMS","identity":"+15550100"}]}},"message":{}}"#,
        ),
        c(
            "conversation_metadata keys that look like aliases",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"c-app","recipient":{"contact_id":"alice"},"conversation_metadata":{"orderId":"1","order_id":"2"},"message":{"text_message":{"text":"hi"}}}"#,
        ),
        c(
            "template parameters that look like aliases",
            "POST",
            "/v1/projects/p/messages:send",
            &[AUTH, JSON],
            r#"{"app_id":"d-app","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"message":{"template_message":{"omni_template":{"template_id":"t","version":"1","parameters":{"first_name":"a","firstName":"b"}}}}}"#,
        ),
        c(
            "an update mask as the Node SDK sends it",
            "PATCH",
            "/v1/projects/p/apps/c-app?update_mask=display_name,retention_policy",
            &[AUTH, JSON],
            r#"{"display_name":"y","retention_policy":{"retention_type":"MESSAGE_EXPIRE_POLICY","ttl_days":30}}"#,
        ),
        c(
            "messages_source on get message as the Node SDK sends it",
            "GET",
            "/v1/projects/p/messages/M1?messages_source=CONVERSATION_SOURCE",
            &[AUTH],
            "",
        ),
        c(
            "query parameters the schema does not know",
            "GET",
            "/v1/projects/p/messages?app_id=c-app&new_filter=x",
            &[AUTH],
            "",
        ),
    ]
}

/// What the gateway answered: status and `x-modegate-decision`.
struct Answer {
    status: u16,
    decision: String,
}

async fn over_h1(addr: SocketAddr, case: &Case) -> Answer {
    let mut raw = format!("{} {} HTTP/1.1\r\nHost: gw\r\n", case.method, case.path);
    for (k, v) in case.headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        case.body.len(),
        case.body
    ));
    let text = raw_exchange(addr, raw.as_bytes(), Duration::from_secs(5)).await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}: no answer: {text}", case.class));
    let decision = text
        .lines()
        .find_map(|l| l.strip_prefix("x-modegate-decision: "))
        .unwrap_or("")
        .trim()
        .to_string();
    Answer { status, decision }
}

async fn over_h2(addr: SocketAddr, case: &Case) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut builder = Request::builder()
        .method(Method::from_bytes(case.method.as_bytes()).expect("method"))
        .uri(format!("http://{addr}{}", case.path));
    for (k, v) in case.headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(Full::new(Bytes::from_static(case.body.as_bytes())))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("in time")
        .unwrap_or_else(|e| panic!("{}: {e}", case.class));
    let status = resp.status().as_u16();
    let decision = resp
        .headers()
        .get("x-modegate-decision")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _ = resp.into_body().collect().await;
    Answer { status, decision }
}

/// What reached the upstream for one case (the gateway's own lookups left out).
fn forwarded(up: &Upstream, before: usize) -> Vec<Seen> {
    up.seen()
        .into_iter()
        .skip(before)
        .filter(|s| {
            !s.headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("modegate/"))
        })
        .collect()
}

/// The configurations every attack is tried against: the default, rewrite, fail-closed and
/// strict routes.
const CONFIGURATIONS: [&str; 4] = [
    "",
    "[policy.rules]\n\"dispatch.send.contact_recipient\" = \"rewrite\"\n",
    "[policy]\nunknown_mode = \"reject\"\n",
    "[policy]\nunrecognized_route = \"reject\"\n",
];

async fn run(cases: Vec<Case>, must_forward: bool) {
    for config in CONFIGURATIONS {
        run_with(&cases, must_forward, config).await;
    }
}

async fn run_with(cases: &[Case], must_forward: bool, config: &str) {
    let up = upstream().await;
    let gw = spawn_before(&up.url(), config).await;
    let mut refused = 0;
    for case in cases {
        for (transport, h2) in [("HTTP/1.1", false), ("h2c", true)] {
            let before = up.seen().len();
            let answer = if h2 {
                over_h2(gw.proxy_addr, case).await
            } else {
                over_h1(gw.proxy_addr, case).await
            };
            let seen = forwarded(&up, before);
            let what = format!("{} over {transport} with {config:?}", case.class);
            if answer.decision == "rejected" {
                refused += 1;
                assert!(
                    (400..500).contains(&answer.status),
                    "{what}: {}",
                    answer.status
                );
                assert!(seen.is_empty(), "{what}: refused, yet forwarded {seen:?}");
                assert!(!must_forward, "{what}: legitimate traffic refused");
                continue;
            }
            assert_eq!(
                seen.len(),
                1,
                "{what}: answered {} {}",
                answer.status,
                answer.decision
            );
            if let Some(problem) = violation(&seen[0]) {
                panic!(
                    "{what}: reached the upstream and breaks a rule: {problem} ({:?})",
                    seen[0].uri
                );
            }
        }
    }
    if !must_forward {
        assert!(refused > 0);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn no_attack_reaches_the_upstream_with_a_reading_that_breaks_a_rule() {
    assert_eq!(DISPATCH_APP, "d-app");
    run(corpus(), false).await;
}

#[tokio::test]
async fn legitimate_camel_case_and_encoded_values_pass() {
    run(legitimate(), true).await;
}

#[tokio::test]
async fn a_connection_header_naming_authorization_is_refused() {
    let up = upstream().await;
    let gw = spawn_before(&up.url(), "").await;
    let case = Case {
        class: "Connection: authorization",
        method: "GET",
        path: "/v1/projects/p/messages?app_id=d-app",
        headers: &[AUTH, ("connection", "authorization")],
        body: "",
    };
    let answer = over_h1(gw.proxy_addr, &case).await;
    assert_eq!((answer.status, answer.decision.as_str()), (400, "rejected"));
    assert!(forwarded(&up, 0).is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn canonical_paths_are_what_the_upstream_receives() {
    let up = upstream().await;
    let gw = spawn_before(&up.url(), "").await;
    let case = Case {
        class: "encoded, doubled and dotted",
        method: "GET",
        path: "/v1//projects/%70/x/../m%65ssages/?app_id=c-app&channel_identity=%2B1555",
        headers: &[AUTH],
        body: "",
    };
    for h2 in [false, true] {
        let before = up.seen().len();
        let answer = if h2 {
            over_h2(gw.proxy_addr, &case).await
        } else {
            over_h1(gw.proxy_addr, &case).await
        };
        assert_eq!(answer.status, 200);
        let seen = forwarded(&up, before);
        assert_eq!(
            seen[0].uri.path_and_query().map(|p| p.as_str()),
            Some("/v1/projects/p/messages?app_id=c-app&channel_identity=%2B1555")
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn in_shadow_an_ambiguous_request_is_forwarded_unchanged_and_recorded() {
    let up = upstream().await;
    let gw = spawn_before(
        &up.url(),
        "[policy.rules]\n\"request.canonical\" = \"shadow\"\n",
    )
    .await;
    let case = Case {
        class: "duplicate app_id in shadow",
        method: "GET",
        path: "/v1/projects/p/apps/c-app",
        headers: &[AUTH, ("x-http-method-override", "DELETE")],
        body: "",
    };
    let answer = over_h1(gw.proxy_addr, &case).await;
    assert_eq!((answer.status, answer.decision.as_str()), (200, "shadow"));
    let seen = forwarded(&up, 0);
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.contains_key("x-http-method-override"),
        "unchanged"
    );
    let m = metrics(gw.admin_addr).await;
    assert_eq!(decisions(&m, "request.canonical", "shadow"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn unrecognized_routes_are_forwarded_by_default_and_refused_when_strict() {
    let up = upstream().await;
    let path = "/v1/projects/p/no-such-collection/x";
    for (config, status, decision) in [
        ("", 200, "forwarded"),
        (
            "[policy]\nunrecognized_route = \"reject\"\n",
            404,
            "rejected",
        ),
    ] {
        let before = up.seen().len();
        let gw = spawn_before(&up.url(), config).await;
        let r = get(&format!("http://{}{path}", gw.proxy_addr)).await;
        assert_eq!(
            (r.status.as_u16(), r.header("x-modegate-decision")),
            (status, Some(decision))
        );
        if status == 404 {
            let (name, message, details) = r.api_error();
            assert_eq!(name, "NOT_FOUND");
            assert!(
                message.contains("no Conversation API operation"),
                "{message}"
            );
            assert_eq!(details, ["request.unrecognized_route"]);
            assert_eq!(
                r.header("x-modegate-rule"),
                Some("request.unrecognized_route")
            );
            assert!(forwarded(&up, before).is_empty());
        }
        // Known routes and paths outside /v1/projects/ are not affected.
        let r = get(&format!(
            "http://{}/v1/projects/p/apps/c-app",
            gw.proxy_addr
        ))
        .await;
        assert_eq!(r.status.as_u16(), 200);
        gw.shutdown().await;
    }
}

/// The corpus case of this class.
fn case(class: &str) -> Case {
    corpus()
        .into_iter()
        .find(|c| c.class == class)
        .unwrap_or_else(|| panic!("no case {class}"))
}

#[tokio::test]
async fn refusals_say_what_was_ambiguous_and_how_to_fix_it() {
    let up = upstream().await;
    let gw = spawn_before(&up.url(), "").await;
    for (case, needle) in [
        (case("encoded slash"), "%2F"),
        (case("enum as a number"), "give the enum by name"),
        (case("JSON key and its alias"), "send it once"),
        (case("duplicate query app_id"), "given more than once"),
        (case("form body to a GET-only route"), "the API takes GET"),
        (case("method override"), "overrides are not accepted"),
        (case("two credentials"), "send exactly one credential"),
    ] {
        let mut b = Request::builder()
            .method(case.method)
            .uri(format!("http://{}{}", gw.proxy_addr, case.path));
        for (k, v) in case.headers {
            b = b.header(*k, *v);
        }
        let resp = client()
            .request(
                b.body(Full::new(Bytes::from_static(case.body.as_bytes())))
                    .expect("req"),
            )
            .await
            .expect("response");
        let (parts, body) = resp.into_parts();
        let r = Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        };
        assert_rejected(&r, "request.canonical");
        let (_, message, _) = r.api_error();
        assert!(message.contains(needle), "{}: {message}", case.class);
        assert!(!message.contains("alice"), "no values echoed: {message}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_text_body_with_header_like_lines_is_not_mistaken_for_framing() {
    let up = upstream().await;
    let gw = spawn_before(&up.url(), "").await;
    let body = "line one\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    let raw = format!(
        "POST /v1/projects/p/notes HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}\
         GET /v1/projects/p/apps/c-app HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /v1/projects/p/apps/c-app HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let text = raw_exchange(gw.proxy_addr, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    assert_eq!(forwarded(&up, 0).len(), 3);
    gw.shutdown().await;
}
