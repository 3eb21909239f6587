//! The simulator's OAuth2 token endpoint and credential checks.
//!
//! Tokens are JWT-shaped (`header.payload.signature`, numeric `exp` and `iat`) because the Node
//! SDK decodes `exp` to refresh early; the simulator remembers what it issued and checks tokens
//! by lookup.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::seed::SeedCredential;
use crate::api_error::ApiError;

/// Why a call was refused.
#[derive(Debug)]
pub(crate) struct AuthFailure {
    /// The error answer.
    pub(crate) error: ApiError,
    /// The `WWW-Authenticate` value.
    pub(crate) challenge: HeaderValue,
}

#[derive(Debug)]
struct Issued {
    key_id: String,
    expires_at: SystemTime,
}

/// Credentials and issued tokens.
#[derive(Debug)]
pub(crate) struct Authority {
    credentials: Vec<SeedCredential>,
    token_ttl: Duration,
    issued: HashMap<String, Issued>,
    signing_key: String,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

fn unauthenticated(description: Option<&str>) -> AuthFailure {
    let challenge = match description {
        Some(d) => format!("Bearer error=\"invalid_token\", error_description=\"{d}\""),
        None => "Bearer error=\"invalid_token\"".to_string(),
    };
    AuthFailure {
        error: ApiError::new(StatusCode::UNAUTHORIZED, "Request had invalid credentials."),
        challenge: HeaderValue::try_from(challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
    }
}

impl Authority {
    /// From the seed's credentials.
    pub(crate) fn new(credentials: Vec<SeedCredential>, token_ttl: Duration) -> Self {
        Self {
            credentials,
            token_ttl,
            issued: HashMap::new(),
            signing_key: crate::ids::hex_id(),
        }
    }

    fn credential(&self, id: &str, secret: &str) -> Option<&SeedCredential> {
        self.credentials
            .iter()
            .find(|c| c.key_id == id && c.key_secret == secret)
    }

    /// `POST /oauth2/token`: Basic key id and secret, `grant_type=client_credentials`.
    pub(crate) fn issue(
        &mut self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<serde_json::Value, (StatusCode, serde_json::Value)> {
        let grant = form_urlencoded::parse(body)
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.into_owned());
        if grant.as_deref() != Some("client_credentials") {
            return Err((
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "unsupported_grant_type",
                    "error_description": "grant_type must be client_credentials"}),
            ));
        }
        let key_id = match basic(headers) {
            Some((id, secret)) if self.credential(&id, &secret).is_some() => id,
            _ => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "invalid_client",
                        "error_description": "client authentication failed"}),
                ))
            }
        };
        let now = SystemTime::now();
        let expires_at = now + self.token_ttl;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"sub": key_id, "iat": unix(now), "exp": unix(expires_at),
                "jti": crate::ids::ulid()})
            .to_string(),
        );
        let signature = URL_SAFE_NO_PAD.encode(Sha256::digest(
            format!("{}.{header}.{payload}", self.signing_key).as_bytes(),
        ));
        let token = format!("{header}.{payload}.{signature}");
        self.issued
            .retain(|_, t| t.expires_at + Duration::from_secs(3_600) > now);
        self.issued
            .insert(token.clone(), Issued { key_id, expires_at });
        Ok(serde_json::json!({
            "access_token": token,
            "expires_in": self.token_ttl.as_secs(),
            "scope": "",
            "token_type": "bearer",
        }))
    }

    /// Checks an API call's `Authorization` (Bearer token or Basic key) for `project`.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        project: Option<&str>,
    ) -> Result<(), AuthFailure> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthenticated(None))?;
        let key_id = if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            let issued = self
                .issued
                .get(token.trim())
                .ok_or_else(|| unauthenticated(None))?;
            if issued.expires_at <= SystemTime::now() {
                return Err(unauthenticated(Some("token expired")));
            }
            issued.key_id.clone()
        } else {
            match basic(headers) {
                Some((id, secret)) if self.credential(&id, &secret).is_some() => id,
                _ => return Err(unauthenticated(None)),
            }
        };
        if let Some(project) = project {
            let allowed = self
                .credentials
                .iter()
                .find(|c| c.key_id == key_id)
                .is_some_and(|c| c.projects.is_empty() || c.projects.iter().any(|p| p == project));
            if !allowed {
                return Err(AuthFailure {
                    error: ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("the key has no access to project {project}"),
                    ),
                    challenge: HeaderValue::from_static("Bearer"),
                });
            }
        }
        Ok(())
    }

    /// Makes every issued token expired (test control: exercise re-authentication).
    pub(crate) fn expire_all(&mut self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for t in self.issued.values_mut() {
            t.expires_at = past;
        }
    }
}
