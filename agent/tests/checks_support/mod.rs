//! Local HTTP(S) and gRPC health servers and a throw-away PKI for the endpoint, socket and probe tests.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tonic_health::ServingStatus;
use tower::Service;

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["probe.local".into()]);
        Self {
            ca_cert: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            dir,
        }
    }

    /// A server certificate that is its own CA (`CA:TRUE`, self-signed, as `openssl req -x509` makes), for
    /// localhost/127.0.0.1, valid from `not_before` to `not_after` (days from now); written as `own-ca.pem`.
    pub fn self_signed_ca_server(&self, not_before: i64, not_after: i64) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(not_before);
        params.not_after = now + time::Duration::days(not_after);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = self.dir.path().join("own-ca.pem");
        let key_path = self.dir.path().join("own-ca-key.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// The server side of this PKI (ALPN h2 and http/1.1), asking for a client certificate when `require_client_cert`.
    pub fn server_config(&self, require_client_cert: bool) -> rustls::ServerConfig {
        Self::config_for(
            &self.server_cert,
            &self.server_key,
            require_client_cert.then_some(&self.ca_cert),
        )
    }

    fn config_for(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&PathBuf>,
    ) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if let Some(client_ca) = client_ca {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(client_ca).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// Counts what the server saw, so tests can check concurrency and caching.
#[derive(Default)]
pub struct Counters {
    pub hits: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// A local server with a few routes:
/// `/ok`, `/status/NNN`, `/slow/MS` (answers 200 after MS milliseconds of tokio time), `/hang`, `/redirect/NNN?to=PATH` (to itself without `to`), `/big`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub scheme: &'static str,
    pub counters: Arc<Counters>,
}

impl TestServer {
    pub async fn plain() -> Self {
        Self::start(None).await
    }

    pub async fn tls(pki: &Pki) -> Self {
        Self::start(Some(pki.server_config(false))).await
    }

    pub async fn mtls(pki: &Pki) -> Self {
        Self::start(Some(pki.server_config(true))).await
    }

    /// A TLS server presenting the given certificate and key.
    pub async fn tls_with(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start(Some(Pki::config_for(cert, key, None))).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Same as `url` but with the name `localhost`, which the test certificate holds.
    pub fn named_url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme, self.addr.port())
    }

    async fn start(tls: Option<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(|config| TlsAcceptor::from(Arc::new(config)));
        let shared = counters.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let counters = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, counters.clone()));
                    if let Some(io) = accepted(stream, acceptor.as_ref()).await {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            counters,
        }
    }
}

/// Restores the in-flight count even when the client gives up and the handler is dropped.
struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    req: Request<Incoming>,
    counters: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counters.hits.fetch_add(1, Ordering::SeqCst);
    let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(counters.clone());
    let path = req.uri().path().to_owned();
    let respond = |status: u16, body: &str| {
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let response = if path == "/ok" {
        respond(200, "ok")
    } else if let Some(code) = path.strip_prefix("/status/") {
        respond(code.parse().unwrap(), "as asked")
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        respond(200, "slow but ok")
    } else if path == "/hang" {
        std::future::pending::<()>().await;
        unreachable!()
    } else if let Some(code) = path.strip_prefix("/redirect/") {
        let to = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("to="))
            .unwrap_or(&path)
            .to_owned();
        let mut response = respond(code.parse().unwrap(), "moved");
        response
            .headers_mut()
            .insert(http::header::LOCATION, to.parse().unwrap());
        response
    } else if path == "/big" {
        respond(200, &"x".repeat(1024 * 1024))
    } else {
        respond(404, "not found")
    };
    Ok(response)
}

/// A real grpc.health.v1 server (tonic-health's) on loopback, HTTP/2 only: `service` reports `status`, the server
/// as a whole (`""`) is SERVING; TLS (or mTLS) with a config from [`Pki::server_config`]. It keeps the request
/// headers of every call.
pub struct GrpcHealthServer {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<HeaderMap>>>,
}

impl GrpcHealthServer {
    pub async fn start(
        service: &str,
        status: ServingStatus,
        tls: Option<rustls::ServerConfig>,
    ) -> Self {
        let (reporter, server) = tonic_health::server::health_reporter();
        reporter.set_service_status(service, status).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.map(|config| TlsAcceptor::from(Arc::new(config)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        tokio::spawn(async move {
            let _reporter = reporter;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        seen.lock().unwrap().push(request.headers().clone());
                        let mut server = server.clone();
                        async move { Ok::<_, Infallible>(server.call(request).await.unwrap()) }
                    });
                    if let Some(io) = accepted(stream, acceptor.as_ref()).await {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .http2_only()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        Self { addr, calls }
    }

    /// The request headers of the last call the server received.
    pub fn last_call(&self) -> Option<HeaderMap> {
        self.calls.lock().unwrap().last().cloned()
    }
}

/// An accepted connection, through TLS when `acceptor` is set; `None` when the TLS handshake failed.
async fn accepted(
    stream: TcpStream,
    acceptor: Option<&TlsAcceptor>,
) -> Option<TokioIo<Either<TlsStream<TcpStream>, TcpStream>>> {
    let stream = match acceptor {
        Some(acceptor) => Either::Left(acceptor.accept(stream).await.ok()?),
        None => Either::Right(stream),
    };
    Some(TokioIo::new(stream))
}
