//! Callbacks per second through the callback listener's own work on one thread: verify the
//! signature, reserve and confirm the nonce, fill pseudo ids, sign again. HTTP is left out (the
//! listener serves connections as the proxy does, measured in bench/results.md).
//!
//! `cargo run --release --example callback_throughput -- [seconds]` (bench/callbacks.sh pins it
//! to one core and writes bench/callbacks.md).

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use modegate::callbacks::fill::fill;
use modegate::callbacks::replay::ReplayGuard;
use modegate::callbacks::signature::{self, Secrets};
use modegate::pseudo_ids::PseudoIds;

const SECRET: &str = "bench-webhook-secret";

fn body(i: u64) -> String {
    format!(
        "{{\"app_id\":\"01HAPP00000000000000000000\",\"accepted_time\":\"2026-12-07T10:00:00.000Z\",\"event_time\":\"2026-12-07T10:00:00.000Z\",\"project_id\":\"e2df3a34-a71b-4448-9db5-a8d2baad28e4\",\"message\":{{\"id\":\"01HMSG{i:020}\",\"direction\":\"TO_APP\",\"contact_message\":{{\"text_message\":{{\"text\":\"Hello, is my order on its way?\"}}}},\"channel_identity\":{{\"channel\":\"SMS\",\"identity\":\"4670{:07}\",\"app_id\":\"01HAPP00000000000000000000\"}},\"conversation_id\":\"\",\"contact_id\":\"\",\"metadata\":\"\",\"accept_time\":\"2026-12-07T10:00:00.000Z\",\"sender_id\":\"\",\"processing_mode\":\"DISPATCH\",\"injected\":false}},\"message_metadata\":\"\",\"correlation_id\":\"\"}}",
        i % 10_000
    )
}

/// Signed callbacks with distinct nonces, made before the clock starts.
fn signed(n: u64, offset: u64) -> Vec<(HeaderMap, Vec<u8>)> {
    let now = signature::unix_now().to_string();
    (offset..offset + n)
        .map(|i| {
            let b = body(i).into_bytes();
            let nonce = format!("N{i:025}");
            let mut h = HeaderMap::new();
            let sig = signature::sign(SECRET.as_bytes(), &b, &nonce, &now);
            let v = |s: &str| HeaderValue::from_str(s).expect("header value");
            h.insert(signature::SIGNATURE, v(&sig));
            h.insert(signature::NONCE, v(&nonce));
            h.insert(signature::TIMESTAMP, v(&now));
            h.insert(signature::ALGORITHM, v(signature::HMAC_SHA256));
            (h, b)
        })
        .collect()
}

async fn run(seconds: u64, with_fill: bool) -> (u64, f64) {
    let secrets = Secrets::parse(SECRET).expect("secret");
    let ids = PseudoIds::from_keys(&"ab".repeat(32)).expect("keys");
    let guard = ReplayGuard::new(
        "/sinch/events",
        Duration::from_secs(300),
        Duration::from_secs(10),
        None,
    );
    let budget = Duration::from_secs(seconds);
    let mut done = 0u64;
    let mut busy = Duration::ZERO;
    let mut filled_bytes = 0usize;
    while busy < budget {
        let batch = signed(20_000, done);
        let started = Instant::now();
        for (headers, bytes) in &batch {
            let now = signature::unix_now();
            let nonce = secrets.check(headers, bytes, now, 300).expect("verifies");
            let reservation = guard.reserve(nonce).await.expect("fresh nonce");
            let out = if with_fill {
                fill(bytes, &ids).expect("filled")
            } else {
                bytes.clone()
            };
            let resigned = signature::signed_headers(secrets.signing(), &out);
            filled_bytes += out.len() + resigned.len();
            reservation.confirm().await;
        }
        busy += started.elapsed();
        done += batch.len() as u64;
    }
    std::hint::black_box(filled_bytes);
    (done, done as f64 / busy.as_secs_f64())
}

fn main() {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for (name, with_fill) in [
            ("verify + nonce + fill + re-sign", true),
            ("verify + nonce + re-sign (fill_ids off)", false),
        ] {
            let (n, rate) = run(seconds, with_fill).await;
            println!("| {name} | {n} | {rate:.0} | {:.1} |", 1e6 / rate);
        }
    });
}
