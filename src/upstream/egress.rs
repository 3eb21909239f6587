//! How upstream connections leave the host: directly, or through an HTTP proxy's CONNECT
//! tunnel (TLS to the upstream then runs inside the tunnel, so the proxy sees only the host
//! name and port).
//!
//! The proxy comes from `upstream.proxy_url`, or else from `HTTPS_PROXY` / `https_proxy` and
//! `NO_PROXY` / `no_proxy` as curl reads them (hyper-util's matcher applies the `NO_PROXY`
//! rules); `HTTP_PROXY` is not read, so plain-http upstreams such as a local simulator are
//! only proxied when `proxy_url` says so. Proxy credentials come only from the environment
//! variable and are sent as `Proxy-Authorization: Basic` on CONNECT.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::BoxError;
use crate::config::transport::proxy_uri;
use crate::config::ProxySetting;

/// The proxy decision, made once at start.
#[derive(Clone, Default)]
pub struct Egress {
    matcher: Option<Arc<Matcher>>,
    /// `host:port` of the proxy, for logs (never its credentials).
    proxy: Option<String>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Reads the first set, non-empty variable of `names`.
fn first_var(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|name| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name.to_string(), v.trim().to_string()))
    })
}

impl Egress {
    /// Resolves `setting` against the environment `env` (a lookup such as `std::env::var`).
    /// An unusable proxy variable is an error naming the variable, never echoing its value.
    pub fn resolve(
        setting: &ProxySetting,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Egress, String> {
        match setting {
            ProxySetting::Disabled => Ok(Egress::default()),
            ProxySetting::Url(uri) => Ok(Egress {
                proxy: uri.authority().map(|a| a.to_string()),
                matcher: Some(Arc::new(Matcher::builder().all(uri.to_string()).build())),
            }),
            ProxySetting::Environment => {
                let Some((name, value)) = first_var(env, &["HTTPS_PROXY", "https_proxy"]) else {
                    return Ok(Egress::default());
                };
                // Credentials are allowed here (and only here): check the rest of the URL.
                let without_credentials = match value.rsplit_once('@') {
                    Some((before, host)) => match before.split_once("://") {
                        Some((scheme, _)) => format!("{scheme}://{host}"),
                        None => host.to_string(),
                    },
                    None => value.clone(),
                };
                let checked = proxy_uri(&without_credentials)
                    .map_err(|e| format!("{name} (from the environment) {e}"))?;
                let no = first_var(env, &["NO_PROXY", "no_proxy"])
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                let with_scheme = if value.contains("://") {
                    value
                } else {
                    format!("http://{value}")
                };
                Ok(Egress {
                    proxy: checked.authority().map(|a| a.to_string()),
                    matcher: Some(Arc::new(
                        Matcher::builder().https(with_scheme).no(no).build(),
                    )),
                })
            }
        }
    }

    /// The proxy's `host:port`, when one is in use for some upstream.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref()
    }

    /// Whether connections to `uri` go through the proxy.
    pub fn proxies(&self, uri: &Uri) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|m| m.intercept(uri).is_some())
    }

    /// The connector: TCP to the destination, or TCP to the proxy and a CONNECT tunnel.
    pub fn connector(&self, tcp: HttpConnector) -> EgressConnector {
        EgressConnector {
            tcp,
            matcher: self.matcher.clone(),
        }
    }
}

/// A connector that tunnels through the proxy where the matcher says so.
#[derive(Clone)]
pub struct EgressConnector {
    tcp: HttpConnector,
    matcher: Option<Arc<Matcher>>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for EgressConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self.matcher.as_ref().and_then(|m| m.intercept(&dst));
        let mut tcp = self.tcp.clone();
        match intercept {
            None => Box::pin(async move { tcp.call(dst).await.map_err(Into::into) }),
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), tcp);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let dst = with_port(dst);
                Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
            }
        }
    }
}

/// The tunnel asks for `host:port` and assumes 443 without a port; an http destination
/// without one means port 80.
fn with_port(dst: Uri) -> Uri {
    if dst.port().is_some() || dst.scheme_str() != Some("http") {
        return dst;
    }
    let Some(host) = dst.host() else {
        return dst;
    };
    format!("http://{host}:80/").parse().unwrap_or(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn uri(s: &str) -> Uri {
        s.parse().expect("uri")
    }

    #[test]
    fn environment_proxy_applies_to_https_minus_no_proxy() {
        let e = Egress::resolve(
            &ProxySetting::Environment,
            &env(&[
                ("HTTPS_PROXY", "http://user:p%40ss@proxy.corp:3128"),
                ("NO_PROXY", "internal.corp, 10.0.0.0/8"),
            ]),
        )
        .expect("usable");
        assert_eq!(e.proxy(), Some("proxy.corp:3128"));
        assert!(e.proxies(&uri("https://us.conversation.api.sinch.com/")));
        assert!(!e.proxies(&uri("https://api.internal.corp/")));
        assert!(!e.proxies(&uri("https://10.1.2.3/")));
        // HTTP_PROXY is not read: plain-http upstreams stay direct.
        assert!(!e.proxies(&uri("http://127.0.0.1:9000/")));
        let lower = Egress::resolve(
            &ProxySetting::Environment,
            &env(&[("https_proxy", "proxy:8080")]),
        )
        .expect("usable");
        assert_eq!(lower.proxy(), Some("proxy:8080"));
    }

    #[test]
    fn configured_proxy_applies_to_everything_and_none_ignores_the_environment() {
        let e = Egress::resolve(
            &ProxySetting::Url(uri("http://proxy:3128/")),
            &env(&[("NO_PROXY", "*")]),
        )
        .expect("usable");
        assert!(e.proxies(&uri("https://eu.conversation.api.sinch.com/")));
        assert!(e.proxies(&uri("http://127.0.0.1:9000/")));
        let off = Egress::resolve(
            &ProxySetting::Disabled,
            &env(&[("HTTPS_PROXY", "http://proxy:3128")]),
        )
        .expect("usable");
        assert!(!off.proxies(&uri("https://eu.conversation.api.sinch.com/")));
        assert_eq!(off.proxy(), None);
        let unset = Egress::resolve(&ProxySetting::Environment, &env(&[])).expect("usable");
        assert_eq!(unset.proxy(), None);
    }

    #[test]
    fn unusable_proxy_variables_are_named_without_their_value() {
        let err = Egress::resolve(
            &ProxySetting::Environment,
            &env(&[("HTTPS_PROXY", "socks5://user:hunter2@proxy:1080")]),
        )
        .expect_err("socks is not supported");
        assert!(
            err.starts_with("HTTPS_PROXY (from the environment)"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = Egress::resolve(
            &ProxySetting::Environment,
            &env(&[("https_proxy", "http://proxy")]),
        )
        .expect_err("no port");
        assert!(err.starts_with("https_proxy"), "{err}");
    }

    #[test]
    fn http_destinations_get_an_explicit_port_for_the_tunnel() {
        assert_eq!(
            with_port(uri("http://sim.local/x")).to_string(),
            "http://sim.local:80/"
        );
        assert_eq!(
            with_port(uri("https://api.example/")).to_string(),
            "https://api.example/"
        );
    }
}
