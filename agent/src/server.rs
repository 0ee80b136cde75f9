//! The HTTP surfaces. The published port (0.0.0.0 and [::], behind the NodePort) answers what a load balancer needs:
//! `/health`, `/all`, `/self` and exec URLs, status code plus `OK` or the names of the failing checks. The admin port
//! (loopback by default, never in the Service) adds `/metrics`, `?verbose`, JSON, reasons and exec output.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use healthbridge_runtime::serve::{App, listen};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::endpoints::EndpointChecker;
use crate::exec::{ExecAnswer, ExecHandle};
use crate::metrics::Metrics;
use crate::pod_status::PodStatusSource;
use crate::render::{Format, render, render_public};
use crate::report::{CheckResult, Report};
use crate::socket::SocketHandle;

/// A group of checks that `/all` (or its own URL) runs for one answer: endpoints, exec results, …
pub trait CheckSet: Send + Sync {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>>;
}

impl CheckSet for EndpointChecker {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>> {
        Box::pin(self.check_all())
    }
}

impl CheckSet for SocketHandle {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>> {
        Box::pin(std::future::ready(self.all()))
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
    /// TCP, UDP and gRPC checks: each served at its own URL (and part of `/all`).
    pub sockets: Option<SocketHandle>,
}

impl AppState {
    pub fn new(pod: PodStatusSource, unhealthy_status: StatusCode, metrics: Arc<Metrics>) -> Self {
        Self {
            pod,
            unhealthy_status,
            metrics,
            all_checks: Vec::new(),
            exec: None,
            sockets: None,
        }
    }
}

/// The published port's routes.
pub fn app(state: AppState) -> Router {
    routes::<false>(Arc::new(state))
}

/// The published port as served: its routes, with `GET /health` answered from memory before the router (the
/// same answer as the route's; a load balancer asks it thousands of times a second).
pub fn published(state: AppState) -> App {
    let state = Arc::new(state);
    let at_once = Arc::clone(&state);
    App::answering_at_once(
        routes::<false>(state),
        Arc::new(move |request: &http::request::Parts| {
            (request.method == Method::GET && request.uri.path() == "/health")
                .then(|| public_health(&at_once))
        }),
    )
}

/// The admin port's routes: the published ones with every format and detail, and `/metrics`.
pub fn admin_app(state: AppState) -> Router {
    routes::<true>(Arc::new(state))
}

fn routes<const ADMIN: bool>(state: Arc<AppState>) -> Router<()> {
    let mut router = Router::new()
        .route("/health", get(health::<ADMIN>))
        .route("/all", get(all::<ADMIN>))
        .route("/self", get(self_check));
    if ADMIN {
        router = router.route("/metrics", get(metrics));
    }
    if let Some(exec) = &state.exec {
        for path in exec.paths() {
            let path_owned = path.to_owned();
            router = router.route(
                path,
                get(
                    move |State(state): State<Arc<AppState>>, headers: HeaderMap| {
                        exec_answer::<ADMIN>(state, path_owned, headers)
                    },
                ),
            );
        }
    }
    if let Some(sockets) = &state.sockets {
        for path in sockets.paths() {
            let path_owned = path.to_owned();
            router = router.route(
                path,
                get(
                    move |State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap| {
                        socket_answer::<ADMIN>(state, path_owned, uri, headers)
                    },
                ),
            );
        }
    }
    // Shared behind one Arc: the `State` extractor clones it for every request.
    router.fallback(not_found::<ADMIN>).with_state(state)
}

// Taking the whole request borrows its URI and headers; the `Uri`/`HeaderMap` extractors would clone them on
// every health request, the hottest path of the agent.
async fn health<const ADMIN: bool>(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    if !ADMIN {
        return public_health(&state).map(Body::new);
    }
    let answer = state.pod.answer();
    state.metrics.health.count(answer.report.healthy());
    let response = render(
        &answer.report,
        "health",
        Format::negotiate(request.uri().query(), request.headers()),
        state.unhealthy_status,
    );
    with_staleness(response, answer.stale_for)
}

/// `/health` on the published port: the status code and `OK` or the failing checks' names.
fn public_health(state: &AppState) -> http::Response<Full<Bytes>> {
    let answer = state.pod.answer();
    state.metrics.health.count(answer.report.healthy());
    with_staleness(
        render_public(&answer.report, state.unhealthy_status),
        answer.stale_for,
    )
}

fn with_staleness<B>(
    mut response: http::Response<B>,
    stale_for: Option<std::time::Duration>,
) -> http::Response<B> {
    // The load balancer's side of the trade-off: a `last-known` answer says on every port that it is stale.
    if let Some(age) = stale_for {
        response
            .headers_mut()
            .insert(STALE_HEADER, HeaderValue::from(age.as_secs()));
    }
    response
}

/// Seconds since the API server last confirmed the pod status, on answers given beyond `MAX_STALENESS`.
pub const STALE_HEADER: &str = "healthbridge-stale";

async fn all<const ADMIN: bool>(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let report = all_report(&state).await;
    state.metrics.all.count(report.healthy());
    if !ADMIN {
        return render_public(&report, state.unhealthy_status).map(Body::new);
    }
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

/// An exec URL. Published port: `ok: <path>` or `unhealthy: <path>` and the status code, never the command's
/// output. Admin port: the older bridge's detailed body (status, time, escaped output), or JSON on request.
async fn exec_answer<const ADMIN: bool>(
    state: Arc<AppState>,
    path: String,
    headers: HeaderMap,
) -> Response {
    let Some(status) = state.exec.as_ref().and_then(|exec| exec.result(&path)) else {
        return not_found::<ADMIN>().await.into_response();
    };
    let healthy = status.healthy();
    state.metrics.count_answer(&path, healthy);
    let code = if healthy {
        StatusCode::OK
    } else {
        state.unhealthy_status
    };
    if !ADMIN {
        let body = match state.exec.as_ref().map(ExecHandle::answer) {
            Some(ExecAnswer::Bridge) => status.bridge_body(),
            _ => format!("{}: {path}\n", if healthy { "ok" } else { "unhealthy" }),
        };
        let mut response = (code, body).into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }
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

/// A socket check's URL: `ok: <path>` / `unhealthy: <path>` on the published port; its reason (text,
/// `?verbose`, JSON) on the admin port.
async fn socket_answer<const ADMIN: bool>(
    state: Arc<AppState>,
    path: String,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(result) = state.sockets.as_ref().and_then(|s| s.result(&path)) else {
        return not_found::<ADMIN>().await.into_response();
    };
    let healthy = result.healthy;
    state.metrics.count_answer(&path, healthy);
    if ADMIN {
        return render(
            &Report::new(vec![result]),
            &path,
            Format::negotiate(uri.query(), &headers),
            state.unhealthy_status,
        );
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        state.unhealthy_status
    };
    let verdict = if healthy { "ok" } else { "unhealthy" };
    let mut response = (code, format!("{verdict}: {path}\n")).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn self_check(State(state): State<Arc<AppState>>) -> &'static str {
    state.metrics.self_check.count(true);
    "OK"
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let age = state.pod.seconds_since_update().unwrap_or(-1.0);
    state.metrics.seconds_since_pod_update.set(age);
    let confirmed = state.pod.seconds_since_confirmed().unwrap_or(-1.0);
    state.metrics.seconds_since_confirmed_contact.set(confirmed);
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(healthbridge_runtime::OPENMETRICS_CONTENT_TYPE),
    );
    response
}

async fn not_found<const ADMIN: bool>() -> (StatusCode, &'static str) {
    let message = if ADMIN {
        "Not Found: the routes are /health, /all, /self, /metrics and the exec and socket check URLs\n"
    } else {
        "Not Found: the routes are /health, /all, /self and the exec and socket check URLs; /metrics, ?verbose and JSON are on the admin port\n"
    };
    (StatusCode::NOT_FOUND, message)
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
    let v6 = listen(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    // Port 0 must resolve to one concrete port for both families.
    let port = match &v6 {
        Ok(listener) => listener.local_addr().map(|a| a.port()).unwrap_or(port),
        Err(_) => port,
    };
    let v4 = listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    match (v6, v4) {
        (Ok(v6), Ok(v4)) => Ok(vec![v6, v4]),
        (Ok(v6), Err(error)) if error.kind() == io::ErrorKind::AddrInUse => Ok(vec![v6]),
        (Err(_), Ok(v4)) => Ok(vec![v4]),
        (_, Err(error)) => Err(ServeError::Bind { port, error }),
    }
}

/// The admin listener, or `None` (logged) when its address cannot be bound: health answers matter more than metrics.
pub async fn bind_admin(address: IpAddr, port: u16) -> Option<TcpListener> {
    match TcpListener::bind(SocketAddr::from((address, port))).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::error!(
                %address,
                port,
                %error,
                "cannot listen on the admin port; /metrics and detailed answers are unavailable. Choose a free one with HTTP_HEALTHCHECK_SIDECAR_ADMIN_PORT"
            );
            None
        }
    }
}
