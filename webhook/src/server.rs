//! The HTTPS admission listener (rustls, h2 + http/1.1) and the plain-HTTP admin listener, both on the shared
//! hardened server: bounded connections, handshake/header/idle/request timeouts, body limits, graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use healthbridge_runtime::serve::{Handshake, Limits, PlainHttp, serve};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::admission::MAX_BODY_BYTES;
use crate::metrics::Metrics;

/// A TLS handshake that takes longer than this is dropped (slow or stuck clients).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the admin listener holds: probes and a scraper.
const ADMIN_MAX_CONNECTIONS: usize = 32;

/// Connection bounds of the admission listener.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LimitArgs {
    /// Connections the admission listener holds at once; when full, the oldest idle one is closed for a new one.
    /// Each costs up to ~30 KiB (TLS): the default keeps the webhook well within a 128Mi memory limit.
    #[arg(long, env = "HEALTHBRIDGE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = parse_max_connections)]
    pub max_connections: usize,
    /// Time a client has to send a complete request head once the TLS handshake is done, and on HTTP/1 after each
    /// answer (so it also closes an idle HTTP/1 keep-alive).
    #[arg(long, env = "HEALTHBRIDGE_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Time an HTTP/2 connection (the API server's webhook client speaks HTTP/2 over TLS) may stay open without a
    /// request; an HTTP/1 one at most the header timeout.
    #[arg(long, env = "HEALTHBRIDGE_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

impl LimitArgs {
    /// Bounds of the admission listener; after SIGTERM in-flight admissions get `drain`.
    pub fn limits(&self, drain: Duration) -> Limits {
        let mut limits = Limits::new(self.max_connections);
        limits.header_read_timeout = self.header_timeout.max(Duration::from_millis(1));
        limits.idle_timeout = self.idle_timeout.max(Duration::from_millis(1));
        limits.handshake_timeout = HANDSHAKE_TIMEOUT;
        // The API server gives a webhook at most 30 s; an admission takes well under a millisecond.
        limits.request_timeout = Duration::from_secs(30);
        // The admission routes answer 413 with their own message at MAX_BODY_BYTES; this is the backstop.
        limits.max_body_bytes = MAX_BODY_BYTES + 64 * 1024;
        limits.drain_timeout = drain;
        limits
    }
}

fn parse_max_connections(value: &str) -> Result<usize, String> {
    healthbridge_runtime::settings::parse_max_connections(
        value,
        "HEALTHBRIDGE_MAX_CONNECTIONS (--max-connections)",
    )
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// The TLS handshake of the admission listener.
struct Tls(TlsAcceptor);

impl Handshake for Tls {
    type Io = TlsStream<TcpStream>;
    fn handshake(&self, tcp: TcpStream) -> BoxFuture<'static, std::io::Result<Self::Io>> {
        Box::pin(self.0.accept(tcp))
    }
}

/// Whether the webhook may receive admissions (certificate served and, if self-managed, caBundle in place).
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Serves `app` over TLS on `listener` until `shutdown`, then stops accepting and lets in-flight requests finish
/// for up to `limits.drain_timeout`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    serve(
        vec![listener],
        Tls(TlsAcceptor::from(tls)),
        app,
        limits,
        shutdown,
    )
    .await;
    tracing::info!("admission listener closed");
}

/// The admin routes: `/healthz`, `/readyz`, `/metrics`.
pub fn admin_app(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no serving certificate or caBundle yet\n",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            healthbridge_runtime::OPENMETRICS_CONTENT_TYPE,
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}

/// Serves the admin routes over plain HTTP until `shutdown`.
pub async fn serve_admin(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut limits = Limits::new(ADMIN_MAX_CONNECTIONS);
    limits.request_timeout = Duration::from_secs(10);
    serve(vec![listener], PlainHttp, app, limits, shutdown).await;
}
