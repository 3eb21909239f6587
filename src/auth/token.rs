//! The gateway's own upstream access token: fetched with the key, cached, refreshed early with
//! one coalesced fetch, dropped when upstream says it expired. Fetches go through the gateway's
//! [`Upstream`] and are observed like every other upstream call (`operation="oauth_token"`).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use super::Secret;
use crate::clock::Clock;
use crate::domain::{Operation, UpstreamErrorKind};
use crate::metrics::Metrics;
use crate::upstream::{self, full, Upstream};

/// Largest token answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

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
    upstream: Upstream,
    metrics: Arc<Metrics>,
    clock: Clock,
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
        upstream: Upstream,
        metrics: Arc<Metrics>,
        clock: Clock,
        token_uri: Uri,
        key_id: &Secret,
        key_secret: &Secret,
    ) -> Self {
        let basic = STANDARD.encode(format!("{}:{}", key_id.expose(), key_secret.expose()));
        let mut basic = HeaderValue::try_from(format!("Basic {basic}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        basic.set_sensitive(true);
        Self {
            upstream,
            metrics,
            clock,
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
        if let Some(h) = self.cached(self.clock.now()) {
            return Ok(h);
        }
        let _guard = self.refresh.lock().await;
        if let Some(h) = self.cached(self.clock.now()) {
            return Ok(h);
        }
        match self.fetch().await {
            Ok(token) => {
                let header = token.header.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(token);
                Ok(header)
            }
            Err(e) => {
                // An unexpired token is still better than none while the endpoint struggles.
                let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
                match guard.as_ref().filter(|t| self.clock.now() < t.expires_at) {
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
        let failure = |kind, detail: String| TokenFailure { kind, detail };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.token_uri.clone())
            .header(header::AUTHORIZATION, self.basic.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(full(&b"grant_type=client_credentials"[..]))
            .map_err(|e| failure(UpstreamErrorKind::Reset, e.to_string()))?;
        let started = self.clock.now();
        let (response, _) = upstream::call(
            &self.upstream,
            &self.metrics,
            Operation::OauthToken,
            request,
        )
        .await
        .map_err(|f| failure(f.kind, format!("token endpoint: {}", f.detail)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_TOKEN_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                failure(
                    UpstreamErrorKind::Reset,
                    format!("token endpoint body: {e}"),
                )
            })?
            .to_bytes();
        if status != StatusCode::OK {
            let kind = if status.is_server_error() {
                UpstreamErrorKind::Status5xx
            } else {
                UpstreamErrorKind::Reset
            };
            return Err(failure(kind, format!("token endpoint answered {status}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            failure(
                UpstreamErrorKind::Reset,
                "token endpoint answer is not JSON".into(),
            )
        })?;
        let Some(token) = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        else {
            return Err(failure(
                UpstreamErrorKind::Reset,
                "token endpoint answer has no access_token".into(),
            ));
        };
        let expires_in = v
            .get("expires_in")
            .and_then(|t| t.as_u64())
            .unwrap_or(3_600);
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            failure(
                UpstreamErrorKind::Reset,
                "token endpoint answered an unusable token".into(),
            )
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
