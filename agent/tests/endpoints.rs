//! Endpoint checks against local servers: concurrency, timeouts, statuses, redirects, caching, HTTPS and mTLS.
#![allow(clippy::unwrap_used)]

mod checks_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use checks_support::{Pki, TestServer};
use clap::Parser;
use healthbridge_agent::endpoints::{EndpointArgs, EndpointChecker};
use healthbridge_agent::tls::ClientTlsArgs;
use tokio::time::Instant;

fn checker(urls: &[String]) -> EndpointArgs {
    EndpointArgs {
        endpoints: urls.to_vec(),
        ..EndpointArgs::default()
    }
}

trait Build {
    fn timeout(self, t: Duration) -> Self;
    fn following_redirects(self) -> Self;
    fn cached_for(self, ttl: Duration) -> Self;
    fn with_tls(self, tls: ClientTlsArgs) -> Self;
    fn build(self) -> EndpointChecker;
}

impl Build for EndpointArgs {
    fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }
    fn following_redirects(self) -> Self {
        Self {
            follow_redirects: true,
            ..self
        }
    }
    fn cached_for(self, cache_ttl: Duration) -> Self {
        Self { cache_ttl, ..self }
    }
    fn with_tls(self, tls: ClientTlsArgs) -> Self {
        Self { tls, ..self }
    }
    fn build(self) -> EndpointChecker {
        EndpointChecker::new(&self).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn slow_endpoints_are_checked_concurrently_so_all_takes_about_one_latency() {
    let server = TestServer::plain().await;
    let urls: Vec<String> = (0..10).map(|_| server.url("/slow/1000")).collect();
    let checker = checker(&urls).timeout(Duration::from_secs(3)).build();

    let started = Instant::now();
    let results = checker.check_all().await;

    assert!(results.iter().all(|r| r.healthy), "{results:?}");
    assert_eq!(results.len(), 10);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?} of (paused) tokio time",
        started.elapsed()
    );
    assert_eq!(server.counters.max_in_flight.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn endpoints_that_never_answer_fail_after_one_timeout_not_the_sum() {
    let server = TestServer::plain().await;
    let urls: Vec<String> = (0..5).map(|_| server.url("/hang")).collect();
    let checker = checker(&urls).timeout(Duration::from_secs(3)).build();

    let started = Instant::now();
    let results = checker.check_all().await;

    assert!(
        results
            .iter()
            .all(|r| !r.healthy && r.reason == "no answer within 3s"),
        "{results:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4),
        "took {elapsed:?} of (paused) tokio time"
    );
}

#[tokio::test]
async fn every_failing_endpoint_is_named_with_its_status() {
    let server = TestServer::plain().await;
    let checker = checker(&[
        server.url("/ok"),
        server.url("/status/500"),
        server.url("/status/404"),
    ])
    .build();

    let results = checker.check_all().await;

    let summary: Vec<_> = results
        .iter()
        .map(|r| (r.name.as_str(), r.healthy, r.reason.as_str()))
        .collect();
    let ok = format!("endpoint:{}", server.url("/ok"));
    let broken = format!("endpoint:{}", server.url("/status/500"));
    let missing = format!("endpoint:{}", server.url("/status/404"));
    assert_eq!(
        summary,
        [
            (ok.as_str(), true, "HTTP 200 OK"),
            (broken.as_str(), false, "HTTP 500 Internal Server Error"),
            (missing.as_str(), false, "HTTP 404 Not Found"),
        ]
    );
    assert!(results.iter().all(|r| r.latency.is_some()));
}

#[tokio::test]
async fn a_redirect_is_a_healthy_status_unless_following_is_asked_for() {
    let server = TestServer::plain().await;
    let to_failure = server.url("/redirect/302?to=/status/500");

    let not_following = checker(std::slice::from_ref(&to_failure))
        .build()
        .check_all()
        .await;
    assert!(
        not_following[0].healthy && not_following[0].reason == "HTTP 302 Found",
        "{not_following:?}"
    );

    let following = checker(&[to_failure])
        .following_redirects()
        .build()
        .check_all()
        .await;
    assert!(
        !following[0].healthy && following[0].reason == "HTTP 500 Internal Server Error",
        "{following:?}"
    );
}

#[tokio::test]
async fn a_redirect_loop_is_reported() {
    let server = TestServer::plain().await;
    let looping = server.url("/redirect/301");
    let results = checker(&[looping])
        .following_redirects()
        .build()
        .check_all()
        .await;
    assert_eq!(results[0].reason, "more than 10 redirects");
    assert_eq!(server.counters.hits.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn a_closed_port_is_reported_as_cannot_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let results = checker(&[format!("http://{closed}/health")])
        .build()
        .check_all()
        .await;
    assert!(!results[0].healthy);
    assert!(
        results[0].reason.starts_with("cannot connect"),
        "{}",
        results[0].reason
    );
}

#[tokio::test]
async fn large_bodies_do_not_break_later_checks() {
    let server = TestServer::plain().await;
    let checker = checker(&[server.url("/big"), server.url("/ok")]).build();
    for _ in 0..3 {
        assert!(checker.check_all().await.iter().all(|r| r.healthy));
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_cache_concurrent_requests_share_one_round() {
    let server = TestServer::plain().await;
    let checker = checker(&[server.url("/slow/100"), server.url("/ok")])
        .cached_for(Duration::from_secs(5))
        .build();

    let rounds = futures::future::join_all((0..20).map(|_| checker.check_all())).await;

    assert!(
        rounds
            .iter()
            .all(|r| r.len() == 2 && r.iter().all(|c| c.healthy))
    );
    assert_eq!(
        server.counters.hits.load(Ordering::SeqCst),
        2,
        "one hit per endpoint for 20 concurrent requests"
    );

    tokio::time::advance(Duration::from_secs(6)).await;
    checker.check_all().await;
    assert_eq!(
        server.counters.hits.load(Ordering::SeqCst),
        4,
        "a new round once the cache expired"
    );
}

#[tokio::test]
async fn without_a_cache_every_request_checks_again() {
    let server = TestServer::plain().await;
    let checker = checker(&[server.url("/ok")])
        .cached_for(Duration::ZERO)
        .build();
    checker.check_all().await;
    checker.check_all().await;
    assert_eq!(server.counters.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_cache_concurrent_requests_still_share_the_round_in_flight() {
    let server = TestServer::plain().await;
    let checker = checker(&[server.url("/slow/100"), server.url("/ok")])
        .cached_for(Duration::ZERO)
        .build();

    let rounds = futures::future::join_all((0..50).map(|_| checker.check_all())).await;

    assert!(
        rounds
            .iter()
            .all(|r| r.len() == 2 && r.iter().all(|c| c.healthy))
    );
    assert_eq!(
        server.counters.hits.load(Ordering::SeqCst),
        2,
        "one hit per endpoint for 50 requests arriving while the round runs"
    );
}

#[test]
fn rounds_are_reused_for_one_second_by_default() {
    assert_eq!(EndpointArgs::default().cache_ttl, Duration::from_secs(1));
    let cli = Cli::try_parse_from(["agent"]).unwrap();
    assert_eq!(cli.endpoints.cache_ttl, Duration::from_secs(1));
}

#[tokio::test]
async fn endpoint_names_never_show_userinfo_or_query_and_the_public_name_is_the_position() {
    let server = TestServer::plain().await;
    let secret = format!(
        "http://admin:hunter2@{}/status/503?token=s3cr3t",
        server.addr
    );
    let checker = checker(&[server.url("/ok"), secret]).build();

    let results = checker.check_all().await;

    let failing = &results[1];
    assert_eq!(
        failing.name,
        format!(
            "endpoint:http://REDACTED@{}/status/503?REDACTED",
            server.addr
        )
    );
    assert_eq!(failing.public_name(), "endpoint:2");
    assert_eq!(results[0].public_name(), "endpoint:1");
    let everything = serde_json::to_string(&results).unwrap();
    assert!(
        !everything.contains("hunter2") && !everything.contains("s3cr3t"),
        "{everything}"
    );
}

#[tokio::test]
async fn https_endpoints_are_verified_against_the_given_ca() {
    let pki = Pki::generate();
    let server = TestServer::tls(&pki).await;

    let untrusted = checker(&[server.named_url("/ok")])
        .build()
        .check_all()
        .await;
    assert!(
        !untrusted[0].healthy && untrusted[0].reason.contains("cert"),
        "{untrusted:?}"
    );

    let trusted = checker(&[server.named_url("/ok")])
        .with_tls(ClientTlsArgs {
            ca_cert: Some(pki.ca_cert.clone()),
            ..ClientTlsArgs::default()
        })
        .build()
        .check_all()
        .await;
    assert!(trusted[0].healthy, "{trusted:?}");
}

#[tokio::test]
async fn a_server_whose_own_certificate_is_in_the_ca_file_is_trusted_as_pinned() {
    let pki = Pki::generate();
    let (cert, key) = pki.self_signed_ca_server(-1, 30);
    let server = TestServer::tls_with(&cert, &key).await;
    let pinned = ClientTlsArgs {
        ca_cert: Some(cert),
        ..ClientTlsArgs::default()
    };
    let results = checker(&[server.named_url("/ok")])
        .with_tls(pinned.clone())
        .build()
        .check_all()
        .await;
    assert!(results[0].healthy, "{results:?}");

    // Pinned still means the name must match the certificate.
    let other_name = checker(&[server.named_url("/ok")])
        .with_tls(ClientTlsArgs {
            server_name: Some("elsewhere.example".into()),
            ..pinned
        })
        .build()
        .check_all()
        .await;
    assert!(!other_name[0].healthy, "{other_name:?}");
    assert!(
        other_name[0].reason.contains("--server-name"),
        "the reason names the fix: {other_name:?}"
    );
}

#[tokio::test]
async fn an_expired_pinned_certificate_is_rejected_with_the_cause() {
    let pki = Pki::generate();
    let (cert, key) = pki.self_signed_ca_server(-30, -1);
    let server = TestServer::tls_with(&cert, &key).await;
    let results = checker(&[server.named_url("/ok")])
        .with_tls(ClientTlsArgs {
            ca_cert: Some(cert),
            ..ClientTlsArgs::default()
        })
        .build()
        .check_all()
        .await;
    assert!(!results[0].healthy, "{results:?}");
    assert!(results[0].reason.contains("expired"), "{results:?}");
}

#[tokio::test]
async fn an_untrusted_certificate_names_the_ca_flag_as_the_fix() {
    let pki = Pki::generate();
    let server = TestServer::tls(&pki).await;
    let results = checker(&[server.named_url("/ok")])
        .build()
        .check_all()
        .await;
    assert!(!results[0].healthy);
    assert!(
        results[0].reason.contains("not signed by a trusted CA")
            && results[0].reason.contains("--ca-cert"),
        "{results:?}"
    );
}

#[tokio::test]
async fn the_server_name_option_verifies_a_name_other_than_the_url_host() {
    let pki = Pki::generate();
    let server = TestServer::tls(&pki).await;
    let by_ip_with_name = ClientTlsArgs {
        ca_cert: Some(pki.ca_cert.clone()),
        server_name: Some("localhost".into()),
        ..ClientTlsArgs::default()
    };
    let results = checker(&[server.url("/ok")])
        .with_tls(by_ip_with_name)
        .build()
        .check_all()
        .await;
    assert!(results[0].healthy, "{results:?}");
}

#[tokio::test]
async fn mtls_endpoints_need_the_client_certificate() {
    let pki = Pki::generate();
    let server = TestServer::mtls(&pki).await;
    let ca_only = ClientTlsArgs {
        ca_cert: Some(pki.ca_cert.clone()),
        ..ClientTlsArgs::default()
    };

    let without = checker(&[server.named_url("/ok")])
        .with_tls(ca_only.clone())
        .build()
        .check_all()
        .await;
    assert!(!without[0].healthy, "{without:?}");

    let with_identity = ClientTlsArgs {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..ca_only
    };
    let with = checker(&[server.named_url("/ok")])
        .with_tls(with_identity)
        .build()
        .check_all()
        .await;
    assert!(with[0].healthy, "{with:?}");
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    endpoints: EndpointArgs,
}

#[test]
fn flags_parse_with_old_duration_forms() {
    let cli = Cli::try_parse_from([
        "agent",
        "--endpoint",
        "http://a/",
        "--endpoint=http://b/,http://c/",
        "--timeout",
        "500ms",
        "--follow-redirects",
        "--cache-ttl",
        "2",
    ])
    .unwrap();
    assert_eq!(
        cli.endpoints.urls().collect::<Vec<_>>(),
        ["http://a/", "http://b/", "http://c/"]
    );
    assert_eq!(cli.endpoints.timeout, Duration::from_millis(500));
    assert!(cli.endpoints.follow_redirects);
    assert_eq!(cli.endpoints.cache_ttl, Duration::from_secs(2));
}

#[test]
fn a_bad_duration_flag_is_an_error_naming_the_flag() {
    let err = Cli::try_parse_from(["agent", "--timeout", "soon"])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--timeout") && err.contains("soon"), "{err}");
}

#[test]
fn an_unknown_tls_file_is_a_start_up_error() {
    let args = EndpointArgs {
        endpoints: vec!["https://localhost/".into()],
        tls: ClientTlsArgs {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..ClientTlsArgs::default()
        },
        ..EndpointArgs::default()
    };
    let err = EndpointChecker::new(&args).unwrap_err().to_string();
    assert!(err.contains("--ca-cert /nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn concurrent_all_requests_hit_each_endpoint_once_per_round_over_at_most_one_connection_each()
{
    use std::sync::Arc;

    use healthbridge_agent::metrics::Metrics;
    use healthbridge_agent::pod_status::PodStatusSource;
    use healthbridge_agent::server::{AppState, app};
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    let server = TestServer::plain().await;
    let checker = checker(&[server.url("/slow/200"), server.url("/ok")]).build();
    let mut state = AppState::new(
        PodStatusSource::fixed(true),
        StatusCode::SERVICE_UNAVAILABLE,
        Arc::new(Metrics::default()),
    );
    state.all_checks.push(Arc::new(checker));
    let router = app(state);

    let answers = futures::future::join_all((0..500).map(|_| {
        let request = Request::get("/all")
            .body(axum::body::Body::empty())
            .unwrap();
        router.clone().oneshot(request)
    }))
    .await;

    assert!(answers.iter().all(|a| a.as_ref().unwrap().status() == 200));
    assert_eq!(
        server.counters.hits.load(Ordering::SeqCst),
        2,
        "500 concurrent /all requests make one round: one hit per endpoint"
    );
    assert!(
        server.counters.connections.load(Ordering::SeqCst) <= 2,
        "at most one outbound connection per endpoint, got {}",
        server.counters.connections.load(Ordering::SeqCst)
    );
}
