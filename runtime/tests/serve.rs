//! The hardened server over real loopback connections: the header-read timeout for every request head (from connect,
//! and again after each answer on a kept-alive HTTP/1 connection), HTTP/2 left to its idle timeout between
//! requests, a full table evicting the idle connection, and shutdown closing idle connections at once while the
//! request in flight finishes.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use healthbridge_runtime::serve::{Limits, PlainHttp, serve};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const HEADER_TIMEOUT: Duration = Duration::from_millis(400);
/// How long a test waits for the server to close a connection before it fails: far beyond every timeout in play.
const PATIENCE: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

/// The handler of `/slow`: says when it started, answers when released.
#[derive(Default)]
struct Gate {
    started: Notify,
    release: Notify,
}

/// Serves `/` (`OK`) and `/slow` (through `gate`) with `limits`.
async fn served(limits: Limits, gate: Arc<Gate>) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "OK" })).route(
        "/slow",
        get(move || async move {
            gate.started.notify_one();
            gate.release.notified().await;
            "finally"
        }),
    );
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        vec![listener],
        PlainHttp,
        router,
        limits,
        stop.clone(),
    ));
    Served { addr, stop, server }
}

fn limits() -> Limits {
    let mut limits = Limits::new(16);
    limits.header_read_timeout = HEADER_TIMEOUT;
    limits.idle_timeout = Duration::from_secs(60);
    limits
}

/// Reads one HTTP/1 answer (head and `content-length` body); answers its status line.
async fn answer(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text.lines().next().unwrap().to_owned();
            }
        }
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            read > 0,
            "the server closed the connection before answering: {text:?}"
        );
        seen.extend_from_slice(&chunk[..read]);
    }
}

/// Waits (up to `PATIENCE`) until the server closes the connection; answers how long that took.
async fn closed_by_the_server(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut rest = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) | Ok(Err(_)) => start.elapsed(),
        Err(_) => panic!("the server kept the connection open for {PATIENCE:?}"),
    }
}

#[tokio::test]
async fn a_connection_that_never_completes_its_first_request_head_is_closed_after_the_header_timeout()
 {
    let server = served(limits(), Arc::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
    let took = closed_by_the_server(&mut stream).await;
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn after_an_answer_the_next_request_head_has_the_header_timeout_whether_it_is_slow_or_never_starts()
 {
    let server = served(limits(), Arc::default()).await;
    for next_head in [&b"GET / HTTP/1.1\r\nHost:"[..], b""] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        assert_eq!(answer(&mut stream).await, "HTTP/1.1 200 OK");
        let answered = Instant::now();
        stream.write_all(next_head).await.unwrap();
        closed_by_the_server(&mut stream).await;
        let took = answered.elapsed();
        assert!(
            took >= HEADER_TIMEOUT,
            "closed {took:?} after the answer, before the header timeout"
        );
    }
}

#[tokio::test]
async fn every_request_head_on_a_kept_alive_connection_gets_its_own_header_timeout() {
    let server = served(limits(), Arc::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Three requests over more than twice the header timeout, each well within it of the previous answer.
    for _ in 0..3 {
        stream.write_all(REQUEST).await.unwrap();
        assert_eq!(answer(&mut stream).await, "HTTP/1.1 200 OK");
        tokio::time::sleep(HEADER_TIMEOUT * 3 / 4).await;
    }
    stream.write_all(REQUEST).await.unwrap();
    assert_eq!(answer(&mut stream).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn an_http2_connection_stays_open_between_requests_past_the_header_timeout() {
    let server = served(limits(), Arc::default()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    for _ in 0..2 {
        let request = http::Request::get(format!("http://{}/", server.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "OK"
        );
        tokio::time::sleep(HEADER_TIMEOUT * 2).await;
    }
    assert!(
        !connection.is_finished(),
        "the HTTP/2 connection was closed"
    );
}

#[tokio::test]
async fn a_full_table_closes_the_idle_connection_for_a_new_one() {
    let mut limits = limits();
    limits.max_connections = 1;
    limits.header_read_timeout = Duration::from_secs(30);
    let server = served(limits, Arc::default()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(REQUEST).await.unwrap();
    assert_eq!(answer(&mut idle).await, "HTTP/1.1 200 OK");
    let mut newcomer = TcpStream::connect(server.addr).await.unwrap();
    newcomer.write_all(REQUEST).await.unwrap();
    assert_eq!(answer(&mut newcomer).await, "HTTP/1.1 200 OK");
    let took = closed_by_the_server(&mut idle).await;
    assert!(
        took < Duration::from_secs(30),
        "the idle connection waited for its timeout"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_lets_the_request_in_flight_finish() {
    let gate = Arc::new(Gate::default());
    let mut limits = limits();
    limits.header_read_timeout = Duration::from_secs(30);
    let server = served(limits, Arc::clone(&gate)).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(REQUEST).await.unwrap();
    assert_eq!(answer(&mut idle).await, "HTTP/1.1 200 OK");
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, gate.started.notified())
        .await
        .unwrap();

    server.stop.cancel();
    let took = closed_by_the_server(&mut idle).await;
    assert!(
        took < Duration::from_secs(30),
        "the idle connection waited for its timeout"
    );
    gate.release.notify_one();
    assert_eq!(answer(&mut busy).await, "HTTP/1.1 200 OK");
    closed_by_the_server(&mut busy).await;
    tokio::time::timeout(PATIENCE, server.server)
        .await
        .unwrap()
        .unwrap();
}
