//! The gateway's own upstream calls: `GET app` (mode lookups, credential checks) and
//! `GET contact` (contact-to-identity rewrites), made with the caller's credentials through the
//! gateway's [`Upstream`].

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::contact_cache::{ContactLookup, ContactOutcome, Identity};
use crate::domain::{LookupFailure, Operation, ProcessingMode, UpstreamErrorKind};
use crate::metrics::Metrics;
use crate::mode_cache::{BoxFuture, LookupOutcome, ModeLookup};
use crate::upstream::{self, full, Origin, Upstream};

/// Largest lookup answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Lookups through the gateway's upstream.
#[derive(Clone)]
pub struct UpstreamLookup {
    upstream: Upstream,
    origin: Origin,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for UpstreamLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLookup")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

enum Answer {
    Json(Value),
    Status(StatusCode),
    Failed(UpstreamErrorKind),
}

impl UpstreamLookup {
    /// Lookups against `origin`.
    pub fn new(upstream: Upstream, origin: Origin, metrics: Arc<Metrics>) -> Self {
        Self {
            upstream,
            origin,
            metrics,
        }
    }

    async fn get(&self, path: String, op: Operation, authorization: Option<HeaderValue>) -> Answer {
        let Ok(pq) = PathAndQuery::try_from(path) else {
            return Answer::Status(StatusCode::NOT_FOUND);
        };
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(self.origin.uri(&pq))
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("modegate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = authorization {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        let Ok(request) = builder.body(full(bytes::Bytes::new())) else {
            return Answer::Failed(UpstreamErrorKind::Reset);
        };
        let response = match upstream::call(&self.upstream, &self.metrics, op, request).await {
            Ok((r, _)) => r,
            Err(failure) => {
                tracing::warn!(operation = op.as_str(), error = %failure.detail, "lookup failed");
                return Answer::Failed(failure.kind);
            }
        };
        let status = response.status();
        if status.is_server_error() {
            return Answer::Failed(UpstreamErrorKind::Status5xx);
        }
        if status != StatusCode::OK {
            return Answer::Status(status);
        }
        match Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
        {
            Ok(body) => match serde_json::from_slice(&body.to_bytes()) {
                Ok(v) => Answer::Json(v),
                Err(_) => Answer::Failed(UpstreamErrorKind::Reset),
            },
            Err(_) => Answer::Failed(UpstreamErrorKind::Reset),
        }
    }
}

/// The `processing_mode` of an App object.
pub fn mode_of(app: &Value) -> Option<ProcessingMode> {
    app.get("processing_mode")?.as_str()?.parse().ok()
}

fn refused(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    )
}

impl ModeLookup for UpstreamLookup {
    fn app_mode(
        &self,
        project: &str,
        app: &str,
        authorization: Option<HeaderValue>,
    ) -> BoxFuture<LookupOutcome> {
        let this = self.clone();
        let path = format!("/v1/projects/{project}/apps/{app}");
        Box::pin(async move {
            match this.get(path, Operation::GetApp, authorization).await {
                Answer::Json(v) => match mode_of(&v) {
                    Some(mode) => LookupOutcome::Found(mode),
                    None => {
                        LookupOutcome::Failed(LookupFailure::Upstream(UpstreamErrorKind::Reset))
                    }
                },
                Answer::Status(s) if refused(s) => LookupOutcome::Denied(s),
                Answer::Status(s) => LookupOutcome::Failed(LookupFailure::Status(s)),
                Answer::Failed(kind) => LookupOutcome::Failed(LookupFailure::Upstream(kind)),
            }
        })
    }
}

impl ContactLookup for UpstreamLookup {
    fn contact(
        &self,
        project: &str,
        contact: &str,
        authorization: Option<HeaderValue>,
    ) -> BoxFuture<ContactOutcome> {
        let this = self.clone();
        let path = format!("/v1/projects/{project}/contacts/{contact}");
        Box::pin(async move {
            match this.get(path, Operation::GetContact, authorization).await {
                Answer::Json(v) => {
                    let identities = v
                        .get("channel_identities")
                        .and_then(Value::as_array)
                        .map(|ids| {
                            ids.iter()
                                .filter_map(|i| {
                                    Some(Identity {
                                        channel: i.get("channel")?.as_str()?.to_string(),
                                        identity: i.get("identity")?.as_str()?.to_string(),
                                    })
                                })
                                .filter(|i| !i.channel.is_empty() && !i.identity.is_empty())
                                .collect()
                        })
                        .unwrap_or_default();
                    ContactOutcome::Found(Arc::new(identities))
                }
                Answer::Status(StatusCode::NOT_FOUND) => ContactOutcome::NotFound,
                Answer::Status(s) if refused(s) => ContactOutcome::Denied,
                Answer::Status(s) => ContactOutcome::Failed(LookupFailure::Status(s)),
                Answer::Failed(kind) => ContactOutcome::Failed(LookupFailure::Upstream(kind)),
            }
        })
    }
}
