//! The probe against local servers, plain, TLS and mTLS: exit codes, retries, deadline, and the binary itself.
#![allow(clippy::unwrap_used)]

mod checks_support;

use std::ffi::OsString;
use std::sync::atomic::Ordering;

use checks_support::{Pki, TestServer};
use clap::Parser;
use healthbridge_agent::probe::{ProbeArgs, ProbeExit, Verdict, normalize_legacy_flags, run};

fn probe(args: &[&str]) -> ProbeArgs {
    let argv = std::iter::once("probe")
        .chain(args.iter().copied())
        .map(OsString::from);
    ProbeArgs::try_parse_from(normalize_legacy_flags(argv)).unwrap()
}

async fn verdict(args: &[&str]) -> Verdict {
    run(&probe(args)).await
}

#[tokio::test]
async fn a_2xx_answer_is_healthy() {
    let server = TestServer::plain().await;
    assert_eq!(
        verdict(&["--url", &server.url("/ok")]).await.exit,
        ProbeExit::Healthy
    );
    assert_eq!(
        verdict(&["--url", &server.url("/status/204")]).await.exit,
        ProbeExit::Healthy
    );
}

#[tokio::test]
async fn the_old_flags_reach_the_same_server() {
    let server = TestServer::plain().await;
    let port = format!("-statusPort={}", server.addr.port());
    assert_eq!(
        verdict(&["-path=ok", &port, "-host=127.0.0.1"]).await.exit,
        ProbeExit::Healthy
    );
    assert_eq!(
        verdict(&["-path=/ok", &port, "-host=127.0.0.1"]).await.exit,
        ProbeExit::Healthy
    );
}

#[tokio::test]
async fn an_error_status_is_unhealthy_with_exit_4() {
    let server = TestServer::plain().await;
    let answer = verdict(&["--url", &server.url("/status/503")]).await;
    assert_eq!(answer.exit, ProbeExit::Unhealthy);
    assert!(
        answer.message.ends_with("HTTP 503 (expected 2xx)"),
        "{}",
        answer.message
    );
}

#[tokio::test]
async fn an_exact_expected_status_rejects_other_2xx() {
    let server = TestServer::plain().await;
    let answer = verdict(&[
        "--url",
        &server.url("/status/204"),
        "--expect-status",
        "200",
    ])
    .await;
    assert_eq!(answer.exit, ProbeExit::Unhealthy);
    assert!(
        answer.message.ends_with("HTTP 204 (expected 200)"),
        "{}",
        answer.message
    );
}

#[tokio::test]
async fn a_closed_port_is_exit_3() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let answer = verdict(&["--url", &format!("http://{closed}/ready")]).await;
    assert_eq!(answer.exit, ProbeExit::CouldNotConnect);
    assert!(
        answer.message.contains("cannot connect"),
        "{}",
        answer.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_is_unhealthy_after_the_timeout() {
    let server = TestServer::plain().await;
    let answer = verdict(&["--url", &server.url("/hang"), "--timeout", "1s"]).await;
    assert_eq!(answer.exit, ProbeExit::Unhealthy);
    assert!(
        answer
            .message
            .ends_with("connected but no answer within 1s"),
        "{}",
        answer.message
    );
}

#[tokio::test(start_paused = true)]
async fn retries_try_again_and_say_how_often() {
    let server = TestServer::plain().await;
    let answer = verdict(&["--url", &server.url("/status/500"), "--retries", "2"]).await;
    assert_eq!(answer.exit, ProbeExit::Unhealthy);
    assert!(
        answer.message.ends_with("(after 3 attempts)"),
        "{}",
        answer.message
    );
    assert_eq!(server.counters.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_caps_the_retries() {
    let server = TestServer::plain().await;
    let started = tokio::time::Instant::now();
    let answer = verdict(&[
        "--url",
        &server.url("/status/500"),
        "--retries",
        "1000",
        "--deadline",
        "3s",
    ])
    .await;
    assert_eq!(answer.exit, ProbeExit::Unhealthy);
    assert!(
        answer.message.contains("--deadline 3s reached"),
        "{}",
        answer.message
    );
    assert!(
        started.elapsed() <= std::time::Duration::from_secs(3),
        "stopped at {:?} of (paused) tokio time",
        started.elapsed()
    );
    assert!(server.counters.hits.load(Ordering::SeqCst) < 1000);
}

#[tokio::test]
async fn tls_is_verified_against_the_given_ca() {
    let pki = Pki::generate();
    let server = TestServer::tls(&pki).await;
    let url = server.named_url("/ok");

    let untrusted = verdict(&["--url", &url]).await;
    assert_eq!(
        untrusted.exit,
        ProbeExit::CouldNotConnect,
        "{}",
        untrusted.message
    );

    let ca = pki.ca_cert.to_str().unwrap();
    assert_eq!(
        verdict(&["--url", &url, "--ca-cert", ca]).await.exit,
        ProbeExit::Healthy
    );
    assert_eq!(
        verdict(&["--url", &url, "--insecure-skip-verify"])
            .await
            .exit,
        ProbeExit::Healthy
    );
}

#[tokio::test]
async fn a_self_signed_ca_server_certificate_given_as_ca_is_accepted() {
    let pki = Pki::generate();
    let (cert, key) = pki.self_signed_ca_server(-1, 30);
    let server = TestServer::tls_with(&cert, &key).await;
    let url = server.named_url("/ok");
    let answer = verdict(&["--url", &url, "--ca-cert", cert.to_str().unwrap()]).await;
    assert_eq!(answer.exit, ProbeExit::Healthy, "{}", answer.message);
}

#[tokio::test]
async fn a_client_certificate_the_server_requires_is_named_as_the_fix() {
    let pki = Pki::generate();
    let server = TestServer::mtls(&pki).await;
    let url = server.named_url("/ok");
    let answer = verdict(&["--url", &url, "--ca-cert", pki.ca_cert.to_str().unwrap()]).await;
    assert_eq!(
        answer.exit,
        ProbeExit::CouldNotConnect,
        "{}",
        answer.message
    );
    assert!(
        answer.message.contains("--client-cert"),
        "{}",
        answer.message
    );
}

#[tokio::test]
async fn the_old_flags_with_tls_and_a_server_name() {
    let pki = Pki::generate();
    let server = TestServer::tls(&pki).await;
    let port = format!("-statusPort={}", server.addr.port());
    let ca = pki.ca_cert.to_str().unwrap();
    let answer = verdict(&[
        "-path=ok",
        &port,
        "-host=127.0.0.1",
        "--tls",
        "--ca-cert",
        ca,
        "--server-name",
        "localhost",
    ])
    .await;
    assert_eq!(answer.exit, ProbeExit::Healthy, "{}", answer.message);
}

#[tokio::test]
async fn mtls_needs_the_client_certificate() {
    let pki = Pki::generate();
    let server = TestServer::mtls(&pki).await;
    let url = server.named_url("/ok");
    let ca = pki.ca_cert.to_str().unwrap();

    let without = verdict(&["--url", &url, "--ca-cert", ca]).await;
    assert_eq!(
        without.exit,
        ProbeExit::CouldNotConnect,
        "{}",
        without.message
    );

    let (cert, key) = (
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let with = verdict(&[
        "--url",
        &url,
        "--ca-cert",
        ca,
        "--client-cert",
        cert,
        "--client-key",
        key,
    ])
    .await;
    assert_eq!(with.exit, ProbeExit::Healthy, "{}", with.message);
}

#[tokio::test]
async fn invalid_tls_combinations_are_bad_arguments() {
    let answer = verdict(&["--url", "https://localhost:1/", "--client-cert", "c.pem"]).await;
    assert_eq!(answer.exit, ProbeExit::BadArguments);
    assert!(
        answer.message.contains("--client-key"),
        "{}",
        answer.message
    );
    let answer = verdict(&[
        "--url",
        "https://localhost:1/",
        "--insecure-skip-verify",
        "--ca-cert",
        "ca.pem",
    ])
    .await;
    assert_eq!(answer.exit, ProbeExit::BadArguments);
}

const AGENT: &str = env!("CARGO_BIN_EXE_healthbridge-agent");

/// Runs the real binary; returns its exit code and stderr.
async fn run_binary(program: &std::path::Path, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn run_agent_probe(args: &[&str]) -> (i32, String) {
    let argv: Vec<&str> = std::iter::once("probe")
        .chain(args.iter().copied())
        .collect();
    run_binary(std::path::Path::new(AGENT), &argv).await
}

#[tokio::test]
async fn the_binary_exits_0_when_healthy_and_says_nothing() {
    let server = TestServer::plain().await;
    assert_eq!(
        run_agent_probe(&["--url", &server.url("/ok")]).await,
        (0, String::new())
    );
}

#[tokio::test]
async fn the_binary_exits_4_with_one_line_when_unhealthy() {
    let server = TestServer::plain().await;
    let (code, stderr) = run_agent_probe(&["--url", &server.url("/status/500")]).await;
    assert_eq!(code, 4);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP 500 (expected 2xx)"), "{stderr}");
}

#[tokio::test]
async fn the_binary_exits_3_when_it_cannot_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, stderr) = run_agent_probe(&["--url", &format!("http://{closed}/")]).await;
    assert_eq!(code, 3);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn the_binary_exits_2_with_one_line_on_bad_arguments() {
    for args in [
        &["-statusPort=http"][..],
        &["--url", "http://x/", "--timeout", "soon"],
        &["--no-such-flag"],
        &[],
    ] {
        let (code, stderr) = run_agent_probe(args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_copy_named_healthbridge_probe_takes_the_old_flags() {
    let server = TestServer::plain().await;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("healthbridge-probe");
    std::os::unix::fs::symlink(AGENT, &probe).unwrap();
    let port = format!("-statusPort={}", server.addr.port());

    assert_eq!(
        run_binary(&probe, &["-path=ok", &port, "-host=127.0.0.1"]).await,
        (0, String::new())
    );
    let (code, stderr) = run_binary(
        &probe,
        &["-path=/status/503", &port, "-host=127.0.0.1", "-retry=1"],
    )
    .await;
    assert_eq!(code, 4);
    assert!(stderr.ends_with("(after 2 attempts)\n"), "{stderr}");
}
