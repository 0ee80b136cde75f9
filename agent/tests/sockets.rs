//! TCP, UDP and gRPC health checks against real servers on loopback: up, down, wrong answer, no answer; gRPC over
//! h2c, TLS with a CA made here, and mTLS.
#![allow(clippy::unwrap_used)]

mod checks_support;
mod process_support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use checks_support::{GrpcHealthServer, Pki};
use healthbridge_agent::socket::{SocketArgs, Verdict};
use healthbridge_agent::tls::ClientTlsArgs;
use process_support::free_port as closed_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tonic_health::ServingStatus;

/// One run of the single check `spec` of `kind` (`tcp`, `udp`, `grpc`), with a 500 ms timeout.
async fn run(kind: &str, spec: &str, tls: &ClientTlsArgs) -> Verdict {
    let mut args = SocketArgs {
        check_timeout: Duration::from_millis(500),
        ..SocketArgs::default()
    };
    match kind {
        "tcp" => args.tcp.push(spec.to_owned()),
        "udp" => args.udp.push(spec.to_owned()),
        _ => args.grpc.push(spec.to_owned()),
    }
    let checks = args.validate(tls).unwrap();
    checks.checks[0].run_once().await
}

async fn tcp(spec: &str) -> Verdict {
    run("tcp", spec, &ClientTlsArgs::default()).await
}

/// A TCP server that reads one line and answers `reply` (nothing at all when `None`).
async fn line_server(reply: Option<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut line = [0u8; 64];
                let _ = stream.read(&mut line).await;
                match reply {
                    Some(reply) => {
                        let _ = stream.write_all(reply).await;
                    }
                    // Hold the connection open and silent.
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_is_healthy_while_something_listens_and_names_the_refusal_otherwise() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = tcp(&format!("/db=tcp://127.0.0.1:{port}")).await;
    assert_eq!(up, Verdict::pass("connected"));
    drop(listener);
    let down = tcp(&format!("/db=tcp://127.0.0.1:{port}")).await;
    assert!(!down.healthy);
    assert!(
        down.reason.contains("cannot connect to 127.0.0.1:") && down.reason.contains("refused"),
        "{down:?}"
    );
}

#[tokio::test]
async fn tcp_send_and_expect_compares_the_start_of_the_reply() {
    let pong = line_server(Some(b"+PONG\r\n")).await;
    let ok = tcp(&format!(
        r"/cache=tcp://{pong}?send=PING\r\n&expect=%2BPONG"
    ))
    .await;
    assert!(ok.healthy, "{ok:?}");
    assert_eq!(ok.reason, "answered `+PONG`");

    let err = line_server(Some(b"-ERR unknown command\r\n")).await;
    let wrong = tcp(&format!(r"/cache=tcp://{err}?send=PING\r\n&expect=%2BPONG")).await;
    assert_eq!(
        wrong,
        Verdict::fail("answered `-ERR `, expected `+PONG`"),
        "no more is read than the expected prefix is long"
    );

    let closes = line_server(Some(b"")).await;
    let closed = tcp(&format!(
        r"/cache=tcp://{closes}?send=PING\r\n&expect=%2BPONG"
    ))
    .await;
    assert_eq!(
        closed,
        Verdict::fail("closed the connection before answering")
    );
}

#[tokio::test]
async fn a_tcp_server_that_never_answers_fails_at_the_timeout() {
    let silent = line_server(None).await;
    let started = std::time::Instant::now();
    let verdict = tcp(&format!(
        r"/cache=tcp://{silent}?send=PING\r\n&expect=%2BPONG&timeout=300ms"
    ))
    .await;
    assert_eq!(verdict, Verdict::fail("no complete answer within 300ms"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
}

/// A UDP server answering each datagram with `answer(request)`; `None` drops the request.
async fn udp_server(answer: fn(&[u8]) -> Option<Vec<u8>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            if let Some(reply) = answer(&buffer[..n]) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    addr
}

async fn udp(spec: &str) -> Verdict {
    run("udp", spec, &ClientTlsArgs::default()).await
}

#[tokio::test]
async fn udp_passes_on_an_answer_with_the_expected_prefix() {
    let echo = udp_server(|request| Some(request.to_vec())).await;
    let ok = udp(&format!(r"/echo=udp://{echo}?send=hello\x00&expect=hell")).await;
    assert_eq!(ok, Verdict::pass(r"answered `hello\x00`"));
    let any = udp(&format!("/echo=udp://{echo}?send=hi")).await;
    assert_eq!(any, Verdict::pass("answered 2 bytes"));

    let other = udp_server(|_| Some(b"NO".to_vec())).await;
    let wrong = udp(&format!("/echo=udp://{other}?send=hello&expect=hell")).await;
    assert_eq!(wrong, Verdict::fail("answered `NO`, expected `hell`"));
}

#[tokio::test]
async fn udp_without_an_answer_fails_at_the_timeout_and_an_icmp_refusal_at_once() {
    let mute = udp_server(|_| None).await;
    let silent = udp(&format!("/dns=udp://{mute}?send=q&timeout=200ms")).await;
    assert!(!silent.healthy);
    assert!(
        silent.reason.starts_with("no answer within 200ms (UDP:"),
        "{silent:?}"
    );

    let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = nobody.local_addr().unwrap().port();
    drop(nobody);
    let refused = udp(&format!("/dns=udp://127.0.0.1:{port}?send=q&timeout=2s")).await;
    assert!(
        refused
            .reason
            .starts_with("port unreachable: nothing listens on 127.0.0.1:"),
        "{refused:?}"
    );
}

async fn grpc_server(
    service: &str,
    status: ServingStatus,
    tls: Option<rustls::ServerConfig>,
) -> SocketAddr {
    GrpcHealthServer::start(service, status, tls).await.addr
}

async fn grpc(spec: &str, tls: &ClientTlsArgs) -> Verdict {
    run("grpc", spec, tls).await
}

#[tokio::test]
async fn grpc_over_h2c_reports_serving_not_serving_and_unknown_services() {
    let addr = grpc_server("shop.Cart", ServingStatus::NotServing, None).await;
    let plain = ClientTlsArgs::default();
    assert_eq!(
        grpc(&format!("/api=grpc://{addr}"), &plain).await,
        Verdict::pass("SERVING")
    );
    assert_eq!(
        grpc(&format!("/api=grpc://{addr}/shop.Cart"), &plain).await,
        Verdict::fail("status NOT_SERVING")
    );
    let unknown = grpc(&format!("/api=grpc://{addr}/shop.Nope"), &plain).await;
    assert!(!unknown.healthy);
    assert!(
        unknown
            .reason
            .contains("unknown service `shop.Nope` (NOT_FOUND)"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn an_unreachable_grpc_server_cannot_be_connected() {
    let port = closed_port();
    let verdict = grpc(
        &format!("/api=grpc://127.0.0.1:{port}"),
        &ClientTlsArgs::default(),
    )
    .await;
    assert!(!verdict.healthy);
    assert!(
        verdict.reason.starts_with("cannot connect") && verdict.reason.contains("refused"),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn grpc_over_tls_is_verified_against_the_ca_file() {
    let pki = Pki::generate();
    let addr = grpc_server(
        "shop.Cart",
        ServingStatus::Serving,
        Some(pki.server_config(false)),
    )
    .await;
    let spec = format!("/api=grpcs://localhost:{}/shop.Cart", addr.port());
    let with_ca = ClientTlsArgs {
        ca_cert: Some(pki.ca_cert.clone()),
        ..ClientTlsArgs::default()
    };
    assert_eq!(grpc(&spec, &with_ca).await, Verdict::pass("SERVING"));

    let without_ca = grpc(&spec, &ClientTlsArgs::default()).await;
    assert!(!without_ca.healthy);
    assert!(
        without_ca.reason.contains("UnknownIssuer") && without_ca.reason.contains("--ca-cert"),
        "verified by default, with the fix named: {without_ca:?}"
    );
}

#[tokio::test]
async fn grpc_over_mtls_needs_the_client_certificate() {
    let pki = Pki::generate();
    let addr = grpc_server("", ServingStatus::Serving, Some(pki.server_config(true))).await;
    let spec = format!("/api=grpcs://localhost:{}", addr.port());
    let no_client_cert = ClientTlsArgs {
        ca_cert: Some(pki.ca_cert.clone()),
        ..ClientTlsArgs::default()
    };
    let refused = grpc(&spec, &no_client_cert).await;
    assert!(!refused.healthy);
    assert!(refused.reason.contains("client certificate"), "{refused:?}");
    let with_client_cert = ClientTlsArgs {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..no_client_cert
    };
    assert_eq!(
        grpc(&spec, &with_client_cert).await,
        Verdict::pass("SERVING")
    );
}

/// `(status, body)` of `GET path` on loopback, `None` while nothing listens.
fn get(port: u16, path: &str, accept: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some((
        answer.get(9..12)?.parse().ok()?,
        answer.split_once("\r\n\r\n")?.1.to_owned(),
    ))
}

#[test]
fn the_agent_serves_each_socket_check_at_its_url_and_in_all() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap().port();
    let down = closed_port();
    let (port, admin) = (closed_port(), closed_port());
    let mut agent = process_support::agent()
        .env("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "true")
        .env(
            "HTTP_HEALTHCHECK_SIDECAR_TCP",
            format!("/db=tcp://127.0.0.1:{up}\n/gone=tcp://127.0.0.1:{down}"),
        )
        .args([
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
            "--check-period",
            "100ms",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut pause = Duration::from_millis(10);
    let mut answers = None;
    for _ in 0..40 {
        let db = get(port, "/db", "*/*");
        let gone = get(admin, "/gone", "*/*");
        if let (Some(db), Some(gone)) = (&db, &gone)
            && db.0 == 200
            && gone.1.contains("refused")
        {
            answers = Some((db.clone(), gone.clone()));
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    let (db, gone) = answers.expect("both checks answered");
    assert_eq!(db, (200, "ok: /db\n".to_owned()));
    assert_eq!(gone.0, 503, "{gone:?}");
    assert_eq!(
        get(port, "/gone", "*/*").unwrap(),
        (503, "unhealthy: /gone\n".to_owned())
    );
    let all = get(port, "/all", "*/*").unwrap();
    assert_eq!(all, (503, "UNAVAILABLE: tcp:/gone".to_owned()));
    let json = get(admin, "/all", "application/json").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pod", "tcp:/db", "tcp:/gone"], "{json}");
    let metrics = get(admin, "/metrics", "*/*").unwrap().1;
    assert!(
        metrics.contains(
            r#"healthbridge_agent_check_runs_total{kind="tcp",path="/db",result="healthy"}"#
        ),
        "{metrics}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
