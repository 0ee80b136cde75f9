//! TLS client options shared by endpoint checks and the probe: compiled-in web roots, extra CA, mTLS, server name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use healthbridge_contract::env;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;

/// TLS client flags; every one also an environment variable for the sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM file with extra CA certificates to trust, on top of the compiled-in web roots.
    #[arg(
        long,
        env = env::TLS_CA_CERT,
        value_name = "FILE"
    )]
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate chain presented to servers that ask for a client certificate (mTLS); needs --client-key.
    #[arg(
        long,
        env = env::TLS_CLIENT_CERT,
        value_name = "FILE"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = env::TLS_CLIENT_KEY,
        value_name = "FILE"
    )]
    pub client_key: Option<PathBuf>,
    /// Name to verify the server certificate against (and send as SNI) instead of the URL's host.
    #[arg(
        long,
        env = env::TLS_SERVER_NAME,
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for debugging: the connection is encrypted but not authenticated.
    #[arg(long, env = env::TLS_INSECURE_SKIP_VERIFY)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--client-cert is set but --client-key is not: give both for mTLS, or neither")]
    CertWithoutKey,
    #[error("--client-key is set but --client-cert is not: give both for mTLS, or neither")]
    KeyWithoutCert,
    #[error(
        "--insecure-skip-verify and --ca-cert contradict each other: a CA is only used to verify; drop one of them"
    )]
    InsecureWithCa,
    #[error(
        "--insecure-skip-verify and --server-name contradict each other: the name is only used to verify; drop one of them"
    )]
    InsecureWithServerName,
    #[error("--server-name `{0}` is not a valid DNS name or IP address")]
    BadServerName(String),
    #[error("{flag} {path}: cannot read PEM: {source}")]
    Pem {
        flag: &'static str,
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error(
        "{flag} {path}: no certificate found in the file (expected -----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate { flag: &'static str, path: String },
    #[error("--ca-cert {path}: certificate rejected: {source}")]
    BadCa { path: String, source: rustls::Error },
    #[error(
        "--client-cert/--client-key: the key does not fit the certificate or is unsupported: {0}"
    )]
    BadClientIdentity(rustls::Error),
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A validated TLS client set-up, ready to build connectors from.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
}

impl ClientTlsArgs {
    /// Checks the combination of flags and loads every file, so mistakes show up at start-up.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => return Err(TlsError::CertWithoutKey),
            (None, Some(_)) => return Err(TlsError::KeyWithoutCert),
            _ => {}
        }
        if self.insecure_skip_verify && self.ca_cert.is_some() {
            return Err(TlsError::InsecureWithCa);
        }
        if self.insecure_skip_verify && self.server_name.is_some() {
            return Err(TlsError::InsecureWithServerName);
        }
        let server_name = self
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|_| TlsError::BadServerName(name.to_owned()))
            })
            .transpose()?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let roots = if self.insecure_skip_verify {
            None
        } else {
            let (roots, pinned) = self.roots()?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|error| TlsError::Rustls(rustls::Error::General(error.to_string())))?;
            Some(Roots { webpki, pinned })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier {
                roots,
                algorithms: provider.signature_verification_algorithms,
            }));
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("--client-cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
                    flag: "--client-key",
                    path: key.display().to_string(),
                    source,
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsError::BadClientIdentity)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The web roots plus the CA file; the CA file's certificates are also kept whole, for servers that present one of them as their own.
    fn roots(&self) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut pinned = Vec::new();
        if let Some(path) = &self.ca_cert {
            for cert in read_certs("--ca-cert", path)? {
                roots.add(cert.clone()).map_err(|source| TlsError::BadCa {
                    path: path.display().to_string(),
                    source,
                })?;
                pinned.push(cert);
            }
        }
        Ok((roots, pinned))
    }
}

impl ClientTls {
    /// An HTTP and HTTPS connector using this set-up (HTTP/1.1 and HTTP/2); plain `http://` URLs stay plain.
    pub fn connector(&self) -> HttpsConnector<HttpConnector> {
        let builder = self.builder();
        builder
            .enable_http1()
            .enable_http2()
            .wrap_connector(Self::http())
    }

    /// Like `connector`, but offers only HTTP/1.1 in ALPN, for callers that speak HTTP/1.1 on the connection themselves.
    pub fn http1_connector(&self) -> HttpsConnector<HttpConnector> {
        self.builder().enable_http1().wrap_connector(Self::http())
    }

    /// HTTP/2 only (ALPN `h2` for https://; prior knowledge for plain http://), for gRPC.
    pub fn http2_connector(&self) -> HttpsConnector<HttpConnector> {
        self.builder().enable_http2().wrap_connector(Self::http())
    }

    fn http() -> HttpConnector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http
    }

    fn builder(
        &self,
    ) -> hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_or_http();
        match &self.server_name {
            Some(name) => {
                builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
            }
            None => builder,
        }
    }
}

fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        flag,
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Verifies against the roots as usual; a server certificate that is itself in the CA file (a self-signed
/// certificate marked `CA:TRUE`, as `openssl req -x509` makes by default) is accepted as pinned, as Go's
/// verifier does: still checked for the server name and its validity period. Without roots
/// (`--insecure-skip-verify`) any certificate is accepted. Either way the handshake signature is checked, so the
/// peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct ServerVerifier {
    roots: Option<Roots>,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct Roots {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerVerifier {
    fn verify_pinned(
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bad_encoding = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
        let (_, parsed) =
            x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| bad_encoding())?;
        let at = i64::try_from(now.as_secs())
            .ok()
            .and_then(|secs| x509_parser::time::ASN1Time::from_timestamp(secs).ok())
            .ok_or_else(bad_encoding)?;
        let validity = parsed.validity();
        if at < validity.not_before {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        if at > validity.not_after {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        webpki::EndEntityCert::try_from(end_entity)
            .and_then(|cert| cert.verify_is_valid_for_subject_name(server_name))
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        match roots.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_) if roots.pinned.iter().any(|cert| cert == end_entity) => {
                Self::verify_pinned(end_entity, server_name, now)
            }
            Err(error) => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One line naming why a TLS connection failed and what fixes it; `None` for errors that are not TLS.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut link = Some(error);
    while let Some(current) = link {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(explain_rustls(tls));
        }
        // hyper-rustls wraps the rustls error in io::Errors, whose source() skips the wrapped error itself.
        link = match current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

/// The fix for a TLS alert known only by its text: h2 keeps an I/O error's message but not the error (TLS 1.3
/// reports a refused client certificate on the first read, inside HTTP/2).
pub fn explain_alert_text(message: &str) -> Option<String> {
    let fix = if message.contains("fatal alert: CertificateRequired") {
        "the server requires a client certificate (mTLS): give --client-cert and --client-key \
         (HTTP_HEALTHCHECK_SIDECAR_TLS_CLIENT_CERT/_KEY)"
    } else if [
        "BadCertificate",
        "UnknownCA",
        "CertificateUnknown",
        "AccessDenied",
    ]
    .iter()
    .any(|alert| message.contains(&format!("fatal alert: {alert}")))
    {
        "the server rejected our client certificate: give one signed by a CA the server trusts"
    } else {
        return None;
    };
    Some(format!("TLS: {message}: {fix}"))
}

fn explain_rustls(error: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    let fix = match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA: give that CA (or the server's own certificate) \
                 with --ca-cert / HTTP_HEALTHCHECK_SIDECAR_TLS_CA_CERT"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not hold the name the URL uses: connect by a name in the certificate, \
                 or set --server-name / HTTP_HEALTHCHECK_SIDECAR_TLS_SERVER_NAME to one"
            }
            CertificateError::BadSignature => {
                "the server's certificate does not verify with the trusted CA of its issuer's name (another key: a \
                 re-created or rotated CA?): give the CA that signed it with --ca-cert / HTTP_HEALTHCHECK_SIDECAR_TLS_CA_CERT"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: renew it on the server"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check this machine's clock and the certificate's notBefore"
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the server's certificate is not for server authentication (extendedKeyUsage lacks serverAuth): reissue it"
            }
            CertificateError::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
                "the server presents a CA certificate as its own: list that very certificate in --ca-cert \
                 (it is then trusted as pinned), or give the server a certificate signed by the CA"
            }
            _ => {
                "the server's certificate was rejected: check it with `openssl s_client -connect HOST:PORT -showcerts`"
            }
        },
        rustls::Error::AlertReceived(Alert::CertificateRequired | Alert::HandshakeFailure) => {
            "the server requires a client certificate (mTLS): give --client-cert and --client-key \
             (HTTP_HEALTHCHECK_SIDECAR_TLS_CLIENT_CERT/_KEY)"
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::AccessDenied,
        ) => {
            "the server rejected our client certificate: give one signed by a CA the server trusts"
        }
        rustls::Error::AlertReceived(Alert::ProtocolVersion) => {
            "the server speaks no TLS version we allow (1.2 or 1.3): upgrade the server's TLS"
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer with TLS: use http:// for a plain-text server, or check the port"
        }
        _ => "TLS handshake failed",
    };
    format!("TLS: {error}: {fix}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args() -> ClientTlsArgs {
        ClientTlsArgs::default()
    }

    #[test]
    fn no_flags_gives_verified_tls_with_web_roots() {
        let tls = args().load().unwrap();
        assert!(tls.server_name.is_none());
        assert!(!tls.config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_client_cert_without_a_key_is_rejected() {
        let err = ClientTlsArgs {
            client_cert: Some("c.pem".into()),
            ..args()
        }
        .load()
        .unwrap_err();
        assert!(matches!(err, TlsError::CertWithoutKey), "{err}");
    }

    #[test]
    fn a_client_key_without_a_cert_is_rejected() {
        let err = ClientTlsArgs {
            client_key: Some("k.pem".into()),
            ..args()
        }
        .load()
        .unwrap_err();
        assert!(matches!(err, TlsError::KeyWithoutCert), "{err}");
    }

    #[test]
    fn skipping_verification_contradicts_a_ca_or_a_server_name() {
        let insecure = ClientTlsArgs {
            insecure_skip_verify: true,
            ..args()
        };
        assert!(insecure.load().is_ok());
        let with_ca = ClientTlsArgs {
            ca_cert: Some("ca.pem".into()),
            ..insecure.clone()
        };
        assert!(matches!(
            with_ca.load().unwrap_err(),
            TlsError::InsecureWithCa
        ));
        let with_name = ClientTlsArgs {
            server_name: Some("app".into()),
            ..insecure
        };
        assert!(matches!(
            with_name.load().unwrap_err(),
            TlsError::InsecureWithServerName
        ));
    }

    #[test]
    fn a_bad_server_name_is_named() {
        let err = ClientTlsArgs {
            server_name: Some("not a name".into()),
            ..args()
        }
        .load()
        .unwrap_err();
        assert!(err.to_string().contains("`not a name`"), "{err}");
    }

    #[test]
    fn missing_or_empty_ca_files_are_errors_naming_the_flag() {
        let missing = ClientTlsArgs {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..args()
        }
        .load()
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("--ca-cert /nonexistent/ca.pem"),
            "{missing}"
        );
        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = ClientTlsArgs {
            ca_cert: Some(empty.path().into()),
            ..args()
        }
        .load()
        .unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NoCertificate {
                    flag: "--ca-cert",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_generated_ca_and_client_identity_load() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
        let tls = ClientTlsArgs {
            ca_cert: Some(cert.clone()),
            client_cert: Some(cert),
            client_key: Some(key),
            server_name: Some("localhost".into()),
            insecure_skip_verify: false,
        }
        .load()
        .unwrap();
        assert!(tls.config.client_auth_cert_resolver.has_certs());
        assert_eq!(
            tls.server_name,
            Some(ServerName::try_from("localhost").unwrap())
        );
    }
}
