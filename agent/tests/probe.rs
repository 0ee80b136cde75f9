//! The probe against local servers, plain, TLS and mTLS: exit codes, retries, deadline, and the binary itself; gRPC
//! health targets, and the grpc_health_probe drop-in with its flags and exit codes.
#![allow(clippy::unwrap_used)]

mod checks_support;
mod process_support;

use std::ffi::OsString;
use std::sync::atomic::Ordering;

use checks_support::{GrpcHealthServer, Pki, TestServer};
use clap::Parser;
use healthbridge_agent::probe::{ProbeArgs, ProbeExit, Verdict, normalize_legacy_flags, run};
use process_support::free_port as closed_port;
use tonic_health::ServingStatus;

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

/// A gRPC health server where `shop.Cart` reports `status` (and the server as a whole SERVING).
async fn cart(status: ServingStatus) -> GrpcHealthServer {
    GrpcHealthServer::start("shop.Cart", status, None).await
}

#[tokio::test]
async fn a_serving_grpc_target_exits_0_and_says_nothing() {
    let server = cart(ServingStatus::Serving).await;
    for url in [
        format!("grpc://{}", server.addr),
        format!("grpc://{}/shop.Cart", server.addr),
    ] {
        assert_eq!(
            run_agent_probe(&["--url", &url]).await,
            (0, String::new()),
            "{url}"
        );
    }
    let user_agent = server.last_call().unwrap()[http::header::USER_AGENT].clone();
    assert!(
        user_agent
            .to_str()
            .unwrap()
            .starts_with("healthbridge-probe/"),
        "{user_agent:?}"
    );
}

#[tokio::test]
async fn a_grpc_service_not_serving_exits_4_naming_the_status() {
    let server = cart(ServingStatus::NotServing).await;
    let url = format!("grpc://{}/shop.Cart", server.addr);
    let (code, stderr) = run_agent_probe(&["--url", &url]).await;
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(
        stderr,
        format!("healthbridge-probe: {url}: status NOT_SERVING (expected SERVING)\n")
    );
}

#[tokio::test]
async fn an_unknown_grpc_service_exits_4_naming_it() {
    let server = cart(ServingStatus::Serving).await;
    let (code, stderr) =
        run_agent_probe(&["--url", &format!("grpc://{}/shop.Nope", server.addr)]).await;
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("unknown service `shop.Nope` (NOT_FOUND)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_closed_grpc_port_exits_3() {
    let url = format!("grpc://127.0.0.1:{}", closed_port());
    let (code, stderr) = run_agent_probe(&["--url", &url]).await;
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[tokio::test]
async fn grpc_retries_try_again_and_say_how_often() {
    let server = cart(ServingStatus::NotServing).await;
    let url = format!("grpc://{}/shop.Cart", server.addr);
    let (code, stderr) = run_agent_probe(&["--url", &url, "--retries", "1"]).await;
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.ends_with("(after 2 attempts)\n"), "{stderr}");
}

#[tokio::test]
async fn a_grpc_url_the_annotation_would_refuse_is_a_bad_argument() {
    let (code, stderr) = run_agent_probe(&["--url", "grpc://localhost"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`grpc://localhost`: `localhost` has no port"),
        "{stderr}"
    );
}

#[tokio::test]
async fn grpcs_is_verified_against_the_ca_file() {
    let pki = Pki::generate();
    let server = GrpcHealthServer::start(
        "shop.Cart",
        ServingStatus::Serving,
        Some(pki.server_config(false)),
    )
    .await;
    let url = format!("grpcs://localhost:{}/shop.Cart", server.addr.port());
    let ca = pki.ca_cert.to_str().unwrap();
    assert_eq!(
        run_agent_probe(&["--url", &url, "--ca-cert", ca]).await,
        (0, String::new())
    );

    // Another CA of the same name (every test CA has rcgen's default name), as after re-creating a CA.
    let other_pki = Pki::generate();
    for (args, cause) in [
        (vec!["--url", &url], "UnknownIssuer"),
        (
            vec![
                "--url",
                &url,
                "--ca-cert",
                other_pki.ca_cert.to_str().unwrap(),
            ],
            "BadSignature",
        ),
    ] {
        let (code, stderr) = run_agent_probe(&args).await;
        assert_eq!(code, 3, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(cause)
                && (stderr.contains("give that CA")
                    || stderr.contains("give the CA that signed it")),
            "the one-line TLS explanation with its fix: {stderr}"
        );
        assert!(stderr.contains("--ca-cert"), "{stderr}");
    }
}

#[tokio::test]
async fn grpcs_with_mtls_needs_the_client_certificate() {
    let pki = Pki::generate();
    let server =
        GrpcHealthServer::start("", ServingStatus::Serving, Some(pki.server_config(true))).await;
    let url = format!("grpcs://localhost:{}", server.addr.port());
    let ca = pki.ca_cert.to_str().unwrap();
    let (code, stderr) = run_agent_probe(&["--url", &url, "--ca-cert", ca]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("client certificate") && stderr.contains("--client-cert"),
        "{stderr}"
    );
    let (cert, key) = (
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    assert_eq!(
        run_agent_probe(&[
            "--url",
            &url,
            "--ca-cert",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key
        ])
        .await,
        (0, String::new())
    );
}

/// A symlink to the agent named `grpc_health_probe`, in a directory that lives as long as the returned guard.
fn grpc_health_probe() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("grpc_health_probe");
    std::os::unix::fs::symlink(AGENT, &probe).unwrap();
    (dir, probe)
}

#[tokio::test]
async fn a_copy_named_grpc_health_probe_takes_its_command_line_unchanged() {
    let server = GrpcHealthServer::start("x", ServingStatus::Serving, None).await;
    let (_dir, probe) = grpc_health_probe();
    let port = server.addr.port();
    for args in [
        vec![format!("-addr=127.0.0.1:{port}"), "-service=x".to_owned()],
        vec![format!("-addr=:{port}")],
        vec![
            "-addr".to_owned(),
            format!("localhost:{port}"),
            "-connect-timeout".to_owned(),
            "1m30s".to_owned(),
            "-rpc-timeout=500ms".to_owned(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(
            run_binary(&probe, &args).await,
            (0, "status: SERVING\n".to_owned()),
            "{args:?}"
        );
    }
    let user_agent = server.last_call().unwrap()[http::header::USER_AGENT].clone();
    assert_eq!(user_agent, "grpc_health_probe");
}

#[tokio::test]
async fn grpc_health_probe_mode_uses_its_exit_codes() {
    let server = cart(ServingStatus::NotServing).await;
    let (_dir, probe) = grpc_health_probe();
    let addr = format!("-addr={}", server.addr);

    let (code, stderr) = run_binary(&probe, &[&addr, "-service=shop.Cart"]).await;
    assert_eq!(
        (code, stderr.as_str()),
        (4, "service unhealthy (responded with \"NOT_SERVING\")\n")
    );

    let (code, stderr) = run_binary(&probe, &[&addr, "-service=shop.Nope"]).await;
    assert_eq!(code, 3, "an RPC failure: {stderr}");
    assert!(
        stderr.starts_with("error: health rpc failed: ") && stderr.contains("NOT_FOUND"),
        "{stderr}"
    );

    let refused = format!("-addr=127.0.0.1:{}", closed_port());
    let (code, stderr) = run_binary(&probe, &[&refused]).await;
    assert_eq!(code, 2, "a connection failure: {stderr}");
    assert!(
        stderr.starts_with("error: failed to connect service at \"127.0.0.1:")
            && stderr.contains("refused"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (code, stderr) = run_agent_probe(&[&refused]).await;
    assert_eq!(
        code, 2,
        "`healthbridge-agent probe -addr=…` is the same mode: {stderr}"
    );
}

/// A loopback port that accepts connections and then says nothing.
async fn silent_server() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test]
async fn grpc_health_probe_tells_a_connect_timeout_from_an_rpc_timeout() {
    let (_listener, port) = silent_server().await;
    let (_dir, probe) = grpc_health_probe();
    let addr = format!("-addr=127.0.0.1:{port}");

    // TLS: the handshake never completes, so the connection is never established.
    let (code, stderr) = run_binary(
        &probe,
        &[&addr, "-tls", "-tls-no-verify", "-connect-timeout=300ms"],
    )
    .await;
    assert_eq!(
        (code, stderr),
        (
            2,
            format!("timeout: failed to connect service \"127.0.0.1:{port}\" within 300ms\n")
        )
    );

    // h2c: connected (the kernel accepted), but the call is never answered.
    let (code, stderr) = run_binary(&probe, &[&addr, "-rpc-timeout=300ms"]).await;
    assert_eq!(
        (code, stderr.as_str()),
        (3, "timeout: health rpc did not complete within 300ms\n")
    );
}

#[tokio::test]
async fn grpc_health_probe_tls_flags_verify_and_present_certificates() {
    let pki = Pki::generate();
    let server =
        GrpcHealthServer::start("", ServingStatus::Serving, Some(pki.server_config(true))).await;
    let (_dir, probe) = grpc_health_probe();
    let addr = format!("-addr=localhost:{}", server.addr.port());
    let ca = format!("-tls-ca-cert={}", pki.ca_cert.display());
    let cert = format!("-tls-client-cert={}", pki.client_cert.display());
    let key = format!("-tls-client-key={}", pki.client_key.display());

    assert_eq!(
        run_binary(&probe, &[&addr, "-tls", &ca, &cert, &key]).await,
        (0, "status: SERVING\n".to_owned())
    );
    assert_eq!(
        run_binary(&probe, &[&addr, "-tls", "-tls-no-verify", &cert, &key]).await,
        (0, "status: SERVING\n".to_owned())
    );

    let (code, stderr) = run_binary(&probe, &[&addr, "-tls", &ca]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("client certificate") && stderr.contains("-tls-client-cert"),
        "{stderr}"
    );

    let (code, stderr) = run_binary(&probe, &[&addr, "-tls", &cert, &key]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("UnknownIssuer") && stderr.contains("-tls-ca-cert"),
        "the fix names this mode's flag: {stderr}"
    );
    assert!(!stderr.contains("--ca-cert"), "{stderr}");
}

#[tokio::test]
async fn grpc_health_probe_sends_its_headers_and_says_more_with_v() {
    let server = GrpcHealthServer::start("", ServingStatus::Serving, None).await;
    let (_dir, probe) = grpc_health_probe();
    let addr = format!("-addr={}", server.addr);
    let (code, stderr) = run_binary(
        &probe,
        &[
            &addr,
            "-rpc-header",
            "Authorization: Bearer t0ken",
            "-rpc-header=x-probe:yes",
            "-user-agent=kube-probe/1.33",
            "-v",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("connection established (took ")
            && stderr.contains("time elapsed: connect=")
            && stderr.ends_with("status: SERVING\n"),
        "{stderr}"
    );
    let headers = server.last_call().unwrap();
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["x-probe"], "yes");
    assert_eq!(headers[http::header::USER_AGENT], "kube-probe/1.33");
}

#[tokio::test]
async fn grpc_health_probe_refuses_its_invalid_combinations_with_exit_1() {
    let (_dir, probe) = grpc_health_probe();
    for (args, says) in [
        (&["-service=x"][..], "-addr not specified"),
        (
            &["-addr=:1", "-tls-ca-cert=ca.pem"][..],
            "without specifying -tls",
        ),
        (
            &["-addr=:1", "-tls", "-tls-no-verify", "-tls-ca-cert=ca.pem"][..],
            "cannot specify -tls-ca-cert with -tls-no-verify",
        ),
        (
            &["-addr=:1", "-tls", "-tls-client-cert=c.pem"][..],
            "without specifying -tls-client-key",
        ),
        (
            &["-addr=:1", "-connect-timeout=0s"][..],
            "greater than zero",
        ),
        (&["-addr=:1", "-rpc-timeout=soon"][..], "not a duration"),
        (&["-addr=:1", "-alts"][..], "-alts is not supported"),
        (&["-addr=:1", "-spiffe"][..], "-spiffe is not supported"),
        (
            &["-addr=:1", "-bogus"][..],
            "flag provided but not defined: -bogus",
        ),
        (
            &["-addr=:1", "-tls", "-tls-ca-cert=/nonexistent/ca.pem"][..],
            "-tls-ca-cert /nonexistent/ca.pem",
        ),
    ] {
        let (code, stderr) = run_binary(&probe, args).await;
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn grpc_health_probe_help_shows_its_single_dash_flags() {
    let (_dir, probe) = grpc_health_probe();
    let output = tokio::process::Command::new(&probe)
        .arg("-h")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("-addr <ADDR>") && help.contains("-tls-ca-cert <FILE>"),
        "{help}"
    );
    assert!(!help.contains("--"), "{help}");
}
