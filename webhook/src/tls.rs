//! The serving certificate: a rustls resolver swapped atomically, fed from PEM files polled for changes or from memory.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Why a certificate/key pair was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate PEM holds no CERTIFICATE block (or a broken one): {0}")]
    Certificate(String),
    #[error("the key PEM holds no PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1) or a broken one: {0}")]
    Key(String),
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
}

/// The current serving certificate; handshakes read it, reloads replace it whole.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Parses and installs a PEM certificate chain and key; on error the previous pair stays.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let certified = certified_key(cert_pem, key_pem)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Some(Arc::new(certified));
        Ok(())
    }

    /// Whether a certificate is installed (before that, handshakes fail).
    pub fn has_certificate(&self) -> bool {
        self.current.read().is_ok_and(|c| c.is_some())
    }

    /// The leaf certificate now served, DER-encoded.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().ok()?;
        current.as_ref()?.cert.first().cloned()
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1) resolving through this store.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("empty".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let signing_key = any_supported_type(&key).map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(certified)
}

/// Unix time at which a DER certificate expires, or `None` when it cannot be read.
pub fn not_after(certificate: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Sets `certificate_not_after_timestamp` from the leaf now served (certificate files have no bundle to say it).
pub fn record_expiry(store: &CertStore, metrics: &Metrics) {
    match store.leaf().as_ref().and_then(not_after) {
        Some(unix) => metrics.set_cert_not_after(unix),
        None => tracing::warn!(
            "cannot read the expiry of the serving certificate; certificate_not_after_timestamp stays 0"
        ),
    }
}

/// A certificate/key file pair, reloaded into a [`CertStore`] when its contents change.
#[derive(Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    last_digest: Option<[u8; 32]>,
}

impl CertFiles {
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            last_digest: None,
        }
    }

    /// Loads the pair if its contents differ from the last pair seen; `Ok(true)` when a new pair
    /// was installed. A bad pair leaves the store as it was and is not retried until the files change again.
    pub fn reload_if_changed(&mut self, store: &CertStore) -> Result<bool, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        };
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let digest: [u8; 32] = Sha256::new()
            .chain_update(&cert)
            .chain_update(&key)
            .finalize()
            .into();
        if self.last_digest == Some(digest) {
            return Ok(false);
        }
        self.last_digest = Some(digest);
        store.set_pem(&cert, &key)?;
        Ok(true)
    }
}

/// Polls `files` every `interval` until `shutdown`, installing changed pairs; the first load happened before.
pub async fn watch_files(
    mut files: CertFiles,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match files.reload_if_changed(&store) {
            Ok(true) => {
                metrics.cert_reloaded(true);
                record_expiry(&store, &metrics);
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
            }
            Ok(false) => {}
            Err(error) => {
                metrics.cert_reloaded(false);
                tracing::warn!(%error, "new serving certificate rejected; still serving the previous one");
            }
        }
    }
}
