//! TLS material: the trust anchors for https upstreams, the proxy listener's certificate (swapped
//! in place on reload, so new connections get the new one and open ones keep theirs), and the
//! words a failed handshake is logged with.
//!
//! PEM files are parsed by `rustls-pki-types`, the OS trust store is read by
//! `rustls-native-certs`; the crypto provider is rustls' `ring` one. No OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Where the trust anchors for https upstreams come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRoots {
    /// The Mozilla roots bundled at build time (`webpki-roots`).
    Webpki,
    /// The operating system's store (on Linux the OpenSSL-style files, honouring
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
}

/// How often the proxy listener's certificate files are checked for changes.
pub const CERTIFICATE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The one crypto provider the gateway uses, client and server side.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The certificates of a PEM file, in order; an error names what is wrong with the file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    if !looks_like_pem(&bytes) {
        return Err(format!("{} is not a PEM file", path.display()));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificates (expected \"-----BEGIN CERTIFICATE-----\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    if !looks_like_pem(&bytes) {
        return Err(format!("{} is not a PEM file", path.display()));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no private key", path.display())
        }
        e => format!("{} is not valid PEM: {e}", path.display()),
    })
}

/// A root store from `roots` plus the certificates of `extra` (a private CA).
pub fn root_store(
    roots: TlsRoots,
    extra: &[CertificateDer<'static>],
) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        TlsRoots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "the system trust store has no usable certificates{why}"
                ));
            }
        }
    }
    for cert in extra {
        store
            .add(cert.clone())
            .map_err(|e| format!("a certificate cannot be used as a trust anchor: {e}"))?;
    }
    Ok(store)
}

/// The client configuration for https upstreams (ALPN is set by the connector).
pub fn client_config(
    roots: TlsRoots,
    extra: &[CertificateDer<'static>],
) -> Result<ClientConfig, String> {
    let store = root_store(roots, extra)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let chain = read_certificates(cert_file)?;
    let key = read_private_key(key_file)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key in {} does not belong to the certificate in {}",
            key_file.display(),
            cert_file.display()
        ),
        e => format!("{}: unusable key: {e}", key_file.display()),
    })
}

/// The current certificate of a listener, replaced in place on reload.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// TLS for the proxy listener: ALPN `h2` and `http/1.1`, a certificate that can be rotated.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<CurrentCertificate>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain and key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerTls, String> {
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified_key(
            cert_file, key_file,
        )?))));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Re-reads both files; on any problem the certificate in use stays.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), String> {
        let next = Arc::new(certified_key(cert_file, key_file)?);
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// The acceptor new connections are handshaken with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Checks both files every `interval` and loads them again when either changed (its
    /// modification time or size), so a certificate rotated on disk — cert-manager rewriting a
    /// mounted Secret — is served without a signal. A pair that does not load is logged once
    /// per change and the certificate in use stays. Runs until the task is dropped.
    pub async fn watch(self, cert_file: PathBuf, key_file: PathBuf, interval: Duration) {
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let mut seen = (stamp(&cert_file), stamp(&key_file));
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = (stamp(&cert_file), stamp(&key_file));
            if now == seen {
                continue;
            }
            seen = now;
            match self.reload(&cert_file, &key_file) {
                Ok(()) => tracing::info!("listener certificate changed on disk; reloaded"),
                Err(e) => tracing::warn!(
                    "listener certificate changed on disk but does not load; keeping the one in use: {e}"
                ),
            }
        }
    }
}

/// Why a connection failed at the TLS layer, in words for a log line (`None`: not a TLS
/// failure). Looks through the whole error chain, including I/O errors that wrap a rustls one
/// (possibly several deep: connectors wrap the TLS stream's I/O error again).
pub fn failure_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = find_rustls(e) {
            return Some(describe(tls));
        }
        next = e.source();
    }
    None
}

/// The rustls error `e` is, or wraps as an I/O error's payload.
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    find_rustls(inner)
}

fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "certificate signed by unknown authority".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate not valid for the upstream's host name".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::BadSignature => "certificate signature invalid".into(),
            other => format!("certificate rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => format!("the upstream sent TLS alert {alert:?}"),
        rustls::Error::NoApplicationProtocol => "no common ALPN protocol".into(),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the upstream does not speak TLS as expected ({error})")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_inside_io_errors_and_described() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            failure_reason(&io).as_deref(),
            Some("certificate signed by unknown authority")
        );
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(
            failure_reason(&expired).as_deref(),
            Some("certificate expired")
        );
        let nested = std::io::Error::other(io);
        assert_eq!(
            failure_reason(&nested).as_deref(),
            Some("certificate signed by unknown authority")
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(failure_reason(&plain), None);
    }

    #[test]
    fn files_that_are_not_pem_or_hold_no_certificates_are_named() {
        let dir = std::env::temp_dir().join(format!("modegate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, b"hello").expect("write");
        let err = read_certificates(&garbage).expect_err("not PEM");
        assert!(err.contains("is not a PEM file"), "{err}");
        let key_only = dir.join("key.pem");
        std::fs::write(
            &key_only,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let err = read_certificates(&key_only).expect_err("no certs");
        assert!(err.contains("holds no certificates"), "{err}");
        let err = read_certificates(&dir.join("missing.pem")).expect_err("missing");
        assert!(err.starts_with("cannot read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
