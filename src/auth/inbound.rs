//! Who may use a gateway that holds a key: the shared secret, and the local tokens the gateway
//! issues for it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use super::{constant_time_eq, Secret};

/// Lifetime of tokens the gateway issues to its own clients in inject mode.
const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(3_600);

/// Who may use a gateway that holds a key.
pub struct InboundAuth {
    secret: Option<Secret>,
    /// Signs tokens the gateway issues to its own clients.
    signing_key: Secret,
}

impl std::fmt::Debug for InboundAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundAuth")
            .field("shared_secret", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl InboundAuth {
    /// `secret` is the inbound shared secret; `None` admits every (loopback) client.
    pub fn new(secret: Option<Secret>) -> Self {
        Self {
            secret,
            signing_key: Secret(crate::ids::hex_id()),
        }
    }

    fn signature(&self, payload: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.signing_key.expose().as_bytes());
        h.update(b".");
        h.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(h.finalize())
    }

    fn valid_local_token(&self, token: &str) -> bool {
        let mut parts = token.splitn(3, '.');
        let (Some(head), Some(payload), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        if !constant_time_eq(
            self.signature(&format!("{head}.{payload}")).as_bytes(),
            sig.as_bytes(),
        ) {
            return false;
        }
        let exp = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .and_then(|v| v.get("exp").and_then(serde_json::Value::as_u64));
        exp.is_some_and(|exp| exp > unix_now())
    }

    /// Whether the shared secret was presented directly (Bearer, or as a Basic secret).
    fn presents_secret(&self, headers: &HeaderMap) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, rest)) = value.split_once(' ') else {
            return false;
        };
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return constant_time_eq(rest.as_bytes(), secret.expose().as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD
                .decode(rest)
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            return decoded
                .as_deref()
                .and_then(|d| d.split_once(':'))
                .is_some_and(|(_, s)| constant_time_eq(s.as_bytes(), secret.expose().as_bytes()));
        }
        false
    }

    /// Whether an API call may use the gateway's key.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        if self.secret.is_none() || self.presents_secret(headers) {
            return true;
        }
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .is_some_and(|t| self.valid_local_token(t.trim()))
    }

    /// Answers `POST /oauth2/token` for clients of a key-holding gateway: a JWT-shaped token
    /// (so the Node SDK can read `exp`) that stands for the shared secret.
    pub fn issue_local_token(&self, headers: &HeaderMap) -> Option<serde_json::Value> {
        if !self.presents_secret(headers) {
            return None;
        }
        let now = unix_now();
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"sub": "modegate-client", "iat": now, "exp": now + LOCAL_TOKEN_TTL.as_secs()}).to_string(),
        );
        let signed = format!("{head}.{payload}");
        let token = format!("{signed}.{}", self.signature(&signed));
        Some(serde_json::json!({
            "access_token": token,
            "expires_in": LOCAL_TOKEN_TTL.as_secs(),
            "scope": "",
            "token_type": "bearer",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    #[test]
    fn shared_secret_is_accepted_as_bearer_basic_or_issued_token() {
        let inbound = InboundAuth::new(Some(Secret::new("s3cret".into())));
        assert!(inbound.admits(&auth("Bearer s3cret")));
        let basic = format!("Basic {}", STANDARD.encode("anything:s3cret"));
        assert!(inbound.admits(&auth(&basic)));
        assert!(!inbound.admits(&auth("Bearer wrong")));
        assert!(!inbound.admits(&auth(&format!("Basic {}", STANDARD.encode("s3cret:wrong")))));
        assert!(!inbound.admits(&HeaderMap::new()));

        assert!(inbound.issue_local_token(&auth("Bearer wrong")).is_none());
        let issued = inbound.issue_local_token(&auth(&basic)).expect("token");
        let token = issued["access_token"].as_str().expect("token");
        assert_eq!(token.split('.').count(), 3);
        assert!(inbound.admits(&auth(&format!("Bearer {token}"))));
        let forged = format!("{}x", token);
        assert!(!inbound.admits(&auth(&format!("Bearer {forged}"))));
        let other = InboundAuth::new(Some(Secret::new("s3cret".into())));
        assert!(
            !other.admits(&auth(&format!("Bearer {token}"))),
            "tokens are per gateway"
        );
    }

    #[test]
    fn without_a_shared_secret_everyone_is_admitted() {
        let inbound = InboundAuth::new(None);
        assert!(inbound.admits(&HeaderMap::new()));
        assert!(inbound.issue_local_token(&HeaderMap::new()).is_some());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "<redacted>");
        let inbound = InboundAuth::new(Some(Secret::new("hunter2".into())));
        assert!(!format!("{inbound:?}").contains("hunter2"));
    }
}
