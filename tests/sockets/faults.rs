//! Upstream faults: every client gets an answer, nothing leaks, recovery is automatic.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A raw TCP upstream: reads a request head, then does `act` with the socket.
async fn raw_upstream<F, Fut>(act: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let act = Arc::new(act);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let act = act.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                act(s).await;
            });
        }
    });
    addr
}

/// The process's open TCP sockets with an end on one of `ports`: other tests of this binary
/// run in the same process, so only the sockets of this test's gateway and upstream count.
fn open_fds(ports: &[u16]) -> usize {
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let ours = cols.len() > 9
                && [cols[1], cols[2]]
                    .iter()
                    .any(|a| port(a).is_some_and(|p| ports.contains(&p)));
            if ours {
                inodes.insert(format!("socket:[{}]", cols[9]));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|link| link.to_str().is_some_and(|l| inodes.contains(l)))
                .count()
        })
        .unwrap_or(0)
}

async fn get_other(gw: &modegate::RunningApp) -> Reply {
    send(
        Method::GET,
        &format!("http://{}/v1/projects/p/elsewhere", gw.proxy_addr),
        &[],
        "",
    )
    .await
}

#[tokio::test]
async fn upstream_closing_without_an_answer_is_502() {
    let addr = raw_upstream(|s| async move { drop(s) }).await;
    let gw = spawn(config_for(&format!("http://{addr}"))).await;
    let r = get_other(&gw).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.api_error().0, "UNAVAILABLE");
    let m = metrics(gw.admin_addr).await;
    assert!(sample(&m, "modegate_upstream_errors_total", &[("kind", "reset")]) >= 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_garbage_is_502() {
    let addr = raw_upstream(|mut s| async move {
        let _ = s.write_all(b"THIS IS NOT HTTP AT ALL\r\n\r\n").await;
        let _ = s.shutdown().await;
    })
    .await;
    let gw = spawn(config_for(&format!("http://{addr}"))).await;
    let r = get_other(&gw).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.api_error().0, "UNAVAILABLE");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reset_mid_body_ends_the_clients_response_instead_of_hanging() {
    let addr = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/json\r\n\r\n{\"partial\":")
            .await;
        drop(s);
    })
    .await;
    let gw = spawn(config_for(&format!("http://{addr}"))).await;
    let resp = client()
        .request(
            http::Request::get(format!("http://{}/v1/projects/p/elsewhere", gw.proxy_addr))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("head arrives");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body ends promptly");
    assert!(body.is_err(), "a truncated body must not look complete");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstreams_closing_keep_alive_early_do_not_fail_requests() {
    // Every answer closes its connection; the pool must notice and reconnect.
    let addr = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let gw = spawn(config_for(&format!("http://{addr}"))).await;
    for _ in 0..50 {
        let r = get_other(&gw).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"ok");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn recovery_is_automatic_when_the_upstream_returns() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let gw = spawn(config_for(&format!("http://127.0.0.1:{port}"))).await;
    assert_eq!(get_other(&gw).await.status, StatusCode::BAD_GATEWAY);
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"back",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let r = get_other(&gw).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"back");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_fault_storm_leaks_no_file_descriptors() {
    let garbage = raw_upstream(|mut s| async move {
        let _ = s.write_all(b"garbage\r\n\r\n").await;
    })
    .await;
    let gw = spawn(config_for(&format!("http://{garbage}"))).await;
    // Warm up listeners, pools and runtime threads before counting.
    for _ in 0..5 {
        get_other(&gw).await;
    }
    let ports = [gw.proxy_addr.port(), garbage.port()];
    let before = open_fds(&ports);
    assert!(before > 0, "the gateway's listener is counted");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = format!("http://{}/v1/projects/p/elsewhere", gw.proxy_addr);
        tasks.push(tokio::spawn(async move {
            send(Method::GET, &url, &[], "").await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), StatusCode::BAD_GATEWAY);
    }
    let mut after = open_fds(&ports);
    for _ in 0..100 {
        if after <= before + 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = open_fds(&ports);
    }
    assert!(
        after <= before + 4,
        "file descriptors grew from {before} to {after}"
    );
    gw.shutdown().await;
}
