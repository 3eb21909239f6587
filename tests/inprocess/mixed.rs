//! Projects with apps of both modes (the demo project: `legacy-app` CONVERSATION, `new-app`
//! DISPATCH). Calls by message id — get, update, delete — sent the Node way
//! (`messages_source=CONVERSATION_SOURCE`) and the Python way (no source) succeed whatever the
//! gateway has learned: a message sent through the gateway goes to its store the first time; one
//! it has not seen is retried once in the other store after a 404; a CONVERSATION message never
//! gets `DISPATCH_SOURCE`. In-process, counting the simulator's calls.

use crate::support;

use http::{Method, StatusCode};
use modegate::domain::Operation as Op;
use support::inproc::InProc;
use support::*;

const NODE: &str = "?messages_source=CONVERSATION_SOURCE";
const PYTHON: &str = "";

/// The by-id calls a client makes, the way each SDK makes them.
async fn read_update_delete(g: &InProc, id: &str, style: &str) {
    let r = g.get(&format!("/messages/{id}{style}")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "get {style:?}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = g
        .patch(&format!("/messages/{id}{style}"), r#"{"metadata":"seen"}"#)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "update {style:?}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["metadata"], "seen");
    let r = g.delete(&format!("/messages/{id}{style}")).await;
    assert_eq!(r.status, StatusCode::OK, "delete {style:?}");
}

fn by_id_calls(g: &InProc) -> u64 {
    g.calls(Op::GetMessage) + g.calls(Op::UpdateMessage) + g.calls(Op::DeleteMessage)
}

#[tokio::test]
async fn a_message_sent_through_the_gateway_is_read_back_with_one_upstream_call() {
    for style in [NODE, PYTHON] {
        for app in ["new-app", "legacy-app"] {
            let g = InProc::start("");
            let sent = g.post("/messages:send", &send_identified(app)).await;
            assert_eq!(sent.status, StatusCode::OK);
            let id = sent.json()["message_id"].as_str().expect("id").to_string();
            read_update_delete(&g, &id, style).await;
            assert_eq!(
                by_id_calls(&g),
                3,
                "{app} {style:?}: one upstream call each"
            );
        }
    }
}

#[tokio::test]
async fn a_dispatch_only_send_from_a_conversation_app_is_found_in_dispatch_source() {
    let g = InProc::start(
        "[[policy.app]]\nproject_id = \"demo-project\"\napp_id = \"legacy-app\"\nallow_dispatch_only = true\n",
    );
    let body = r#"{"app_id":"legacy-app","processing_strategy":"DISPATCH_ONLY","recipient":{"identified_by":{"channel_identities":[{"channel":"SMS","identity":"+15550100"}]}},"message":{"text_message":{"text":"hi"}}}"#;
    let sent = g.post("/messages:send", body).await;
    assert_eq!(sent.status, StatusCode::OK);
    let id = sent.json()["message_id"].as_str().expect("id").to_string();
    let r = g.get(&format!("/messages/{id}{NODE}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("x-modegate-rule"),
        Some("dispatch.messages_source")
    );
    assert_eq!(g.calls(Op::GetMessage), 1);
}

/// A message the gateway never saw (sent straight to the API by another client).
async fn unseen(g: &InProc, app: &str) -> String {
    let r = g
        .upstream_send(Method::POST, "/messages:send", &send_identified(app))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()["message_id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn an_unseen_message_is_found_whatever_the_gateway_has_learned() {
    // Learned states: nothing; both apps (a list); only the DISPATCH app pinned.
    let states: [(&str, &str, bool); 3] = [
        ("fresh", "", false),
        ("after list apps", "", true),
        (
            "DISPATCH app pinned",
            "[[policy.app]]\nproject_id = \"demo-project\"\napp_id = \"new-app\"\nprocessing_mode = \"DISPATCH\"\n",
            false,
        ),
    ];
    for (state, config, list) in states {
        for app in ["new-app", "legacy-app"] {
            for style in [NODE, PYTHON] {
                let g = InProc::start(config);
                if list {
                    assert_eq!(g.get("/apps").await.status, StatusCode::OK);
                }
                let id = unseen(&g, app).await;
                let r = g.get(&format!("/messages/{id}{style}")).await;
                assert_eq!(r.status, StatusCode::OK, "{state}, {app}, {style:?}");
                assert!(
                    g.calls(Op::GetMessage) <= 2,
                    "{state}, {app}, {style:?}: at most one retry"
                );
                if g.calls(Op::GetMessage) == 2 {
                    assert_eq!(r.header("x-modegate-decision"), Some("rewritten"));
                    assert_eq!(
                        r.header("x-modegate-rule"),
                        Some("dispatch.messages_source")
                    );
                }
                // The read taught the gateway where it lives: update and delete go there at once.
                let before = by_id_calls(&g);
                let r = g
                    .patch(&format!("/messages/{id}{style}"), r#"{"metadata":"m"}"#)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{state}, {app}, {style:?}");
                let r = g.delete(&format!("/messages/{id}{style}")).await;
                assert_eq!(r.status, StatusCode::OK, "{state}, {app}, {style:?}");
                assert_eq!(by_id_calls(&g) - before, 2, "{state}, {app}, {style:?}");
            }
        }
    }
}

#[tokio::test]
async fn an_unseen_update_is_retried_too() {
    let g = InProc::start("");
    let id = unseen(&g, "new-app").await;
    let r = g
        .patch(&format!("/messages/{id}{NODE}"), r#"{"metadata":"m"}"#)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["metadata"], "m", "the retry carried the body");
    assert_eq!(g.calls(Op::UpdateMessage), 2);
}

#[tokio::test]
async fn an_unknown_id_gets_the_upstreams_404_after_at_most_one_retry() {
    let g = InProc::start("");
    for style in [NODE, PYTHON] {
        let before = g.calls(Op::GetMessage);
        let r = g.get(&format!("/messages/01NOSUCHMESSAGE{style}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.api_error().0, "NOT_FOUND");
        assert_eq!(g.calls(Op::GetMessage) - before, 2);
        assert_ne!(r.header("x-modegate-decision"), Some("rewritten"));
    }
}

#[tokio::test]
async fn a_project_known_to_have_no_dispatch_app_is_not_retried_there() {
    let mut seed = demo_seed();
    seed.projects[0].apps.retain(|a| a.id == "legacy-app");
    let g = InProc::with_seed(seed, "");
    assert_eq!(g.get("/apps").await.status, StatusCode::OK);
    let r = g.get("/messages/01NOSUCHMESSAGE").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        g.calls(Op::GetMessage),
        1,
        "no app of the other mode: no retry"
    );
}

#[tokio::test]
async fn a_conversation_message_never_gets_dispatch_source() {
    // The gateway knows only the DISPATCH app (pinned), which ties calls naming no app to
    // DISPATCH; a CONVERSATION message sent through the gateway still goes to its own store.
    let g = InProc::start(
        "[[policy.app]]\nproject_id = \"demo-project\"\napp_id = \"new-app\"\nprocessing_mode = \"DISPATCH\"\n",
    );
    let sent = g
        .post("/messages:send", &send_identified("legacy-app"))
        .await;
    let id = sent.json()["message_id"].as_str().expect("id").to_string();
    let r = g.get(&format!("/messages/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-modegate-decision"), Some("forwarded"));
    assert_eq!(g.calls(Op::GetMessage), 1);
}

#[tokio::test]
async fn off_leaves_calls_by_id_alone() {
    let g = InProc::start("[policy.rules]\n\"dispatch.messages_source\" = \"off\"\n");
    let id = unseen(&g, "new-app").await;
    let r = g.get(&format!("/messages/{id}{NODE}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(g.calls(Op::GetMessage), 1);
}
