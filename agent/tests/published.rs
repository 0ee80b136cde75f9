//! The published port as it is served (`published`: `GET /health` answered before the router) gives byte for byte
//! the answers of its routes (`app`), over a real loopback connection: healthy, unhealthy (fixed, no pod to watch),
//! watched and fresh, stale, and every request
//! the shortcut must leave to the router (HEAD, other methods, a body, other paths).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use healthbridge_agent::metrics::Metrics;
use healthbridge_agent::pod_status::{Freshness, OnStale, PodState, PodStatusSource};
use healthbridge_agent::report::{CheckResult, Report};
use healthbridge_agent::server::{AppState, admin_app, app, published};
use healthbridge_runtime::serve::{Limits, PlainHttp, serve};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What a client sees of an answer, minus the `date` header.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
}

fn seen(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Seen {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| *name != http::header::DATE)
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

/// The published port, served on a loopback port until the guard drops.
struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_published(state: AppState) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        vec![listener],
        PlainHttp,
        published(state),
        Limits::new(16),
        stop.clone(),
    ));
    Served { addr, stop }
}

/// One HTTP/1.1 request on its own connection, parsed by hyper's client.
async fn over_the_wire(addr: SocketAddr, request: Request<Body>) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    seen(parts.status, &parts.headers, &body)
}

async fn through_the_router(state: AppState, request: Request<Body>) -> Seen {
    let response = app(state).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    seen(parts.status, &parts.headers, &body)
}

fn request(method: &str, uri: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, "agent")
        .body(Body::from(body))
        .unwrap()
}

fn agent(pod: PodStatusSource) -> AppState {
    AppState::new(
        pod,
        StatusCode::SERVICE_UNAVAILABLE,
        Arc::new(Metrics::default()),
    )
}

/// A watched pod, ready, last confirmed by the API server `ago` before now.
fn watched_pod_confirmed(ago: Duration) -> PodStatusSource {
    let confirmed = healthbridge_agent::pod_status::state::Contact {
        at: Instant::now().checked_sub(ago).unwrap(),
        wall: SystemTime::now() - ago,
    };
    let state = PodState {
        health: Some(Arc::new(Report::new(vec![CheckResult::pass(
            "pod",
            "container app is ready",
        )]))),
        last_update: Some(confirmed),
        confirmed: Some(confirmed),
        ..PodState::default()
    };
    let (sender, receiver) = watch::channel(state);
    // The receiver sees the last value even after the sender is gone.
    drop(sender);
    PodStatusSource::watching(
        receiver,
        Freshness {
            max_staleness: Duration::from_secs(30),
            on_stale: OnStale::LastKnown,
        },
    )
}

async fn assert_same_answer(pod: PodStatusSource, method: &str, uri: &str, body: &'static str) {
    let state = agent(pod);
    let served = serve_published(state.clone()).await;
    let wire = over_the_wire(served.addr, request(method, uri, body)).await;
    let routed = through_the_router(state, request(method, uri, body)).await;
    assert_eq!(wire, routed, "{method} {uri} with body {body:?}");
}

#[tokio::test]
async fn health_is_answered_as_its_route_answers_healthy_unhealthy_and_stale() {
    assert_same_answer(PodStatusSource::fixed(true), "GET", "/health", "").await;
    assert_same_answer(PodStatusSource::fixed(false), "GET", "/health", "").await;
    assert_same_answer(
        PodStatusSource::unavailable("no pod to watch"),
        "GET",
        "/health",
        "",
    )
    .await;
    assert_same_answer(
        watched_pod_confirmed(Duration::from_secs(1)),
        "GET",
        "/health",
        "",
    )
    .await;
    let stale = watched_pod_confirmed(Duration::from_secs(90));
    let state = agent(stale.clone());
    let served = serve_published(state).await;
    let wire = over_the_wire(served.addr, request("GET", "/health", "")).await;
    assert!(
        wire.headers
            .iter()
            .any(|(name, _)| name == "healthbridge-stale"),
        "a last-known answer says it is stale: {wire:?}"
    );
    assert_same_answer(stale, "GET", "/health", "").await;
}

#[tokio::test]
async fn requests_the_shortcut_does_not_take_get_the_routers_answer() {
    for (method, uri, body) in [
        ("HEAD", "/health", ""),
        ("POST", "/health", ""),
        ("GET", "/health", "a body to read and limit"),
        ("GET", "/health/", ""),
        ("GET", "/healthz", ""),
        ("GET", "/all", ""),
        ("GET", "/health?verbose", ""),
    ] {
        assert_same_answer(PodStatusSource::fixed(false), method, uri, body).await;
    }
}

#[tokio::test]
async fn health_answered_at_once_is_counted_like_any_other() {
    let state = agent(PodStatusSource::fixed(true));
    let served = serve_published(state.clone()).await;
    for _ in 0..3 {
        over_the_wire(served.addr, request("GET", "/health", "")).await;
    }
    let metrics = admin_app(state)
        .oneshot(request("GET", "/metrics", ""))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            r#"healthbridge_agent_health_answers_total{route="/health",result="healthy"} 3"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_mixes_shortcut_and_routed_requests() {
    let served = serve_published(agent(PodStatusSource::fixed(true))).await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(
            b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /self HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answers = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answers))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answers.matches("HTTP/1.1 200 OK").count(),
        3,
        "three answers, in order: {answers}"
    );
}
