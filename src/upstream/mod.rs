//! The upstream seam (a top-level module so that `proxy` and `auth` share it without a cycle):
//! every request the gateway sends (forwarded calls, mode and contact
//! lookups, token fetches) goes through one [`Upstream`] — a tower service. In production it is
//! [`HyperUpstream`], a pooled client (rustls for https with the configured trust anchors, ALPN
//! h2 and http/1.1; plain http for the simulator and tests; an optional CONNECT proxy, see
//! [`egress`]; HTTP/1.1 on hyper or on the native client, see [`h1`]) with the request timeout;
//! tests inject any service, such as the simulator in-process.
//!
//! [`call`] is the one place an upstream exchange is timed and counted.
//!
//! Only origins derived from config are ever contacted: the request's own `Host` or authority
//! never choose where a request goes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

pub mod egress;
pub mod h1;
pub mod pool;

use crate::config::{Http1Engine, UpstreamSettings};
use crate::domain::{Operation, UpstreamErrorKind};
use crate::metrics::Metrics;

/// Errors a body may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body could not be read to its end (the client or the upstream broke off).
///
/// A named type rather than a bare `Box<dyn Error>`: trait-object lifetimes inside a body type
/// defeat the compiler's `Send` reasoning for the futures that hold such bodies.
#[derive(Debug)]
pub struct BodyError(BoxError);

impl BodyError {
    /// An error the gateway raises itself.
    pub fn new(message: impl Into<String>) -> Self {
        BodyError(message.into().into())
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The body of every request and response inside the gateway: streamed as received, or a
/// buffer the gateway built (rewritten bodies, error answers).
pub type GatewayBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// A body the gateway holds whole.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A `Full` body, boxed.
pub fn full_body(body: Full<Bytes>) -> GatewayBody {
    body.map_err(|never| match never {}).boxed_unsync()
}

/// Any body, boxed into a [`GatewayBody`].
pub fn boxed<B>(body: B) -> GatewayBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(|e| BodyError(e.into())).boxed_unsync()
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub struct UpstreamFailure {
    /// Classification for metrics and status.
    pub kind: UpstreamErrorKind,
    /// Internal detail, for logs only.
    pub detail: String,
}

/// The upstream as a service: a request in, the response head (body streaming) out.
pub type Upstream =
    BoxCloneSyncService<Request<GatewayBody>, Response<GatewayBody>, UpstreamFailure>;

/// Sends `request` through `upstream`, timing it as `operation` and counting failures and 5xx
/// answers. Returns the response and the time to its head.
pub async fn call(
    upstream: &Upstream,
    metrics: &Metrics,
    operation: Operation,
    request: Request<GatewayBody>,
) -> Result<(Response<GatewayBody>, Duration), UpstreamFailure> {
    let started = Instant::now();
    match upstream.clone().oneshot(request).await {
        Err(failure) => {
            metrics.upstream_error(failure.kind);
            Err(failure)
        }
        Ok(response) => {
            let elapsed = started.elapsed();
            metrics.record_upstream(operation, elapsed.as_secs_f64());
            if response.status().is_server_error() {
                metrics.upstream_error(UpstreamErrorKind::Status5xx);
            }
            Ok((response, elapsed))
        }
    }
}

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

/// How long an unused upstream HTTP/1.1 connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most bytes read ahead from one upstream HTTP/1 connection (so also the largest body chunk
/// relayed), and sent ahead on one upstream h2 stream. hyper's floor: API answers are small, and
/// each byte here is held for as long as a client stalls.
pub const UPSTREAM_READ_BUF: usize = 8 * 1024;
/// Receive window of one upstream h2 stream: what an upstream may send ahead of a client that
/// stopped reading (hyper's default is 2 MiB). The protocol's default, as Envoy recommends for
/// edge proxies; at 50 ms round trip it still moves about 1.3 MB/s per stream.
pub const UPSTREAM_H2_STREAM_WINDOW: u32 = 64 * 1024;
/// Receive window of one upstream h2 connection, shared by its streams (hyper's default: 5 MiB).
pub const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The production upstream: the connection pool ([`pool`]) with the request timeout.
#[derive(Clone, Debug)]
pub struct HyperUpstream {
    pool: pool::Pool,
    request_timeout: Duration,
}

impl HyperUpstream {
    /// Builds the client from `[upstream]` settings, the HTTP/1.1 engine
    /// (`server.http1_engine`) and the process environment (the proxy variables). Fails when
    /// the trust anchors or the proxy cannot be used; `check-config` reports the same problems
    /// (see [`HyperUpstream::problems`]).
    pub fn new(settings: &UpstreamSettings, engine: Http1Engine) -> Result<Self, String> {
        Self::with_env(settings, engine, &|name| std::env::var(name).ok())
    }

    /// What would keep [`HyperUpstream::new`] from building, as `(key, message)` pairs.
    pub fn problems(settings: &UpstreamSettings) -> Vec<(&'static str, String)> {
        let env = |name: &str| std::env::var(name).ok();
        let mut out = Vec::new();
        if let Err(e) = egress::Egress::resolve(&settings.proxy, &env) {
            out.push(("upstream.proxy_url", e));
        }
        if let Err(e) = client_tls(settings) {
            out.push(("upstream.tls_roots", e));
        }
        out
    }

    /// [`HyperUpstream::new`] with the environment read through `env`.
    pub fn with_env(
        settings: &UpstreamSettings,
        engine: Http1Engine,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let pooling = pool::PoolSettings {
            idle_timeout: POOL_IDLE_TIMEOUT,
            max_idle_per_host: settings.pool_max_idle_per_host,
            http1_engine: engine,
        };
        Self::with_pool(settings, env, pooling)
    }

    /// [`HyperUpstream::with_env`] with the pool's settings given.
    pub fn with_pool(
        settings: &UpstreamSettings,
        env: &dyn Fn(&str) -> Option<String>,
        pooling: pool::PoolSettings,
    ) -> Result<Self, String> {
        let egress = egress::Egress::resolve(&settings.proxy, env)?;
        if let Some(proxy) = egress.proxy() {
            tracing::info!(proxy, "upstream connections go through an HTTP proxy");
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(settings)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(egress.connector(http));
        // What a response costs while its client is slow to read: the upstream read buffer is
        // bounded (hyper's default is about 400 KiB), and backpressure reaches the upstream
        // socket (see `pool`).
        let pool = pool::Pool::new(https, pooling);
        Ok(Self {
            pool,
            request_timeout: settings.request_timeout,
        })
    }

    /// The connection pool (for inspection).
    pub fn pool(&self) -> &pool::Pool {
        &self.pool
    }

    /// This client as the gateway's [`Upstream`].
    pub fn into_upstream(self) -> Upstream {
        BoxCloneSyncService::new(self)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<GatewayBody>> for HyperUpstream {
    type Response = Response<GatewayBody>;
    type Error = UpstreamFailure;
    type Future = BoxFuture<Result<Response<GatewayBody>, UpstreamFailure>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Waits for the response head (bounded by the request timeout); the body streams after.
    /// The pool sets the version the connection speaks (HTTP/1.1, or h2 when ALPN chose it),
    /// whatever the client's own was.
    fn call(&mut self, request: Request<GatewayBody>) -> Self::Future {
        let timeout = self.request_timeout;
        let pool = self.pool.clone();
        let pending = async move { pool.send(request).await };
        Box::pin(async move {
            match tokio::time::timeout(timeout, pending).await {
                Err(_) => Err(UpstreamFailure {
                    kind: UpstreamErrorKind::Timeout,
                    detail: format!("no response head within {timeout:?}"),
                }),
                Ok(Err(e)) => Err(match crate::tls::failure_reason(&e) {
                    // The reason alone: certificate and address details stay out of it.
                    Some(reason) => UpstreamFailure {
                        kind: UpstreamErrorKind::Tls,
                        detail: format!("TLS with the upstream failed: {reason}"),
                    },
                    None => UpstreamFailure {
                        kind: match e {
                            pool::PoolError::Connect(_) | pool::PoolError::NoOrigin => {
                                UpstreamErrorKind::Connect
                            }
                            pool::PoolError::Send(_) => UpstreamErrorKind::Reset,
                        },
                        detail: error_chain(&e),
                    },
                }),
                Ok(Ok(response)) => Ok(response.map(boxed)),
            }
        })
    }
}

/// The rustls client configuration: the configured roots plus `ca_file`'s certificates.
fn client_tls(settings: &UpstreamSettings) -> Result<rustls::ClientConfig, String> {
    let extra = match &settings.ca_file {
        Some(path) => crate::tls::read_certificates(path)?,
        None => Vec::new(),
    };
    crate::tls::client_config(settings.tls_roots, &extra)
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
