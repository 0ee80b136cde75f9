//! The HTTP surfaces through `oneshot()`: the published port (`app`: codes, HEAD, 404, names of failing checks and
//! nothing more) and the admin port (`admin_app`: verbose, JSON, reasons, exec output, metrics).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use futures::future::BoxFuture;
use healthbridge_agent::metrics::Metrics;
use healthbridge_agent::pod_status::PodStatusSource;
use healthbridge_agent::report::CheckResult;
use healthbridge_agent::server::{AppState, CheckSet, admin_app, app};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

fn healthy_agent() -> AppState {
    AppState::new(
        PodStatusSource::fixed(true),
        StatusCode::SERVICE_UNAVAILABLE,
        Arc::new(Metrics::default()),
    )
}

fn unhealthy_agent() -> AppState {
    AppState::new(
        PodStatusSource::fixed(false),
        StatusCode::SERVICE_UNAVAILABLE,
        Arc::new(Metrics::default()),
    )
}

/// A fixed set of check results, standing in for endpoints or exec checks.
struct Fixed(Vec<CheckResult>);

impl CheckSet for Fixed {
    fn run(&self) -> BoxFuture<'_, Vec<CheckResult>> {
        Box::pin(async move { self.0.clone() })
    }
}

trait StateExt {
    fn with_unhealthy_status(self, status: StatusCode) -> Self;
    fn with_checks(self, checks: Vec<CheckResult>) -> Self;
}

impl StateExt for AppState {
    fn with_unhealthy_status(mut self, status: StatusCode) -> Self {
        self.unhealthy_status = status;
        self
    }

    fn with_checks(mut self, checks: Vec<CheckResult>) -> Self {
        self.all_checks.push(Arc::new(Fixed(checks)));
        self
    }
}

async fn send(router: Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn get(state: AppState, uri: &str) -> Answer {
    send(app(state), Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_admin(state: AppState, uri: &str) -> Answer {
    send(
        admin_app(state),
        Request::get(uri).body(Body::empty()).unwrap(),
    )
    .await
}

/// `Accept: application/json` on the admin port.
async fn get_json(state: AppState, uri: &str) -> serde_json::Value {
    let answer = send(
        admin_app(state),
        Request::get(uri)
            .header(ACCEPT, "application/json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.content_type, "application/json");
    serde_json::from_str(&answer.body).unwrap()
}

#[tokio::test]
async fn a_healthy_pod_answers_200_ok() {
    let answer = get(healthy_agent(), "/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "OK");
}

#[tokio::test]
async fn an_unhealthy_pod_answers_503_naming_the_failing_check_and_the_admin_port_tells_why() {
    let answer = get(unhealthy_agent(), "/health").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "UNAVAILABLE: pod");
    let admin = get_admin(unhealthy_agent(), "/health").await;
    assert_eq!(admin.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(admin.body, "UNAVAILABLE: pod: STATE_OVERRIDE=false");
}

#[tokio::test]
async fn the_published_port_serves_no_metrics_no_verbose_and_no_json() {
    assert_eq!(
        get(unhealthy_agent(), "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
    let verbose = get(unhealthy_agent(), "/health?verbose").await;
    assert_eq!(verbose.body, "UNAVAILABLE: pod");
    let json = send(
        app(unhealthy_agent()),
        Request::get("/all")
            .header(ACCEPT, "application/json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json.content_type, "text/plain; charset=utf-8");
    assert_eq!(json.body, "UNAVAILABLE: pod");
}

#[tokio::test]
async fn termination_messages_and_endpoint_urls_never_reach_the_published_port() {
    let state = healthy_agent()
        .with_checks(vec![CheckResult::fail(
            "container:app",
            "not ready: terminated (Error, exit code 1): connecting with password=hunter2",
        )])
        .with_checks(vec![
            CheckResult::fail(
                "endpoint:http://REDACTED@10.0.0.7:8080/ready?REDACTED",
                "HTTP 503",
            )
            .with_public_name("endpoint:1"),
        ]);
    for path in ["/all", "/all?verbose"] {
        let answer = get(state.clone(), path).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answer.body, "UNAVAILABLE: container:app, endpoint:1",
            "{path}"
        );
    }
    let admin = get_admin(state, "/all?verbose").await;
    assert!(admin.body.contains("password=hunter2"), "{}", admin.body);
    assert!(admin.body.contains("10.0.0.7:8080"), "{}", admin.body);
}

#[tokio::test]
async fn the_unhealthy_status_is_configurable() {
    let answer = get(
        unhealthy_agent().with_unhealthy_status(StatusCode::INTERNAL_SERVER_ERROR),
        "/health",
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn head_answers_the_status_without_a_body() {
    let request = Request::builder()
        .method(Method::HEAD)
        .uri("/health")
        .body(Body::empty())
        .unwrap();
    let answer = send(app(unhealthy_agent()), request).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "");
}

#[tokio::test]
async fn unknown_paths_are_404_not_a_redirect_nor_200() {
    for path in ["/", "/healthz", "/health/", "/quit", "/debug/pprof/"] {
        assert_eq!(
            get(healthy_agent(), path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn other_methods_are_refused() {
    let request = Request::post("/health").body(Body::empty()).unwrap();
    assert_eq!(
        send(app(healthy_agent()), request).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn verbose_lists_each_check_like_readyz() {
    let answer = get_admin(unhealthy_agent(), "/health?verbose").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.body,
        "[-]pod failed: STATE_OVERRIDE=false\nhealth check failed\n"
    );
}

#[tokio::test]
async fn json_on_request() {
    let json = get_json(healthy_agent(), "/health").await;
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["checks"][0]["name"], "pod");
    assert_eq!(json["checks"][0]["healthy"], true);
}

#[tokio::test]
async fn self_answers_as_soon_as_the_server_listens_whatever_the_pod() {
    let answer = get(unhealthy_agent(), "/self").await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn all_combines_the_pod_and_every_other_check_naming_the_failures() {
    let state = healthy_agent()
        .with_checks(vec![CheckResult::pass(
            "endpoint:http://127.0.0.1:8080/ready",
            "HTTP 200",
        )])
        .with_checks(vec![CheckResult::fail("exec:/healthz", "exit status 1")]);
    let answer = get(state.clone(), "/all").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "UNAVAILABLE: exec:/healthz");
    let admin = get_admin(state, "/all").await;
    assert_eq!(admin.body, "UNAVAILABLE: exec:/healthz: exit status 1");
}

#[tokio::test]
async fn all_verbose_lists_the_pod_then_the_other_checks() {
    let state = healthy_agent().with_checks(vec![CheckResult::pass(
        "endpoint:http://127.0.0.1:8080/ready",
        "HTTP 200",
    )]);
    let answer = get_admin(state, "/all?verbose").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        "[+]pod ok: STATE_OVERRIDE=true\n[+]endpoint:http://127.0.0.1:8080/ready ok: HTTP 200\nall check passed\n"
    );
}

#[tokio::test]
async fn all_leaves_out_a_pod_status_this_agent_cannot_know() {
    let mut state = healthy_agent().with_checks(vec![CheckResult::pass(
        "endpoint:http://127.0.0.1:8080/ready",
        "HTTP 200",
    )]);
    state.pod = PodStatusSource::unavailable("no Kubernetes API configuration");
    let json = get_json(state.clone(), "/all").await;
    assert_eq!(json["healthy"], true);
    assert_eq!(json["checks"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(state, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn metrics_count_answers_by_route_and_result() {
    let state = unhealthy_agent();
    for _ in 0..2 {
        send(
            app(state.clone()),
            Request::get("/health").body(Body::empty()).unwrap(),
        )
        .await;
    }
    let answer = send(
        admin_app(state),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body.contains(
            r#"healthbridge_agent_health_answers_total{route="/health",result="unhealthy"} 2"#
        ),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains(r#"healthbridge_agent_watch_restarts_total{cause="timeout"} 0"#),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("healthbridge_agent_seconds_since_pod_update -1"),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("healthbridge_agent_seconds_since_confirmed_contact -1"),
        "{}",
        answer.body
    );
}

async fn agent_with_exec(specs: &[&str]) -> AppState {
    use healthbridge_agent::exec::{ExecArgs, ExecChecks};
    let args = ExecArgs {
        exec: specs.iter().map(|s| (*s).to_owned()).collect(),
        ..ExecArgs::default()
    };
    let mut state = healthy_agent();
    // The runners live as long as the test's runtime; nothing cancels them earlier.
    let handle = ExecChecks::new(&args).unwrap().spawn(
        Arc::clone(&state.metrics),
        tokio_util::sync::CancellationToken::new(),
    );
    handle.first_results().await;
    state.all_checks.push(Arc::new(handle.clone()));
    state.exec = Some(handle);
    state
}

#[tokio::test]
async fn each_exec_check_answers_at_its_own_url_with_details_on_the_admin_port() {
    let state = agent_with_exec(&["/ready=true", "/live=false"]).await;
    let ready = get_admin(state.clone(), "/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(ready.body.starts_with("ok: /ready"), "{}", ready.body);
    assert!(ready.body.contains("command: true"), "{}", ready.body);
    let live = get_admin(state, "/live").await;
    assert_eq!(live.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(live.body.starts_with("unhealthy: /live"), "{}", live.body);
}

#[tokio::test]
async fn exec_output_never_reaches_the_published_port() {
    let state = agent_with_exec(&["/check=echo token=s3cr3t; exit 1"]).await;
    let public = get(state.clone(), "/check").await;
    assert_eq!(public.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(public.body, "unhealthy: /check\n");
    let admin = get_admin(state, "/check").await;
    assert!(admin.body.contains("token=s3cr3t"), "{}", admin.body);
}

#[tokio::test]
async fn exec_check_runs_are_counted_in_the_check_metrics_by_path_and_result() {
    let state = agent_with_exec(&["/ready=true", "/live=false"]).await;
    let metrics = get_admin(state, "/metrics").await.body;
    for line in [
        r#"healthbridge_agent_check_runs_total{kind="exec",path="/ready",result="healthy"}"#,
        r#"healthbridge_agent_check_runs_total{kind="exec",path="/live",result="unhealthy"}"#,
        r#"healthbridge_agent_check_duration_seconds{kind="exec",path="/ready"}"#,
        r#"healthbridge_agent_check_duration_seconds{kind="exec",path="/live"}"#,
    ] {
        assert!(metrics.contains(line), "no {line} in {metrics}");
    }
}

#[tokio::test]
async fn all_includes_the_exec_checks_by_name() {
    let state = agent_with_exec(&["/ready=true", "/live=false"]).await;
    let json = get_json(state, "/all").await;
    let names: Vec<_> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["pod", "exec:/ready", "exec:/live"]);
    assert_eq!(json["healthy"], false);
}
