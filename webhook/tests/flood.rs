//! The real webhook binary (`serve`, certificate files) under connection floods on loopback: 10,000 half-open
//! connections (silent, or a partial TLS ClientHello), then (fresh webhook) a slowloris of 1,000 connections that
//! finish the TLS handshake and then send a header byte every 2 s — the gap after the handshake timeout — while an
//! admission review keeps being answered and memory stays within the chart's 128Mi.
//!
//! A normal request runs every 100 ms; the test fails if two in a row fail (a load balancer counts a backend down
//! only after several failed checks) or if the server still holds the attack's connections 15 s after its timeouts.
//!
//! `cargo test` runs the debug binary, whose idle RSS is far above the release binary's, so what is checked is the
//! growth under attack against 128 MiB minus `BOUNDS.release_idle_kib`. The figures are printed (`--nocapture`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{fixture, review};
use futures::future::BoxFuture;
use healthbridge_runtime::flood::{
    Attacked, FloodBounds, Held, answers, half_open, half_open_connections, http1_status, slowloris,
};
use healthbridge_webhook::certs::CertBundle;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const BOUNDS: FloodBounds = FloodBounds {
    server: "webhook",
    request: "POST /mutate",
    // The webhook's memory limit in the chart.
    memory_limit_kib: 128 * 1024,
    // Idle RSS of the release webhook, rounded up generously.
    release_idle_kib: 16 * 1024,
    // The default connection bound of the webhook's listener.
    max_connections: 1024,
    slowloris_over: Some("TLS"),
};
const HALF_OPEN: usize = 10_000;
const SLOWLORIS: usize = 1_000;
/// The first bytes of a TLS record carrying a ClientHello, and no more.
const PARTIAL_CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01";
const PARTIAL_REQUEST: &[u8] = b"POST /mutate HTTP/1.1\r\nHost: x\r\n";

struct Webhook {
    child: Child,
    port: u16,
    admin_port: u16,
    /// When the serving certificate expires (Unix time).
    cert_not_after: i64,
    tls: TlsConnector,
    _dir: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Webhook {
    async fn start() -> Self {
        let bundle = CertBundle::generate(&["localhost".to_owned()], 1_790_000_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &bundle.cert).unwrap();
        std::fs::write(&key, &bundle.key).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_healthbridge-webhook"))
            .env_clear()
            .env("RUST_LOG", "warn")
            .args(["serve", "--agent-image", "img"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let webhook = Self {
            child,
            port,
            admin_port,
            cert_not_after: bundle.cert_not_after,
            tls: TlsConnector::from(Arc::new(config)),
            _dir: dir,
        };
        assert!(
            answers(200, || admit(webhook.tls.clone(), port)).await,
            "the webhook did not answer /mutate on port {port}"
        );
        webhook
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tcp(&self) -> impl Fn() -> BoxFuture<'static, std::io::Result<TcpStream>> + Clone + use<> {
        let port = self.port;
        move || Box::pin(TcpStream::connect(("127.0.0.1", port)))
    }

    fn tls(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, std::io::Result<TlsStream<TcpStream>>> + Clone + use<>
    {
        let (port, tls) = (self.port, self.tls.clone());
        move || Box::pin(tls_connect(tls.clone(), port))
    }

    /// Runs `attack` while an admission review is sent every 100 ms.
    async fn attacked<A: std::future::Future<Output = Held>>(&self, attack: A) -> Attacked {
        let (port, tls) = (self.port, self.tls.clone());
        BOUNDS
            .attacked(self.pid(), 200, move || admit(tls.clone(), port), attack)
            .await
    }
}

async fn tls_connect(tls: TlsConnector, port: u16) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// What the API server does: one AdmissionReview over TLS.
async fn admit(tls: TlsConnector, port: u16) -> std::io::Result<u16> {
    let body = serde_json::to_vec(&review(&fixture("deployment-pod"), "CREATE", false)).unwrap();
    let mut request = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    http1_status(tls_connect(tls, port).await?, &request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_admissions_within_its_memory_limit_under_half_open_connections_and_slowloris()
 {
    let (connections, fds) = half_open_connections(HALF_OPEN);

    let webhook = Webhook::start().await;
    let half_open_attack = webhook
        .attacked(half_open(
            webhook.pid(),
            connections,
            PARTIAL_CLIENT_HELLO,
            Duration::from_secs(7),
            webhook.tcp(),
        ))
        .await;
    drop(webhook);

    let webhook = Webhook::start().await;
    let slowloris_attack = webhook
        .attacked(slowloris(
            webhook.pid(),
            SLOWLORIS,
            PARTIAL_REQUEST,
            Duration::from_secs(10),
            webhook.tls(),
        ))
        .await;

    BOUNDS.check(&half_open_attack, &slowloris_attack, fds);
}

#[tokio::test]
async fn with_certificate_files_the_expiry_metric_is_the_certificates_not_after() {
    let webhook = Webhook::start().await;
    let mut stream = TcpStream::connect(("127.0.0.1", webhook.admin_port))
        .await
        .unwrap();
    let metrics = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    };
    let line = metrics
        .lines()
        .find(|l| l.starts_with("healthbridge_webhook_certificate_not_after_timestamp "))
        .unwrap_or_else(|| panic!("no expiry metric in {metrics}"));
    assert_eq!(
        line,
        format!(
            "healthbridge_webhook_certificate_not_after_timestamp {}",
            webhook.cert_not_after
        )
    );
}
