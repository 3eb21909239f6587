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

use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use sha2::{Digest, Sha256};

use crate::metrics::UpstreamErrorKind;
use crate::proxy::forward::UpstreamClient;

/// Lifetime of tokens the gateway issues to its own clients in inject mode.
const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(3_600);

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

/// Why no token could be had.
#[derive(Debug)]
pub struct TokenFailure {
    /// For the status: timeout → 504, anything else → 502.
    pub kind: UpstreamErrorKind,
    /// Internal detail, for the log (never the key or a token).
    pub detail: String,
}

#[derive(Clone)]
struct CachedToken {
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

/// The gateway's upstream access token.
pub struct TokenSource {
    client: UpstreamClient,
    token_uri: Uri,
    basic: HeaderValue,
    current: RwLock<Option<CachedToken>>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source using the key `key_id` / `key_secret` against `token_uri`.
    pub fn new(
        client: UpstreamClient,
        token_uri: Uri,
        key_id: &Secret,
        key_secret: &Secret,
    ) -> Self {
        let basic = STANDARD.encode(format!("{}:{}", key_id.expose(), key_secret.expose()));
        let mut basic = HeaderValue::try_from(format!("Basic {basic}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        basic.set_sensitive(true);
        Self {
            client,
            token_uri,
            basic,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, now: Instant) -> Option<HeaderValue> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|t| now < t.refresh_at)
            .map(|t| t.header.clone())
    }

    /// The `Authorization` value to send upstream: the cached token, or a fresh one fetched by
    /// exactly one caller while the others wait for it.
    pub async fn authorization(&self) -> Result<HeaderValue, TokenFailure> {
        if let Some(h) = self.cached(Instant::now()) {
            return Ok(h);
        }
        let _guard = self.refresh.lock().await;
        if let Some(h) = self.cached(Instant::now()) {
            return Ok(h);
        }
        let fetched = self.fetch().await;
        match fetched {
            Ok(token) => {
                let header = token.header.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(token);
                Ok(header)
            }
            Err(e) => {
                // An unexpired token is still better than none while the endpoint struggles.
                let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
                match guard.as_ref().filter(|t| Instant::now() < t.expires_at) {
                    Some(t) => Ok(t.header.clone()),
                    None => Err(e),
                }
            }
        }
    }

    /// Drops `failed` if it is still the cached token (upstream said it expired).
    pub fn invalidate(&self, failed: &HeaderValue) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|t| t.header == *failed) {
            *guard = None;
        }
    }

    async fn fetch(&self) -> Result<CachedToken, TokenFailure> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.token_uri.clone())
            .header(header::AUTHORIZATION, self.basic.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Either::Right(Full::new(Bytes::from_static(
                b"grant_type=client_credentials",
            ))))
            .map_err(|e| TokenFailure {
                kind: UpstreamErrorKind::Reset,
                detail: e.to_string(),
            })?;
        let started = Instant::now();
        let (response, _) = self.client.send(request).await.map_err(|f| TokenFailure {
            kind: f.kind,
            detail: format!("token endpoint: {}", f.detail),
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| TokenFailure {
                kind: UpstreamErrorKind::Reset,
                detail: format!("token endpoint body: {e}"),
            })?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(TokenFailure {
                kind: UpstreamErrorKind::Status5xx,
                detail: format!("token endpoint answered {status}"),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| TokenFailure {
            kind: UpstreamErrorKind::Reset,
            detail: "token endpoint answer is not JSON".into(),
        })?;
        let token = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty());
        let expires_in = v
            .get("expires_in")
            .and_then(|t| t.as_u64())
            .unwrap_or(3_600);
        let Some(token) = token else {
            return Err(TokenFailure {
                kind: UpstreamErrorKind::Reset,
                detail: "token endpoint answer has no access_token".into(),
            });
        };
        let mut header =
            HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| TokenFailure {
                kind: UpstreamErrorKind::Reset,
                detail: "token endpoint answered an unusable token".into(),
            })?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(expires_in);
        // Refresh a minute early, or halfway through a short-lived token.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        tracing::info!(expires_in, "obtained an upstream access token");
        Ok(CachedToken {
            header,
            refresh_at: started + lifetime - margin,
            expires_at: started + lifetime,
        })
    }
}

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

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
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
