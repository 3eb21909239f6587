//! Validation of the transport keys: TLS files, trust anchors and the egress proxy. Files are
//! read here, so a missing, non-PEM or mismatched file is a problem under its key before any
//! port is bound, and again on every reload.

use std::path::{Path, PathBuf};

use http::Uri;

use super::Problems;
use super::{ListenerTls, ProxySetting, TlsRoots};
use crate::tls;

/// A path from the file: absolute, found from the working directory, or else relative to the
/// config file's directory.
pub(super) fn config_relative(base_dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() || path.exists() {
        path
    } else {
        base_dir.join(path)
    }
}

/// `server.tls_cert_file` and `server.tls_key_file`: both or neither, readable, belonging
/// together.
pub(super) fn listener_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<ListenerTls> {
    match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            problems.add(
                "server.tls_key_file",
                "missing: server.tls_cert_file is set, so the key file is needed too",
            );
            None
        }
        (None, Some(_)) => {
            problems.add(
                "server.tls_cert_file",
                "missing: server.tls_key_file is set, so the certificate file is needed too",
            );
            None
        }
        (Some(cert), Some(key)) => {
            let files = ListenerTls {
                cert_file: config_relative(base_dir, cert),
                key_file: config_relative(base_dir, key),
            };
            let cert_ok = match tls::read_certificates(&files.cert_file) {
                Ok(_) => true,
                Err(e) => {
                    problems.add("server.tls_cert_file", e);
                    false
                }
            };
            let key_ok = match tls::read_private_key(&files.key_file) {
                Ok(_) => true,
                Err(e) => {
                    problems.add("server.tls_key_file", e);
                    false
                }
            };
            if cert_ok && key_ok {
                if let Err(e) = tls::certified_key(&files.cert_file, &files.key_file) {
                    problems.add("server.tls_key_file", e);
                }
            }
            Some(files)
        }
    }
}

/// `upstream.tls_roots`.
pub(super) fn tls_roots(value: &str, problems: &mut Problems) -> TlsRoots {
    match value {
        "webpki" => TlsRoots::Webpki,
        "system" => TlsRoots::System,
        other => {
            problems.add(
                "upstream.tls_roots",
                format!("{other:?} is not one of \"webpki\", \"system\""),
            );
            TlsRoots::Webpki
        }
    }
}

/// `upstream.ca_file`: a readable PEM file of certificates usable as trust anchors.
pub(super) fn ca_file(
    path: Option<PathBuf>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<PathBuf> {
    let path = config_relative(base_dir, path?);
    let anchors = tls::read_certificates(&path).and_then(|certs| {
        tls::root_store(TlsRoots::Webpki, &certs)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    if let Err(e) = anchors {
        problems.add("upstream.ca_file", e);
    }
    Some(path)
}

/// `upstream.proxy_url`: `"none"`, or `http://host:port` without credentials (they belong in
/// the environment). The value is never echoed, since a mistaken one may hold a password.
pub(super) fn proxy(value: Option<&str>, problems: &mut Problems) -> ProxySetting {
    let key = "upstream.proxy_url";
    let Some(value) = value else {
        return ProxySetting::Environment;
    };
    if value == "none" {
        return ProxySetting::Disabled;
    }
    match proxy_uri(value) {
        Ok(uri) => ProxySetting::Url(uri),
        Err(ProxyUrlError::Credentials) => {
            problems.add(
                key,
                "holds credentials; the file must not: set them in HTTPS_PROXY (http://user:password@host:port) and leave proxy_url unset",
            );
            ProxySetting::Disabled
        }
        Err(e) => {
            problems.add(key, e.to_string());
            ProxySetting::Disabled
        }
    }
}

/// Why a proxy URL cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    /// Not a URL at all.
    #[error("is not a URL (expected http://host:port, or \"none\")")]
    NotUrl,
    /// A scheme other than http.
    #[error("must be an http:// proxy (the gateway speaks CONNECT to it; https and socks proxies are not supported)")]
    Scheme,
    /// No host or port.
    #[error("must name the proxy's host and port (http://host:port)")]
    NoHostPort,
    /// A path or query.
    #[error("must be only scheme, host and port (no path or query)")]
    Path,
    /// `user:password@` in the URL.
    #[error("holds credentials")]
    Credentials,
}

/// A proxy URL as the gateway uses it: `http://host:port/`, userinfo refused. A value without a
/// scheme is read as http, as curl does.
pub fn proxy_uri(value: &str) -> Result<Uri, ProxyUrlError> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let uri: Uri = with_scheme.parse().map_err(|_| ProxyUrlError::NotUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(ProxyUrlError::Scheme);
    }
    let authority = uri.authority().ok_or(ProxyUrlError::NoHostPort)?;
    if authority.as_str().contains('@') {
        return Err(ProxyUrlError::Credentials);
    }
    if authority.host().is_empty() || authority.port_u16().is_none() {
        return Err(ProxyUrlError::NoHostPort);
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ProxyUrlError::Path);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_checked_without_echoing_them() {
        assert!(proxy_uri("http://proxy.corp:3128").is_ok());
        assert!(proxy_uri("proxy.corp:3128").is_ok());
        assert_eq!(proxy_uri("https://proxy:443"), Err(ProxyUrlError::Scheme));
        assert_eq!(proxy_uri("socks5://proxy:1080"), Err(ProxyUrlError::Scheme));
        assert_eq!(
            proxy_uri("http://u:secret@proxy:3128"),
            Err(ProxyUrlError::Credentials)
        );
        assert_eq!(proxy_uri("http://proxy"), Err(ProxyUrlError::NoHostPort));
        assert_eq!(proxy_uri("http://proxy:3128/x"), Err(ProxyUrlError::Path));
        let mut problems = Problems(Vec::new());
        proxy(Some("http://u:secret@proxy:3128"), &mut problems);
        assert_eq!(problems.0.len(), 1);
        assert!(!problems.0[0].message.contains("secret"));
    }
}
