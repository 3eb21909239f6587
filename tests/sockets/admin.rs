//! The admin listener and graceful shutdown.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let upstream = Upstream::ok().await;
    let gw = spawn(config_for(&upstream.url())).await;
    let admin = gw.admin_addr;
    let r = send(Method::GET, &format!("http://{admin}/healthz"), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(Method::GET, &format!("http://{admin}/readyz"), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let m = metrics(admin).await;
    assert_eq!(
        sample(
            &m,
            "modegate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let r = send(Method::GET, &format!("http://{admin}/metrics"), &[], "").await;
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let r = send(Method::GET, &format!("http://{admin}/apps"), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["apps"].is_array());
    let r = send(Method::GET, &format!("http://{admin}/nope"), &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.api_error().0, "NOT_FOUND");
    let r = send(Method::POST, &format!("http://{admin}/metrics"), &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_turns_readiness_off() {
    let upstream = Upstream::start(Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Response::new(Full::new(Bytes::from_static(b"slow but complete")))
        })
    }))
    .await;
    let gw = spawn(config_for(&upstream.url())).await;
    let proxy = gw.proxy_addr;
    let admin = gw.admin_addr;
    let in_flight = tokio::spawn(async move {
        send(
            Method::GET,
            &format!("http://{proxy}/v1/projects/p/apps"),
            &[],
            "",
        )
        .await
    });
    let seen = upstream.seen.clone();
    // Wait until the upstream has the request, then ask the gateway to stop.
    assert_eventually(
        || !seen.lock().expect("lock").is_empty(),
        Duration::from_secs(5),
        "request reached upstream",
    )
    .await;
    gw.begin_shutdown();
    // Readiness flips to 503 while the in-flight request is still being served.
    let mut draining = false;
    for _ in 0..50 {
        let r = send(Method::GET, &format!("http://{admin}/readyz"), &[], "").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(draining, "readyz never turned 503 during the drain");
    let reply = in_flight.await.expect("join");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"slow but complete");
    gw.shutdown().await;
    // The listener is closed once drained.
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err());
}
