//! The HTTP surface: `/health`, `/all`, `/self`, `/metrics` and exec URLs, served on 0.0.0.0 and [::] with graceful drain.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::endpoints::EndpointChecker;
use crate::exec::ExecHandle;
use crate::metrics::Metrics;
use crate::pod_status::PodStatusSource;
use crate::render::{Format, render};
use crate::report::{CheckResult, Report};

/// How long in-flight requests may take to finish after SIGTERM before the process exits anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A group of checks that `/all` (or its own URL) runs for one answer: endpoints, exec results, …
pub trait CheckSet: Send + Sync {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>>;
}

impl CheckSet for EndpointChecker {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>> {
        Box::pin(self.check_all())
    }
}

impl CheckSet for ExecHandle {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>> {
        Box::pin(std::future::ready(self.all()))
    }
}

/// Everything the handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pod: PodStatusSource,
    pub unhealthy_status: StatusCode,
    pub metrics: Arc<Metrics>,
    /// Checks that `/all` adds to the pod status, in the order they are listed.
    pub all_checks: Vec<Arc<dyn CheckSet>>,
    /// Exec checks: each served at its own URL (and, through `all_checks`, part of `/all`).
    pub exec: Option<ExecHandle>,
}

impl AppState {
    pub fn new(pod: PodStatusSource, unhealthy_status: StatusCode, metrics: Arc<Metrics>) -> Self {
        Self {
            pod,
            unhealthy_status,
            metrics,
            all_checks: Vec::new(),
            exec: None,
        }
    }
}

pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/all", get(all))
        .route("/self", get(self_check))
        .route("/metrics", get(metrics));
    if let Some(exec) = &state.exec {
        for path in exec.paths() {
            let path_owned = path.to_owned();
            router = router.route(
                path,
                get(move |State(state): State<AppState>, headers: HeaderMap| {
                    exec_answer(state, path_owned, headers)
                }),
            );
        }
    }
    router.fallback(not_found).with_state(state)
}

// Taking the whole request borrows its URI and headers; the `Uri`/`HeaderMap` extractors would clone them on
// every health request, the hottest path of the agent.
async fn health(State(state): State<AppState>, request: Request) -> Response {
    let answer = state.pod.answer();
    state.metrics.health.count(answer.report.healthy());
    let mut response = render(
        &answer.report,
        "health",
        Format::negotiate(request.uri().query(), request.headers()),
        state.unhealthy_status,
    );
    if let Some(age) = answer.stale_for {
        response
            .headers_mut()
            .insert(STALE_HEADER, HeaderValue::from(age.as_secs()));
    }
    response
}

/// Seconds since the API server last confirmed the pod status, on answers given beyond `MAX_STALENESS`.
pub const STALE_HEADER: &str = "healthbridge-stale";

async fn all(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let report = all_report(&state).await;
    state.metrics.all.count(report.healthy());
    render(
        &report,
        "all",
        Format::negotiate(uri.query(), &headers),
        state.unhealthy_status,
    )
}

/// The pod status (when this agent can know it) followed by every other check, all run concurrently.
pub async fn all_report(state: &AppState) -> Report {
    let mut checks = Vec::new();
    if state.pod.reachable() {
        checks.extend(state.pod.current().checks.iter().cloned());
    }
    let rounds = futures::future::join_all(state.all_checks.iter().map(|set| set.run())).await;
    checks.extend(rounds.into_iter().flatten());
    Report::new(checks)
}

/// An exec URL: the older bridge's detailed body (status, time, escaped output), or JSON on request.
async fn exec_answer(state: AppState, path: String, headers: HeaderMap) -> Response {
    let Some(status) = state.exec.as_ref().and_then(|exec| exec.result(&path)) else {
        return not_found().await.into_response();
    };
    let healthy = status.healthy();
    state.metrics.count_answer(&path, healthy);
    let code = if healthy {
        StatusCode::OK
    } else {
        state.unhealthy_status
    };
    let mut response = match Format::negotiate(None, &headers) {
        Format::Json => (code, status.to_json().to_string()).into_response(),
        _ => (code, status.text_body()).into_response(),
    };
    let content_type = match Format::negotiate(None, &headers) {
        Format::Json => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn self_check(State(state): State<AppState>) -> &'static str {
    state.metrics.self_check.count(true);
    "OK"
}

async fn metrics(State(state): State<AppState>) -> Response {
    let age = state.pod.seconds_since_update().unwrap_or(-1.0);
    state.metrics.seconds_since_pod_update.set(age);
    let confirmed = state.pod.seconds_since_confirmed().unwrap_or(-1.0);
    state.metrics.seconds_since_confirmed_contact.set(confirmed);
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "Not Found: the routes are /health, /all, /self, /metrics and the exec check URLs\n",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on port {port} ({error}); choose a free port with HTTP_HEALTHCHECK_SIDECAR_PORT or --port"
    )]
    Bind { port: u16, error: io::Error },
}

/// Listens on [::] and 0.0.0.0. On dual-stack hosts [::] already takes IPv4, so 0.0.0.0 answering "in use" is expected.
pub async fn bind(port: u16) -> Result<Vec<TcpListener>, ServeError> {
    let v6 = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await;
    // Port 0 must resolve to one concrete port for both families.
    let port = match &v6 {
        Ok(listener) => listener.local_addr().map(|a| a.port()).unwrap_or(port),
        Err(_) => port,
    };
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await;
    match (v6, v4) {
        (Ok(v6), Ok(v4)) => Ok(vec![v6, v4]),
        (Ok(v6), Err(error)) if error.kind() == io::ErrorKind::AddrInUse => Ok(vec![v6]),
        (Err(_), Ok(v4)) => Ok(vec![v4]),
        (_, Err(error)) => Err(ServeError::Bind { port, error }),
    }
}

/// Serves `app` on `listeners` until `cancel`, then stops accepting and drains in-flight requests for up to `DRAIN_TIMEOUT`.
pub async fn serve(listeners: Vec<TcpListener>, app: Router, cancel: CancellationToken) {
    let graceful = Arc::new(GracefulShutdown::new());
    let builder = auto::Builder::new(TokioExecutor::new());
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening");
        }
    }
    let loops = listeners.into_iter().map(|listener| {
        accept_loop(
            listener,
            app.clone(),
            builder.clone(),
            Arc::clone(&graceful),
            cancel.clone(),
        )
    });
    futures::future::join_all(loops).await;
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {DRAIN_TIMEOUT:?}; exiting anyway"
        );
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    graceful: Arc<GracefulShutdown>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => spawn_connection(stream, &app, &builder, &graceful),
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn spawn_connection(
    stream: TcpStream,
    app: &Router,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app.clone());
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "connection ended with an error");
        }
    });
}
