//! Per-request futures stay small. A future is as large as its largest state, and is copied
//! whole when boxed; the rare phases (policy facts and decisions, rewrites, learning, the
//! token source, connecting to an origin) are boxed where they are awaited so that a
//! passthrough request neither carries nor copies them. A phase inlined again fails here.

use crate::support;

use bytes::Bytes;
use http::Request;
use modegate::upstream::pool::PoolSettings;
use modegate::upstream::{full, HyperUpstream};
use std::time::Duration;
use support::inproc::InProc;
use support::*;

fn report(what: &str, size: usize, limit: usize) {
    println!("{what}: {size} bytes (limit {limit})");
    assert!(
        size <= limit,
        "{what} is {size} bytes, over {limit}: box the large, rare sub-future where it is awaited"
    );
}

#[test]
fn the_request_future_carries_no_policy_phase() {
    let gw = InProc::start("");
    let request = Request::get("/v1/projects/demo-project/other")
        .body(full(Bytes::new()))
        .expect("request");
    let future = modegate::proxy::handler::handle(&gw.state, request);
    report("handle()", std::mem::size_of_val(&future), 4608);
}

#[tokio::test]
async fn the_pool_send_future_carries_no_connect() {
    let config = config_toml("[upstream]\nbase_url = \"http://127.0.0.1:9\"\n");
    let client = HyperUpstream::with_pool(
        &config.upstream,
        &|_| None,
        PoolSettings {
            idle_timeout: Duration::from_secs(1),
            max_idle_per_host: 1,
            http1_engine: engine_from_env(),
        },
    )
    .expect("client");
    let request = Request::get("http://127.0.0.1:9/")
        .body(full(Bytes::new()))
        .expect("request");
    let future = client.pool().send(request);
    report("Pool::send()", std::mem::size_of_val(&future), 1536);
}
