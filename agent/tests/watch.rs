//! The pod watch against a mock API server: events flip the answer, an unconfirmed state turns unhealthy, health calls never reach the API.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use healthbridge_agent::metrics::Metrics;
use healthbridge_agent::pod_status::watch::{self, Followed, PodState};
use healthbridge_agent::pod_status::{Freshness, OnStale, PodStatusSource, Target};
use healthbridge_agent::server::{AppState, admin_app};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_test::mock::{self, Handle, SendResponse};

const READY: &str = include_str!("data/pod-ready.json");
const CRASHLOOPING: &str = include_str!("data/pod-crashlooping.json");
const FORBIDDEN: &str = include_str!("data/forbidden.json");

/// The API side of the agent's client: the test answers each request by hand and so sees every one of them.
struct FakeApi {
    handle: Handle<Request<Body>, Response<Body>>,
    requests: usize,
}

/// The agent side: its watch state and the source `/health` reads.
struct Agent {
    state: channel::Receiver<PodState>,
    source: PodStatusSource,
    metrics: Arc<Metrics>,
    _cancel: tokio_util::sync::DropGuard,
}

fn agent_watching_web_0() -> (Agent, FakeApi) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "shop");
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let followed = Followed {
        name: "web-0".into(),
        namespace: "shop".into(),
        target: Target::AllAppContainers {
            except: "healthbridge-agent".into(),
        },
    };
    let max_staleness = Duration::from_secs(30);
    let state = watch::spawn(
        client,
        followed,
        max_staleness,
        Arc::clone(&metrics),
        cancel.clone(),
    );
    let source = PodStatusSource::watching(
        state.clone(),
        Freshness {
            max_staleness,
            on_stale: OnStale::Unhealthy,
        },
    );
    let agent = Agent {
        state,
        source,
        metrics,
        _cancel: cancel.drop_guard(),
    };
    (
        agent,
        FakeApi {
            handle,
            requests: 0,
        },
    )
}

impl FakeApi {
    async fn next(&mut self) -> (Request<Body>, SendResponse<Response<Body>>) {
        let request = self.handle.next_request().await.unwrap();
        self.requests += 1;
        request
    }

    /// Answers the next request, which must be the initial list filtered to the pod by name.
    async fn list(&mut self, pods: &[&str]) {
        let (request, reply) = self.next().await;
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert_eq!(request.uri().path(), "/api/v1/namespaces/shop/pods");
        assert!(
            query.contains("fieldSelector=metadata.name%3Dweb-0"),
            "{query}"
        );
        assert!(
            !query.contains("watch=true"),
            "expected a list, got {query}"
        );
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"PodList","metadata":{{"resourceVersion":"10"}},"items":[{}]}}"#,
            pods.join(",")
        );
        reply.send_response(Response::new(Body::from(body.into_bytes())));
    }

    /// Answers the next request, which must be a watch, with these events; the watch then ends (early: the agent watches again).
    async fn watch_events(&mut self, events: &[(&str, &str)]) {
        let (request, reply) = self.next().await;
        assert!(
            request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("watch=true"),
            "expected a watch: {}",
            request.uri()
        );
        let lines: String = events
            .iter()
            .map(|(kind, pod)| format!("{{\"type\":\"{kind}\",\"object\":{}}}\n", one_line(pod)))
            .collect();
        reply.send_response(Response::new(Body::from(lines.into_bytes())));
    }

    /// Answers the next request with an API error.
    async fn fail(&mut self, status: StatusCode, body: &str) {
        let (_request, reply) = self.next().await;
        let mut response = Response::new(Body::from(body.as_bytes().to_vec()));
        *response.status_mut() = status;
        reply.send_response(response);
    }

    /// Takes the next request and never answers it, like a hung connection.
    async fn hang(&mut self) -> SendResponse<Response<Body>> {
        self.next().await.1
    }

    /// Whether any request is waiting, after giving the agent a second (less than its own schedule) to send one.
    async fn has_pending_request(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(1), self.handle.next_request())
            .await
            .is_ok()
    }
}

fn one_line(json: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<serde_json::Value>(json).unwrap()).unwrap()
}

impl Agent {
    /// Waits for the watch to publish a state that satisfies `done`.
    async fn until(&mut self, done: impl Fn(&PodState) -> bool) {
        self.state.wait_for(|state| done(state)).await.unwrap();
    }

    fn healthy(&self) -> bool {
        self.source.current().healthy()
    }

    fn reason(&self) -> String {
        self.source
            .current()
            .failures()
            .map(|c| c.reason.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `GET /health` on the admin port, which tells the reasons.
    async fn get_health(&self) -> (StatusCode, String) {
        let state = AppState::new(
            self.source.clone(),
            StatusCode::SERVICE_UNAVAILABLE,
            Arc::clone(&self.metrics),
        );
        let response = admin_app(state)
            .oneshot(Request::get("/health").body(AxumBody::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

fn known(state: &PodState) -> bool {
    state.health.is_some()
}

#[tokio::test(start_paused = true)]
async fn watch_events_flip_the_answer() {
    let (mut agent, mut api) = agent_watching_web_0();
    assert!(!agent.healthy(), "unknown before the first listing");

    api.list(&[READY]).await;
    agent.until(known).await;
    assert!(agent.healthy(), "{}", agent.reason());

    api.watch_events(&[("MODIFIED", CRASHLOOPING)]).await;
    agent
        .until(|s| s.health.as_ref().is_some_and(|h| !h.healthy()))
        .await;
    assert_eq!(
        agent.reason(),
        "not ready: waiting (CrashLoopBackOff): back-off 40s restarting failed container"
    );

    api.watch_events(&[("MODIFIED", READY)]).await;
    agent
        .until(|s| s.health.as_ref().is_some_and(|h| h.healthy()))
        .await;

    api.watch_events(&[("DELETED", READY)]).await;
    agent
        .until(|s| s.health.as_ref().is_some_and(|h| !h.healthy()))
        .await;
    assert_eq!(
        agent.reason(),
        "pod \"web-0\" not found in namespace \"shop\""
    );
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_does_not_exist_is_unhealthy_with_a_reason() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.list(&[]).await;
    agent.until(known).await;
    assert!(!agent.healthy());
    assert_eq!(
        agent.reason(),
        "pod \"web-0\" not found in namespace \"shop\""
    );
}

#[tokio::test(start_paused = true)]
async fn health_requests_make_no_api_request() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.list(&[READY]).await;
    agent.until(known).await;
    let _open_watch = api.hang().await;
    let before = api.requests;

    for _ in 0..1000 {
        assert_eq!(agent.get_health().await, (StatusCode::OK, "OK".to_owned()));
    }

    assert!(
        !api.has_pending_request().await,
        "a health request reached the API"
    );
    assert_eq!(api.requests, before);
}

#[tokio::test(start_paused = true)]
async fn a_state_unconfirmed_longer_than_the_staleness_limit_answers_unhealthy() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.list(&[READY]).await;
    agent.until(known).await;

    api.fail(StatusCode::INTERNAL_SERVER_ERROR, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd unavailable","code":500}"#).await;
    agent.until(|s| s.failure.is_some()).await;
    assert!(
        agent.reason().is_empty() && agent.healthy(),
        "a briefly failing watch keeps the last answer"
    );
    assert!(
        agent
            .state
            .borrow()
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("answered 500 to the watch start: etcd unavailable")),
        "{:?}",
        agent.state.borrow().failure
    );
    let _retry = api.hang().await;

    tokio::time::advance(Duration::from_secs(31)).await;
    let (status, body) = agent.get_health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("UNAVAILABLE: pod: pod status unknown since "),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_watch_recovers_after_errors_and_counts_restarts() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.fail(StatusCode::INTERNAL_SERVER_ERROR, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd unavailable","code":500}"#).await;
    agent.until(|s| s.failure.is_some()).await;
    api.list(&[READY]).await;
    agent.until(|s| s.failure.is_none() && known(s)).await;
    assert!(agent.healthy());
    assert_eq!(agent.metrics.restarts("api_error"), 1);
}

#[tokio::test(start_paused = true)]
async fn forbidden_says_which_permission_is_missing_and_keeps_the_pod_out_of_all() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.fail(StatusCode::FORBIDDEN, FORBIDDEN).await;
    agent.until(|s| s.access_denied).await;
    assert!(!agent.healthy());
    assert!(
        agent
            .reason()
            .contains("forbids watching pod \"web-0\" in namespace \"shop\" (403)"),
        "{}",
        agent.reason()
    );
    assert!(!agent.source.reachable());
}
