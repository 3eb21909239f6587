//! `[auth] mode = "inject"`: the gateway holds an access key and authenticates upstream itself.
//!
//! - [`TokenSource`] obtains OAuth2 client-credentials tokens from `token_url`, caches one,
//!   refreshes it before expiry with a single coalesced fetch, and drops it when upstream says
//!   it expired.
//! - [`InboundAuth`] decides who may use a key-holding gateway: with `inbound_token_env` set,
//!   callers must present that shared secret (as a Bearer token, as the secret of Basic
//!   credentials, or as a token the gateway's own `/oauth2/token` issued for it); compared in
//!   constant time. Without it, config validation has already required a loopback listener.
//!
//! Secrets and tokens never reach logs, metrics or error bodies: `Debug` impls redact them.

mod inbound;
mod token;

use http::{header, HeaderMap};

pub use inbound::InboundAuth;
pub use token::{TokenFailure, TokenSource};

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret from the environment variable `name`.
pub fn secret_from_env(name: &str) -> Result<Secret, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret(v)),
        Ok(_) => Err(format!("environment variable {name} is empty")),
        Err(_) => Err(format!("environment variable {name} is not set")),
    }
}

/// Whether a 401's `WWW-Authenticate` says the token expired (what the SDKs re-authenticate on).
pub fn says_expired(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("expired")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn expired_challenges_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer error=\"invalid_token\", error_description=\"token expired\"",
            ),
        );
        assert!(says_expired(&h));
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        assert!(!says_expired(&h));
    }
}
