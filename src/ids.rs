//! Identifier generation for request ids, decision ids and simulator resources.
//!
//! Ids only need to be unique and unguessable enough to correlate logs, so a per-process random
//! key mixed with a counter through SipHash (std's `RandomState`) is plenty and costs no syscall
//! per request.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn keys() -> &'static (RandomState, RandomState) {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    KEYS.get_or_init(|| (RandomState::new(), RandomState::new()))
}

fn next_u128() -> u128 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = keys();
    let mut ha = a.build_hasher();
    ha.write_u64(n);
    let mut hb = b.build_hasher();
    hb.write_u64(n);
    (u128::from(ha.finish()) << 64) | u128::from(hb.finish())
}

/// A new 32-character lowercase hex id (128 unpredictable bits): decision ids, signing keys.
pub fn hex_id() -> String {
    format!("{:032x}", next_u128())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A new 32-character lowercase hex request id: 128 random-looking bits (a SipHash of a counter
/// under per-process random keys). Unique, cheap (two hashes, no syscall), and unguessable.
pub fn request_id() -> http::HeaderValue {
    // Every id is its own keyed hash of a counter: unpredictable from any other id, so a
    // caller cannot guess (or collide with) another request's id.
    let value = next_u128();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((value >> ((31 - i) * 4)) & 0xF) as usize];
    }
    // Hex digits are always a valid header value.
    http::HeaderValue::from_bytes(&out).unwrap_or_else(|_| http::HeaderValue::from_static("0"))
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new 26-character ULID-shaped id (48-bit millisecond time + 80 random bits, Crockford
/// base32), the shape the Conversation API uses for apps, messages and contacts.
pub fn ulid() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80) | (next_u128() >> 48);
    let mut out = String::with_capacity(26);
    for i in (0..26).rev() {
        let idx = ((value >> (i * 5)) & 0x1F) as usize;
        out.push(char::from(CROCKFORD[idx]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn hex_ids_are_unique_and_well_formed() {
        let ids: HashSet<String> = (0..10_000).map(|_| hex_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let ids: HashSet<String> = (0..10_000)
            .map(|_| request_id().to_str().expect("ascii").to_string())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| HEX.contains(&b))));
    }

    #[test]
    fn request_ids_do_not_follow_each_other() {
        let a = u128::from_str_radix(request_id().to_str().expect("ascii"), 16).expect("hex");
        let b = u128::from_str_radix(request_id().to_str().expect("ascii"), 16).expect("hex");
        // A counter behind a fixed prefix would differ in its last digits only.
        assert_ne!(a >> 64, b >> 64, "ids share a prefix: {a:032x} {b:032x}");
        assert!(a.abs_diff(b) > 1_000_000);
    }

    #[test]
    fn ulids_are_unique_and_crockford() {
        let ids: HashSet<String> = (0..10_000).map(|_| ulid()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.len(), 26);
            assert!(id.bytes().all(|b| CROCKFORD.contains(&b)), "{id}");
        }
    }
}
