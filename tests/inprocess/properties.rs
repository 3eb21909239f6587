//! Property tests: the parsers and the rules never panic on arbitrary input, always decide
//! something coherent, and a rewrite never touches a field it does not own.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use modegate::policy::{
    apply_body_edits, evaluate, Action, PolicyContext, ProcessingMode, Query, RequestFacts, RuleId,
    RuleSet,
};
use modegate::proxy::classify::{classify, Operation};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z0-9_+:. -]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("DISPATCH_ONLY"),
            Just("DISPATCH_SOURCE"),
            Just("CONVERSATION_SOURCE"),
            Just("alice")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Field names the rules look at, mixed with others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("app_id".to_string()),
        Just("recipient".to_string()),
        Just("contact_id".to_string()),
        Just("identified_by".to_string()),
        Just("processing_strategy".to_string()),
        Just("processing_mode".to_string()),
        Just("conversation_metadata".to_string()),
        Just("correlation_id".to_string()),
        Just("contact_ids".to_string()),
        Just("messages_source".to_string()),
        Just("retention_policy".to_string()),
        Just("dispatch_retention_policy".to_string()),
        Just("ttl_days".to_string()),
        Just("retention_type".to_string()),
        "[a-z_]{1,10}",
    ]
}

fn any_operation() -> impl Strategy<Value = Operation> {
    prop::sample::select(Operation::ALL.to_vec())
}

fn any_mode() -> impl Strategy<Value = Option<ProcessingMode>> {
    prop_oneof![
        Just(None),
        Just(Some(ProcessingMode::Conversation)),
        Just(Some(ProcessingMode::Dispatch))
    ]
}

fn any_rules() -> impl Strategy<Value = RuleSet> {
    prop::collection::vec(
        prop::sample::select(Action::ALL.to_vec()),
        RuleId::ALL.len(),
    )
    .prop_map(|actions| {
        let mut set = RuleSet::default();
        for (rule, action) in RuleId::ALL.iter().zip(actions) {
            if rule.supports(action) {
                set.set(*rule, action);
            }
        }
        set
    })
}

/// Top-level fields a body edit may change, and the nested ones under retention objects.
const OWNED_TOP: [&str; 3] = ["processing_mode", "conversation_metadata", "correlation_id"];

fn assert_only_owned_fields_changed(before: &Value, after: &Value) {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        assert_eq!(before, after, "a non-object body must be left alone");
        return;
    };
    for (k, v) in b {
        if OWNED_TOP.contains(&k.as_str()) {
            continue;
        }
        if k == "retention_policy" || k == "dispatch_retention_policy" {
            let (Some(bo), Some(ao)) = (v.as_object(), a.get(k).and_then(Value::as_object)) else {
                assert_eq!(Some(v), a.get(k), "{k} changed shape");
                continue;
            };
            for (nk, nv) in bo {
                if nk != "ttl_days" {
                    assert_eq!(Some(nv), ao.get(nk), "{k}.{nk} changed");
                }
            }
            continue;
        }
        assert_eq!(
            Some(v),
            a.get(k),
            "field {k} is not the rewrite's to change"
        );
    }
    for k in a.keys() {
        assert!(
            b.contains_key(k) || OWNED_TOP.contains(&k.as_str()),
            "field {k} appeared"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn classify_never_panics_and_ids_are_path_slices(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PATCH"), Just("DELETE"), Just("PUT"), Just("X-CUSTOM")],
        path in prop_oneof![
            "/v1/projects/[a-z0-9%:.-]{0,8}(/[a-zA-Z0-9%:._-]{0,12}){0,5}",
            "\\PC{0,40}",
        ],
    ) {
        let method = http::Method::from_bytes(method.as_bytes()).expect("method");
        let c = classify(&method, &path);
        if let Some(p) = c.project_id(&path) {
            prop_assert!(path.contains(p));
            prop_assert!(!p.is_empty());
        }
        if let Some(r) = c.resource_id(&path) {
            prop_assert!(path.contains(r));
        }
        if c.operation == Operation::Other {
            prop_assert!(c.project_id(&path).is_none());
        }
    }

    #[test]
    fn query_parsing_never_panics(raw in "\\PC{0,80}") {
        let q = Query::parse(Some(&raw));
        let _ = q.get("contact_id");
        let _ = q.has("messages_source");
    }

    #[test]
    fn rules_always_decide_coherently_and_rewrites_own_their_fields(
        op in any_operation(),
        mode in any_mode(),
        rules in any_rules(),
        body in json_value(),
        query in "(app_id=a|contact_id=k|conversation_id=c|messages_source=DISPATCH_SOURCE|x=1)(&(contact_id=k|messages_source=CONVERSATION_SOURCE)){0,2}",
        cap in 1u32..=3650,
        pin in any_mode(),
        allow in any::<bool>(),
    ) {
        let q = Query::parse(Some(&query));
        let facts = RequestFacts { operation: op, query: &q, body: Some(&body), message_store: None, pseudo: None };
        let ctx = PolicyContext { rules: &rules, create_app_default_mode: pin, max_ttl_days: cap, allow_dispatch_only: allow, now: std::time::UNIX_EPOCH };
        let d = evaluate(&facts, mode, &ctx);
        if let Some(r) = &d.reject {
            prop_assert!(d.edits.is_empty());
            prop_assert!(!r.message.is_empty());
            prop_assert_eq!(rules.action(r.rule), Action::Enforce);
            prop_assert!(d.matches.iter().all(|m| m.action == Action::Shadow || m.rule == r.rule));
        }
        for m in &d.matches {
            prop_assert_eq!(rules.action(m.rule), m.action);
            prop_assert!(m.action != Action::Off);
        }
        let mut rewritten = body.clone();
        apply_body_edits(&mut rewritten, &d.edits);
        assert_only_owned_fields_changed(&body, &rewritten);
        // Serialising what the gateway would forward always succeeds.
        prop_assert!(serde_json::to_vec(&rewritten).is_ok());
    }

    #[test]
    fn capped_ttls_are_never_above_the_cap(ttl in 0i64..10_000, cap in 1u32..3650) {
        let mut rules = RuleSet::default();
        rules.set(RuleId::MaxTtlDays, Action::Rewrite);
        rules.set(RuleId::RetentionRange, Action::Off);
        let body = json!({"retention_policy": {"ttl_days": ttl, "retention_type": "MESSAGE_EXPIRE_POLICY"}});
        let q = Query::default();
        let facts = RequestFacts { operation: Operation::CreateApp, query: &q, body: Some(&body), message_store: None, pseudo: None };
        let ctx = PolicyContext { rules: &rules, create_app_default_mode: None, max_ttl_days: cap, allow_dispatch_only: false, now: std::time::UNIX_EPOCH };
        let mut out = body.clone();
        apply_body_edits(&mut out, &evaluate(&facts, None, &ctx).edits);
        let got = out["retention_policy"]["ttl_days"].as_i64().expect("ttl");
        prop_assert_eq!(got, if cap < 3650 { ttl.min(i64::from(cap)) } else { ttl });
        prop_assert_eq!(&out["retention_policy"]["retention_type"], "MESSAGE_EXPIRE_POLICY");
    }
}
