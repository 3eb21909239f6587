//! The upstream side: a pooled hyper-util client (rustls with webpki roots for https, ALPN h2,
//! plain http for the simulator and tests), URI mapping onto the configured origin, and timeouts.
//!
//! Only origins derived from config are ever contacted: the request's own `Host` or authority
//! never choose where a request goes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamSettings;
use crate::metrics::UpstreamErrorKind;

/// Body of requests sent upstream and of responses sent to clients: streamed as received, or a
/// buffer the gateway built (rewritten bodies, error answers).
pub type GatewayBody = Either<Incoming, Full<Bytes>>;

/// Scheme, authority and path prefix of an upstream origin.
#[derive(Clone, Debug)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

impl Origin {
    /// The origin of an absolute http(s) URL (its path, without a trailing `/`, is a prefix).
    pub fn from_uri(uri: &Uri) -> Option<Origin> {
        Some(Origin {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// Host and port, as the upstream sees them.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The upstream URI for an origin-form path and query.
    pub fn uri(&self, path_and_query: &PathAndQuery) -> Uri {
        let pq = if self.prefix.is_empty() {
            path_and_query.clone()
        } else {
            // The prefix comes from a validated URL and the rest from a parsed request target,
            // so the concatenation is a valid path.
            PathAndQuery::try_from(format!("{}{}", self.prefix, path_and_query.as_str()))
                .unwrap_or_else(|_| path_and_query.clone())
        };
        Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
            parts.path_and_query = Some(pq);
            parts
        })
        .unwrap_or_else(|_| Uri::from_static("/"))
    }
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub struct UpstreamFailure {
    /// Classification for metrics and status.
    pub kind: UpstreamErrorKind,
    /// Internal detail, for logs only.
    pub detail: String,
}

/// The pooled upstream client.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, GatewayBody>,
    request_timeout: Duration,
}

impl UpstreamClient {
    /// Builds the client from `[upstream]` settings.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(https);
        Self {
            client,
            request_timeout: settings.request_timeout,
        }
    }

    /// Sends one request and waits for the response head (bounded by the request timeout). The
    /// response body streams afterwards. Returns the response and the time to its head.
    pub async fn send(
        &self,
        mut request: Request<GatewayBody>,
    ) -> Result<(Response<Incoming>, Duration), UpstreamFailure> {
        // The pooled client picks HTTP/1.1 or (via ALPN) HTTP/2 itself; an h2c client's request
        // version must not leak into that choice.
        *request.version_mut() = Version::HTTP_11;
        let started = Instant::now();
        match tokio::time::timeout(self.request_timeout, self.client.request(request)).await {
            Err(_) => Err(UpstreamFailure {
                kind: UpstreamErrorKind::Timeout,
                detail: format!("no response head within {:?}", self.request_timeout),
            }),
            Ok(Err(e)) => Err(UpstreamFailure {
                kind: if e.is_connect() {
                    UpstreamErrorKind::Connect
                } else {
                    UpstreamErrorKind::Reset
                },
                detail: error_chain(&e),
            }),
            Ok(Ok(response)) => Ok((response, started.elapsed())),
        }
    }
}

/// `e: source: source…`, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_maps_paths_with_and_without_prefix() {
        let o = Origin::from_uri(&Uri::from_static("https://us.conversation.api.sinch.com"))
            .expect("origin");
        let pq = PathAndQuery::from_static("/v1/projects/p/messages?app_id=a");
        assert_eq!(
            o.uri(&pq).to_string(),
            "https://us.conversation.api.sinch.com/v1/projects/p/messages?app_id=a"
        );
        let o = Origin::from_uri(&Uri::from_static("http://127.0.0.1:9/base/")).expect("origin");
        assert_eq!(
            o.uri(&pq).to_string(),
            "http://127.0.0.1:9/base/v1/projects/p/messages?app_id=a"
        );
    }
}
