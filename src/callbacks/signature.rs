//! Sinch webhook signatures: `base64(HMAC-SHA256(secret, body + "." + nonce + "." +
//! timestamp))` in `x-sinch-webhook-signature`, with the nonce, the Unix-second timestamp and
//! the algorithm (`HmacSHA256`) in three more headers. Checked in constant time over the exact
//! bytes received; the simulator and the re-signing of forwarded callbacks use the same code.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// The signature header.
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-sinch-webhook-signature");
/// The nonce header.
pub const NONCE: HeaderName = HeaderName::from_static("x-sinch-webhook-signature-nonce");
/// The timestamp header (Unix seconds).
pub const TIMESTAMP: HeaderName = HeaderName::from_static("x-sinch-webhook-signature-timestamp");
/// The algorithm header.
pub const ALGORITHM: HeaderName = HeaderName::from_static("x-sinch-webhook-signature-algorithm");
/// The only algorithm Sinch uses.
pub const HMAC_SHA256: &str = "HmacSHA256";
/// Longest nonce accepted (Sinch's are 26-character ULIDs).
const MAX_NONCE: usize = 128;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], body: &[u8], nonce: &str, timestamp: &str) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac
}

/// The signature of `body` under `secret`, as the header carries it.
pub fn sign(secret: &[u8], body: &[u8], nonce: &str, timestamp: &str) -> String {
    STANDARD.encode(mac(secret, body, nonce, timestamp).finalize().into_bytes())
}

/// Whether `signature` (base64) signs `body` under `secret`; compared in constant time.
pub fn verify(secret: &[u8], body: &[u8], nonce: &str, timestamp: &str, signature: &str) -> bool {
    let Ok(raw) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(secret, body, nonce, timestamp)
        .verify_slice(&raw)
        .is_ok()
}

/// The four headers of a callback signed with `secret` now, with a fresh nonce.
pub fn signed_headers(secret: &[u8], body: &[u8]) -> [(HeaderName, HeaderValue); 4] {
    let nonce = crate::ids::ulid();
    let timestamp = unix_now().to_string();
    let signature = sign(secret, body, &nonce, &timestamp);
    // Base64, ULID and decimal characters are all valid header values.
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    [
        (SIGNATURE, value(&signature)),
        (NONCE, value(&nonce)),
        (TIMESTAMP, value(&timestamp)),
        (ALGORITHM, HeaderValue::from_static(HMAC_SHA256)),
    ]
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A webhook's secrets: verify with any, sign with the first.
#[derive(Clone)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Why a signed callback is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A header is missing or malformed, or the signature does not match.
    BadSignature,
    /// Authentic, but its timestamp is outside the window.
    Stale,
}

impl Secrets {
    /// Comma-separated secrets as the environment variable holds them.
    pub fn parse(text: &str) -> Result<Secrets, String> {
        let secrets: Vec<Vec<u8>> = text
            .split(',')
            .map(str::trim)
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if secrets.iter().any(Vec::is_empty) {
            return Err(
                "holds an empty secret (expected one secret, or several comma-separated)".into(),
            );
        }
        Ok(Secrets(secrets))
    }

    /// The secret new signatures are made with.
    pub fn signing(&self) -> &[u8] {
        &self.0[0]
    }

    /// Checks a callback's signature headers against its raw body: all three present, the
    /// algorithm (when sent) `HmacSHA256`, the signature made by one of the secrets, and the
    /// timestamp within `max_skew_secs` of `now`. Returns the nonce.
    pub fn check<'h>(
        &self,
        headers: &'h HeaderMap,
        body: &[u8],
        now: i64,
        max_skew_secs: u64,
    ) -> Result<&'h str, Refusal> {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(nonce), Some(timestamp)) =
            (text(&SIGNATURE), text(&NONCE), text(&TIMESTAMP))
        else {
            return Err(Refusal::BadSignature);
        };
        if text(&ALGORITHM).is_some_and(|a| a != HMAC_SHA256)
            || nonce.is_empty()
            || nonce.len() > MAX_NONCE
        {
            return Err(Refusal::BadSignature);
        }
        let Ok(seconds) = timestamp.parse::<i64>() else {
            return Err(Refusal::BadSignature);
        };
        if !self
            .0
            .iter()
            .any(|secret| verify(secret, body, nonce, timestamp, signature))
        {
            return Err(Refusal::BadSignature);
        }
        if now.abs_diff(seconds) > max_skew_secs {
            return Err(Refusal::Stale);
        }
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The .NET SDK's test vector (conversation-api.md §8).
    const BODY: &str = r#"{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z","project_id":"e2df3a34-a71b-4448-9db5-a8d2baad28e4","contact_create_notification":{"contact":{"id":"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":[{"channel":"SMS","identity":"48123456789","app_id":""}],"display_name":"New Test Contact","email":"new.contact@email.com","external_id":"","metadata":"","language":"EN_US"}},"message_metadata":""}"#;
    const NONCE_V: &str = "01FJA8B4A7BM43YGWSG9GBV067";
    const TS: &str = "1634579353";
    const SIG: &str = "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE=";

    fn headers(sig: &str, nonce: &str, ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE, HeaderValue::from_str(sig).expect("value"));
        h.insert(NONCE, HeaderValue::from_str(nonce).expect("value"));
        h.insert(TIMESTAMP, HeaderValue::from_str(ts).expect("value"));
        h.insert(ALGORITHM, HeaderValue::from_static(HMAC_SHA256));
        h
    }

    #[test]
    fn the_dotnet_test_vector_verifies() {
        assert_eq!(sign(b"foo_secret1234", BODY.as_bytes(), NONCE_V, TS), SIG);
        let secrets = Secrets::parse("rotated-in, foo_secret1234").expect("secrets");
        let h = headers(SIG, NONCE_V, TS);
        assert_eq!(
            secrets.check(&h, BODY.as_bytes(), 1_634_579_353 + 10, 300),
            Ok(NONCE_V)
        );
    }

    #[test]
    fn a_changed_byte_header_or_secret_is_refused() {
        let s = Secrets::parse("foo_secret1234").expect("secrets");
        let now = 1_634_579_353;
        let mut body = BODY.as_bytes().to_vec();
        body[10] ^= 1;
        assert_eq!(
            s.check(&headers(SIG, NONCE_V, TS), &body, now, 300),
            Err(Refusal::BadSignature)
        );
        for h in [
            headers(SIG, "01FJA8B4A7BM43YGWSG9GBV068", TS),
            headers(SIG, NONCE_V, "1634579354"),
            headers("not base64!", NONCE_V, TS),
        ] {
            assert_eq!(
                s.check(&h, BODY.as_bytes(), now, 300),
                Err(Refusal::BadSignature)
            );
        }
        let mut h = headers(SIG, NONCE_V, TS);
        h.remove(&NONCE);
        assert_eq!(
            s.check(&h, BODY.as_bytes(), now, 300),
            Err(Refusal::BadSignature)
        );
        let mut h = headers(SIG, NONCE_V, TS);
        h.insert(ALGORITHM, HeaderValue::from_static("HmacSHA1"));
        assert_eq!(
            s.check(&h, BODY.as_bytes(), now, 300),
            Err(Refusal::BadSignature)
        );
        let other = Secrets::parse("bar").expect("secrets");
        assert_eq!(
            other.check(&headers(SIG, NONCE_V, TS), BODY.as_bytes(), now, 300),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn the_window_bounds_both_directions() {
        let s = Secrets::parse("foo_secret1234").expect("secrets");
        let h = headers(SIG, NONCE_V, TS);
        let ts = 1_634_579_353;
        for now in [ts - 300, ts, ts + 300] {
            assert!(s.check(&h, BODY.as_bytes(), now, 300).is_ok(), "{now}");
        }
        for now in [ts - 301, ts + 301] {
            assert_eq!(
                s.check(&h, BODY.as_bytes(), now, 300),
                Err(Refusal::Stale),
                "{now}"
            );
        }
    }

    #[test]
    fn fresh_headers_verify_and_secrets_stay_out_of_debug() {
        let s = Secrets::parse("new-secret,old-secret").expect("secrets");
        let mut h = HeaderMap::new();
        for (k, v) in signed_headers(s.signing(), b"{}") {
            h.insert(k, v);
        }
        assert!(s.check(&h, b"{}", unix_now(), 5).is_ok());
        let only_old = Secrets::parse("old-secret").expect("secrets");
        assert_eq!(
            only_old.check(&h, b"{}", unix_now(), 5),
            Err(Refusal::BadSignature)
        );
        assert!(!format!("{s:?}").contains("new-secret"));
        assert!(Secrets::parse("a,,b").is_err());
        assert!(Secrets::parse("").is_err());
    }
}
