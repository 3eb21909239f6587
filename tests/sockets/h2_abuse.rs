//! HTTP/2 abuse through real sockets, from a raw client (tests/support/h2raw.rs): the limits the
//! gateway pins in `src/server/mod.rs` hold. Rapid reset ends in GOAWAY with no upstream
//! request for a reset stream; a CONTINUATION flood and an HPACK bomb never reach the upstream;
//! streams beyond `http2_max_concurrent_streams` are refused; PING and SETTINGS floods from a
//! client that reads nothing meet backpressure instead of a growing queue.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::h2raw::*;
use support::*;

/// An upstream that records each request and never answers it.
async fn holding_upstream() -> Upstream {
    Upstream::start(Arc::new(|_seen| Box::pin(std::future::pending()))).await
}

/// The gateway still answers a plain client on a new connection.
async fn still_serves(gw: &modegate::RunningApp) {
    let r = get(&format!("http://{}/v1/projects/p/apps", gw.proxy_addr)).await;
    assert_eq!(r.status, 200, "a well-behaved client is still served");
}

/// The verdict on a flood: the connection ended in GOAWAY(ENHANCE_YOUR_CALM), nothing of it
/// reached the upstream, and the gateway still serves a new connection.
async fn calmed(code: Option<u32>, up: &Upstream, gw: modegate::RunningApp) {
    assert_eq!(code, Some(ENHANCE_YOUR_CALM));
    assert!(
        up.seen().is_empty(),
        "{} flood requests reached the upstream",
        up.seen().len()
    );
    still_serves(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rapid_reset_ends_in_goaway_and_reset_streams_never_go_upstream() {
    let up = Upstream::ok().await;
    let gw = spawn(config_for(&up.url())).await;
    let mut h2 = H2Raw::handshaken(gw.proxy_addr).await;
    let block = get_block("/v1/projects/p/apps");
    let mut burst = Vec::new();
    for i in 0..200u32 {
        let id = 1 + 2 * i;
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    let _ = h2.send(&burst).await;
    let (_, code) = h2.read_goaway(Duration::from_secs(5)).await;
    calmed(code, &up, gw).await;
}

#[tokio::test]
async fn a_continuation_flood_ends_in_goaway_and_never_reaches_the_upstream() {
    let up = Upstream::ok().await;
    let gw = spawn(config_for(&up.url())).await;
    let mut h2 = H2Raw::handshaken(gw.proxy_addr).await;
    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames.
    let mut flood = frame(HEADERS, END_STREAM, 1, &get_block("/v1/projects/p/apps"));
    let field = literal("x-flood", &"v".repeat(100));
    for _ in 0..5_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &field));
    }
    // The gateway may close before the flood is written.
    let writer = h2.send_in_background(flood);
    let (_, code) = h2.read_goaway(Duration::from_secs(10)).await;
    writer.abort();
    calmed(code, &up, gw).await;
}

#[tokio::test]
async fn an_hpack_bomb_ends_in_goaway_and_never_reaches_the_upstream() {
    let up = Upstream::ok().await;
    let gw = spawn(config_for(&up.url())).await;
    let mut h2 = H2Raw::handshaken(gw.proxy_addr).await;
    // One 4,000-byte field put in the dynamic table (literal with incremental indexing, RFC
    // 7541 6.2.1), then 1,000 one-byte references to it: a 5 KB block that decodes to 4 MB,
    // far over the 16 KiB header list the gateway accepts.
    let mut block = get_block("/v1/projects/p/apps");
    block.push(0x40);
    block.extend(hpack_int(0, 7, "x-bomb".len()));
    block.extend_from_slice(b"x-bomb");
    block.extend(hpack_int(0, 7, 4_000));
    block.extend(std::iter::repeat_n(b'b', 4_000));
    block.extend(std::iter::repeat_n(hpack_int(0x80, 7, 62)[0], 1_000));
    h2.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await
        .expect("send");
    let (frames, code) = h2.read_goaway(Duration::from_secs(5)).await;
    assert!(
        frames.iter().all(|f| f.kind != HEADERS),
        "no response for the bomb's stream"
    );
    calmed(code, &up, gw).await;
}

/// Opens `n` streams at once on one handshaken connection, against an upstream that never
/// answers; returns the connection, the frames read until GOAWAY or `refused_enough`
/// refusals, and the number of `REFUSED_STREAM` resets among them.
async fn open_streams(
    gw: &modegate::RunningApp,
    n: u32,
    refused_enough: usize,
) -> (H2Raw, Vec<Frame>, usize) {
    let mut h2 = H2Raw::handshaken(gw.proxy_addr).await;
    let block = get_block("/v1/projects/p/apps");
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
    }
    let writer = h2.send_in_background(burst);
    let mut refused = 0usize;
    let frames = h2
        .read_until(Duration::from_secs(20), |f| {
            if f.kind == RST_STREAM && f.error_code() == Some(REFUSED_STREAM) {
                refused += 1;
            }
            f.kind == GOAWAY || refused >= refused_enough
        })
        .await;
    writer.abort();
    (h2, frames, refused)
}

#[tokio::test]
async fn streams_beyond_the_concurrency_limit_are_refused() {
    let up = holding_upstream().await;
    let gw = spawn(config_for(&up.url())).await;
    let (h2, frames, refused) = open_streams(&gw, 300, 300 - 256).await;
    assert_eq!(refused, 300 - 256, "the streams over 256 are refused");
    assert!(frames.iter().all(|f| f.kind != GOAWAY), "{frames:?}");
    assert_eventually(
        || up.seen().len() == 256,
        Duration::from_secs(20),
        "the 256 admitted streams reach the upstream",
    )
    .await;
    drop(h2);
    gw.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_streams_end_in_goaway_with_at_most_the_limit_upstream() {
    let up = holding_upstream().await;
    let gw = spawn(config_for(&up.url())).await;
    let (_h2, frames, refused) = open_streams(&gw, 10_000, usize::MAX).await;
    let goaway = frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .expect("the connection is closed with GOAWAY");
    assert_eq!(goaway.error_code(), Some(ENHANCE_YOUR_CALM));
    // Refusals count as the server's own stream errors; their limit closes the connection.
    assert_eq!(refused, 1_024, "refused until the local reset limit");
    let seen = up.seen().len();
    assert!(
        seen <= 256,
        "{seen} streams reached the upstream; the limit is 256"
    );
    gw.shutdown().await;
}

/// Writes `unit` repeatedly to a connection that never reads its answers; returns the bytes
/// written before the writes stopped making progress (or the connection closed).
async fn flood_until_backpressure(h2: &H2Raw, unit: &[u8], cap: usize) -> usize {
    use tokio::io::AsyncWriteExt;
    let batch: Vec<u8> = unit.repeat(4096);
    let mut written = 0usize;
    let mut write = h2.write.lock().await;
    while written < cap {
        match tokio::time::timeout(Duration::from_secs(2), write.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            // Closed by the gateway, or no progress for two seconds: either way bounded.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    written
}

#[tokio::test]
async fn ping_and_settings_floods_meet_backpressure() {
    let up = Upstream::ok().await;
    let gw = spawn(config_for(&up.url())).await;
    // Kernel buffers on both sides hold about 10 MiB here; a gateway that queued every answer
    // would keep reading for ever.
    const CAP: usize = 64 << 20;
    for unit in [frame(PING, 0, 0, b"flood..."), frame(SETTINGS, 0, 0, &[])] {
        let h2 = H2Raw::handshaken(gw.proxy_addr).await;
        let written = flood_until_backpressure(&h2, &unit, CAP).await;
        assert!(
            written < CAP,
            "the gateway read {written} bytes of {:?} frames without being read from",
            unit[3]
        );
        still_serves(&gw).await;
    }
    gw.shutdown().await;
}
