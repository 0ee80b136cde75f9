//! Following the pod against a mock API server answered by hand, in paused time: the GET gives and confirms the
//! answer, watch events change it at once but confirm nothing, a GET and the watch that disagree are reconciled by
//! resourceVersion, and health calls never reach the API.
#![allow(clippy::unwrap_used)]

mod following;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use following::Following;
use futures::channel::mpsc;
use healthbridge_agent::pod_status::OnStale;
use healthbridge_agent::pod_status::watch::PodState;
use healthbridge_agent::server::{AppState, admin_app};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_test::mock::{self, Handle, SendResponse};

const READY: &str = include_str!("data/pod-ready.json");
const CRASHLOOPING: &str = include_str!("data/pod-crashlooping.json");
const FORBIDDEN: &str = include_str!("data/forbidden.json");
const CRASH_REASON: &str =
    "not ready: waiting (CrashLoopBackOff): back-off 40s restarting failed container";
const NOT_FOUND_REASON: &str = "pod \"web-0\" not found in namespace \"shop\"";
const ETCD_UNAVAILABLE: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd unavailable","code":500}"#;
const MAX_STALENESS: Duration = Duration::from_secs(30);

type MockBody = UnsyncBoxBody<Bytes, Infallible>;
type Reply = SendResponse<Response<MockBody>>;

/// The pod JSON at a resourceVersion, on one line (a watch event is one line).
fn at(pod: &str, resource_version: &str) -> String {
    let mut pod: Value = serde_json::from_str(pod).unwrap();
    pod["metadata"]["resourceVersion"] = json!(resource_version);
    pod.to_string()
}

fn body(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into()).boxed_unsync()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Watch,
    List,
}

fn kind_of(request: &Request<Body>) -> Kind {
    let query = request.uri().query().unwrap_or_default();
    match request.uri().path() {
        "/api/v1/namespaces/shop/pods/web-0" => Kind::Get,
        "/api/v1/namespaces/shop/pods" if query.split('&').any(|p| p == "watch=true") => {
            Kind::Watch
        }
        _ => Kind::List,
    }
}

/// The API side of the agent's client: the test answers each request by hand and so sees every one of them.
struct FakeApi {
    handle: Handle<Request<Body>, Response<MockBody>>,
    /// Requests taken from the agent but not yet asked for by the test (the GET and the watch run side by side).
    waiting: VecDeque<(Request<Body>, Reply)>,
    requests: usize,
}

/// A watch the test answered with an open stream: it sends events until dropped (the end of the stream).
struct OpenWatch {
    query: String,
    events: mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
}

impl OpenWatch {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
    }

    fn resource_version(&self) -> &str {
        self.param("resourceVersion").unwrap()
    }

    fn lifetime(&self) -> Duration {
        Duration::from_secs(self.param("timeoutSeconds").unwrap().parse().unwrap())
    }

    fn send_line(&self, line: String) {
        // The agent may have dropped the stream already (a superseded watch): that is part of the test.
        let _ = self
            .events
            .unbounded_send(Ok(Frame::data(Bytes::from(line + "\n"))));
    }

    fn event(&self, kind: &str, pod: &str, resource_version: &str) {
        let object: Value = serde_json::from_str(&at(pod, resource_version)).unwrap();
        self.send_line(json!({ "type": kind, "object": object }).to_string());
    }

    fn bookmark(&self, resource_version: &str) {
        self.send_line(
            json!({ "type": "BOOKMARK", "object": {
                "kind": "Pod", "apiVersion": "v1", "metadata": { "resourceVersion": resource_version },
            }})
            .to_string(),
        );
    }

    /// What kube-apiserver's watch cache sends for a resourceVersion older than its history.
    fn expired(&self) {
        self.send_line(
            json!({ "type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version: 10 (500)", "reason": "Expired", "code": 410,
            }})
            .to_string(),
        );
    }
}

fn agent_watching_web_0() -> (Agent, FakeApi) {
    let (service, handle) = mock::pair::<Request<Body>, Response<MockBody>>();
    let client = Client::new(service, "shop");
    let agent = following::web_0(client, MAX_STALENESS, OnStale::Unhealthy);
    let api = FakeApi {
        handle,
        waiting: VecDeque::new(),
        requests: 0,
    };
    (agent, api)
}

impl FakeApi {
    /// The next request of this kind; requests of other kinds wait for their turn.
    async fn next(&mut self, kind: Kind) -> (Request<Body>, Reply) {
        if let Some(index) = self.waiting.iter().position(|(r, _)| kind_of(r) == kind) {
            return self.waiting.remove(index).unwrap();
        }
        loop {
            let request = self.handle.next_request().await.unwrap();
            self.requests += 1;
            if kind_of(&request.0) == kind {
                return request;
            }
            assert_ne!(
                kind_of(&request.0),
                Kind::List,
                "the agent lists: {}",
                request.0.uri()
            );
            self.waiting.push_back(request);
        }
    }

    /// Answers the next GET, which must be a plain `GET pods/web-0` (no resourceVersion: a read from etcd).
    async fn get(&mut self, pod: &str, resource_version: &str) {
        let (request, reply) = self.next(Kind::Get).await;
        assert_eq!(request.uri().query(), None, "{}", request.uri());
        reply.send_response(Response::new(body(at(pod, resource_version))));
    }

    /// Answers the next GET with an API error.
    async fn get_fails(&mut self, status: StatusCode, status_body: &str) {
        let (_request, reply) = self.next(Kind::Get).await;
        let mut response = Response::new(body(status_body.to_owned()));
        *response.status_mut() = status;
        reply.send_response(response);
    }

    /// Answers the next GET like kube-apiserver for a pod that does not exist.
    async fn get_not_found(&mut self) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods \"web-0\" not found", "reason": "NotFound",
            "details": { "name": "web-0", "kind": "pods" }, "code": 404,
        });
        self.get_fails(StatusCode::NOT_FOUND, &status.to_string())
            .await;
    }

    /// Takes the next GET and never answers it, like a hung connection.
    async fn get_hangs(&mut self) -> Reply {
        self.next(Kind::Get).await.1
    }

    /// Answers the next watch, filtered to the pod by name, with an open stream.
    async fn watch(&mut self) -> OpenWatch {
        let (request, reply) = self.next(Kind::Watch).await;
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(
            query.contains("fieldSelector=metadata.name%3Dweb-0"),
            "{query}"
        );
        assert!(query.contains("allowWatchBookmarks=true"), "{query}");
        let (events, stream) = mpsc::unbounded();
        reply.send_response(Response::new(StreamBody::new(stream).boxed_unsync()));
        OpenWatch { query, events }
    }

    /// Answers every GET with this pod until a watch comes, and answers that; how many GETs came first.
    async fn answer_gets_until_a_watch(
        &mut self,
        pod: &str,
        resource_version: &str,
    ) -> (usize, OpenWatch) {
        let mut gets = 0;
        loop {
            if self.waiting.iter().any(|(r, _)| kind_of(r) == Kind::Watch) {
                return (gets, self.watch().await);
            }
            let request = self.handle.next_request().await.unwrap();
            self.requests += 1;
            if kind_of(&request.0) == Kind::Get {
                gets += 1;
                request
                    .1
                    .send_response(Response::new(body(at(pod, resource_version))));
            } else {
                self.waiting.push_back(request);
            }
        }
    }

    /// Answers every GET with this pod for `period` of (paused) time; how many came. Fails on any other request.
    async fn answer_gets_for(
        &mut self,
        period: Duration,
        pod: &str,
        resource_version: &str,
    ) -> usize {
        let until = tokio::time::Instant::now() + period;
        let mut gets = 0;
        while let Ok(request) = tokio::time::timeout_at(until, self.handle.next_request()).await {
            let (request, reply) = request.unwrap();
            self.requests += 1;
            assert_eq!(kind_of(&request), Kind::Get, "{}", request.uri());
            gets += 1;
            reply.send_response(Response::new(body(at(pod, resource_version))));
        }
        gets
    }

    /// A request the agent sent within a second (less than a round), if any.
    async fn pending_request(&mut self) -> Option<String> {
        if let Some((request, _)) = self.waiting.front() {
            return Some(request.uri().to_string());
        }
        let (request, reply) =
            tokio::time::timeout(Duration::from_secs(1), self.handle.next_request())
                .await
                .ok()??;
        let uri = request.uri().to_string();
        self.waiting.push_back((request, reply));
        Some(uri)
    }
}

/// The agent side: its state and the source `/health` reads.
type Agent = Following;

impl Agent {
    /// Waits for a state that satisfies `done`.
    async fn until(&mut self, done: impl Fn(&PodState) -> bool) {
        self.state.wait_for(|state| done(state)).await.unwrap();
    }

    /// Lets the agent handle whatever it was sent (paused time: every ready task runs before the clock moves).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    fn confirmed(&self) -> Option<tokio::time::Instant> {
        self.state.borrow().confirmed.map(|contact| contact.at)
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
    state.health.is_some() && state.confirmed.is_some()
}

fn unhealthy(state: &PodState) -> bool {
    state.health.as_ref().is_some_and(|h| !h.healthy())
}

fn healthy(state: &PodState) -> bool {
    state.health.as_ref().is_some_and(|h| h.healthy())
}

/// The agent after its first GET (READY at 10) and with its watch open from there.
async fn ready_and_watching() -> (Agent, FakeApi, OpenWatch) {
    let (mut agent, mut api) = agent_watching_web_0();
    api.get(READY, "10").await;
    agent.until(known).await;
    let watch = api.watch().await;
    (agent, api, watch)
}

#[tokio::test(start_paused = true)]
async fn the_first_get_gives_the_confirmed_answer_and_the_watch_starts_after_its_version() {
    let (mut agent, mut api) = agent_watching_web_0();
    assert!(!agent.healthy(), "unknown before the first GET");
    api.get(READY, "10").await;
    agent.until(known).await;
    assert!(agent.healthy(), "{}", agent.reason());
    let watch = api.watch().await;
    assert_eq!(watch.resource_version(), "10");
    assert!(
        (232..=290).contains(&watch.lifetime().as_secs()),
        "{}",
        watch.query
    );
}

#[tokio::test(start_paused = true)]
async fn watch_events_change_the_answer_at_once() {
    let (mut agent, _api, watch) = ready_and_watching().await;

    watch.event("MODIFIED", CRASHLOOPING, "11");
    agent.until(unhealthy).await;
    assert_eq!(agent.reason(), CRASH_REASON);

    watch.event("MODIFIED", READY, "12");
    agent.until(healthy).await;

    watch.event("DELETED", READY, "13");
    agent.until(unhealthy).await;
    assert_eq!(agent.reason(), NOT_FOUND_REASON);
}

#[tokio::test(start_paused = true)]
async fn events_and_bookmarks_do_not_confirm_the_state() {
    let (mut agent, _api, watch) = ready_and_watching().await;
    let confirmed = agent.confirmed().unwrap();
    // Lets the clock move on (less than a round), so that a confirmation would show as a later instant.
    tokio::time::sleep(Duration::from_secs(5)).await;

    watch.bookmark("20");
    watch.event("MODIFIED", CRASHLOOPING, "21");
    agent.until(unhealthy).await;
    watch.bookmark("22");
    agent.settle().await;

    assert_eq!(agent.confirmed(), Some(confirmed));
    let updated = agent.state.borrow().last_update.unwrap().at;
    assert!(updated > confirmed, "the event is the newest pod update");
}

#[tokio::test(start_paused = true)]
async fn a_pod_the_api_server_does_not_find_is_a_confirmed_not_found_answer() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.get_not_found().await;
    agent.until(known).await;
    assert!(!agent.healthy());
    assert_eq!(agent.reason(), NOT_FOUND_REASON);
    assert!(agent.state.borrow().failure.is_none());
    // Nothing to start after: the watch starts from the API server's current state.
    let watch = api.watch().await;
    assert_eq!(watch.resource_version(), "0");
    // A pod created again with that name is shown once a GET agrees.
    watch.event("ADDED", READY, "30");
    agent.settle().await;
    assert!(!agent.healthy());
    api.get(READY, "30").await;
    agent.until(healthy).await;
}

#[tokio::test(start_paused = true)]
async fn a_404_that_does_not_name_the_pod_is_an_error() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.get_fails(
        StatusCode::NOT_FOUND,
        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#,
    )
    .await;
    agent.until(|s| s.failure.is_some()).await;
    assert!(agent.state.borrow().confirmed.is_none());
    assert!(
        agent
            .reason()
            .contains("answered 404 for pods in namespace \"shop\""),
        "{}",
        agent.reason()
    );
    assert_eq!(agent.metrics.restarts("api_error"), 1);
}

#[tokio::test(start_paused = true)]
async fn health_requests_make_no_api_request() {
    let (agent, mut api, _watch) = ready_and_watching().await;
    let before = api.requests;

    for _ in 0..1000 {
        assert_eq!(agent.get_health().await, (StatusCode::OK, "OK".to_owned()));
    }

    assert_eq!(
        api.pending_request().await,
        None,
        "a health request reached the API"
    );
    assert_eq!(api.requests, before);
}

#[tokio::test(start_paused = true)]
async fn a_state_unconfirmed_longer_than_the_staleness_limit_answers_unhealthy() {
    let (mut agent, mut api, _watch) = ready_and_watching().await;

    api.get_fails(StatusCode::INTERNAL_SERVER_ERROR, ETCD_UNAVAILABLE)
        .await;
    agent.until(|s| s.failure.is_some()).await;
    assert!(
        agent.reason().is_empty() && agent.healthy(),
        "a briefly failing GET keeps the last answer"
    );
    assert!(
        agent
            .state
            .borrow()
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("answered 500 to the GET: etcd unavailable")),
        "{:?}",
        agent.state.borrow().failure
    );
    let _retry = api.get_hangs().await;

    tokio::time::advance(Duration::from_secs(31)).await;
    let (status, body) = agent.get_health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("UNAVAILABLE: pod: pod status unknown since "),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_get_recovers_after_errors_and_counts_them() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.get_fails(StatusCode::INTERNAL_SERVER_ERROR, ETCD_UNAVAILABLE)
        .await;
    agent.until(|s| s.failure.is_some()).await;
    api.get(READY, "10").await;
    agent.until(|s| s.failure.is_none() && known(s)).await;
    assert!(agent.healthy());
    assert_eq!(agent.metrics.restarts("api_error"), 1);
}

#[tokio::test(start_paused = true)]
async fn forbidden_says_which_permission_is_missing_and_keeps_the_pod_out_of_all() {
    let (mut agent, mut api) = agent_watching_web_0();
    api.get_fails(StatusCode::FORBIDDEN, FORBIDDEN).await;
    agent.until(|s| s.access_denied).await;
    assert!(!agent.healthy());
    assert!(
        agent
            .reason()
            .contains("forbids reading pod \"web-0\" in namespace \"shop\" (403)"),
        "{}",
        agent.reason()
    );
    assert!(!agent.source.reachable());
}

#[tokio::test(start_paused = true)]
async fn a_get_that_raced_a_newer_watch_event_keeps_the_newer_answer() {
    let (mut agent, mut api, watch) = ready_and_watching().await;
    // The next round's GET has read etcd (READY at 10) but its answer is still on the way...
    let (_request, reply) = api.next(Kind::Get).await;
    // ...when the watch brings the newer state.
    watch.event("MODIFIED", CRASHLOOPING, "11");
    agent.until(unhealthy).await;
    let before = agent.confirmed();

    reply.send_response(Response::new(body(at(READY, "10"))));
    // A GET that changes nothing is no news to the receivers: give the agent its turn, then look.
    agent.settle().await;

    assert_ne!(agent.confirmed(), before, "the GET confirmed");
    assert_eq!(
        agent.reason(),
        CRASH_REASON,
        "the older GET answer did not win"
    );
    assert_eq!(
        api.pending_request().await,
        None,
        "no new watch: the open one is ahead"
    );
    // The open watch goes on delivering.
    watch.event("MODIFIED", READY, "12");
    agent.until(healthy).await;
    assert_eq!(agent.metrics.restarts("behind"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_get_that_finds_a_version_the_watch_missed_publishes_it_and_restarts_the_watch_after_it()
{
    let (mut agent, mut api, silent) = ready_and_watching().await;

    // The watch says nothing about the change; the next round's GET sees it.
    api.get(CRASHLOOPING, "12").await;
    agent.until(unhealthy).await;
    assert_eq!(agent.reason(), CRASH_REASON);
    assert_eq!(agent.metrics.restarts("behind"), 1);

    let restarted = api.watch().await;
    assert_eq!(restarted.resource_version(), "12");
    // A late event of the replaced watch is not the answer; the new watch's events are.
    silent.event("MODIFIED", READY, "11");
    agent.settle().await;
    assert_eq!(agent.reason(), CRASH_REASON);
    restarted.event("MODIFIED", READY, "13");
    agent.until(healthy).await;
}

#[tokio::test(start_paused = true)]
async fn after_a_410_the_watch_starts_from_now_and_publishes_nothing_older_than_the_get() {
    let (mut agent, mut api, expired) = ready_and_watching().await;
    expired.expired();
    let now = api.watch().await;
    assert_eq!(now.resource_version(), "0");
    assert_eq!(agent.metrics.restarts("resource_expired"), 1);

    // An API server whose cache lags the GET shows an older pod first: held back.
    now.event("ADDED", CRASHLOOPING, "8");
    agent.settle().await;
    assert!(agent.healthy(), "{}", agent.reason());
    // It catches up with the version the GET gave; from there on its events are newer.
    now.event("MODIFIED", READY, "10");
    now.event("MODIFIED", CRASHLOOPING, "11");
    agent.until(unhealthy).await;
    assert_eq!(agent.reason(), CRASH_REASON);
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_ran_its_course_resumes_from_its_last_bookmark() {
    let (mut agent, mut api, first) = ready_and_watching().await;
    first.bookmark("50");
    let lifetime = first.lifetime();
    // The API server ends the watch at its timeoutSeconds; the GET rounds go on meanwhile.
    tokio::spawn(async move {
        tokio::time::sleep(lifetime).await;
        drop(first);
    });
    let (gets, resumed) = api.answer_gets_until_a_watch(READY, "10").await;

    assert_eq!(resumed.resource_version(), "50");
    assert!(gets >= 15, "{gets} GETs in {lifetime:?}");
    assert_eq!(agent.metrics.restarts("scheduled"), 1);
    resumed.event("MODIFIED", CRASHLOOPING, "51");
    agent.until(unhealthy).await;
}

#[tokio::test(start_paused = true)]
async fn in_steady_state_every_round_is_one_get_and_the_watch_is_not_restarted() {
    let (mut agent, mut api, _watch) = ready_and_watching().await;
    // 200 s of rounds of 12–15 s (80–100 % of MAX_STALENESS / 2); the watch lives 232–290 s.
    let period = Duration::from_secs(200);
    let gets = api.answer_gets_for(period, READY, "10").await;
    assert!((13..=17).contains(&gets), "{gets} GETs in {period:?}");
    agent.until(known).await;
    assert!(agent.healthy());
    assert_eq!(
        agent.metrics.restarts("scheduled") + agent.metrics.restarts("behind"),
        0
    );
}
