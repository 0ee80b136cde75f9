//! `/health` under control-plane faults, against a fake API server on loopback that fails at the TCP level: the
//! answer turns "pod status unknown since …" within MAX_STALENESS + 2 s of any fault that stops the GETs (a watch
//! that keeps delivering does not help), `last-known` keeps it but marks it stale, and both are back to the true
//! state within 5 s of the API answering again. A broken or silent watch alone costs latency, never freshness.
#![allow(clippy::unwrap_used)]

mod fake_api;
mod following;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use fake_api::{FakeApi, Fault, Kind};
use following::Following;
use healthbridge_agent::metrics::Metrics;
use healthbridge_agent::pod_status::OnStale;
use healthbridge_agent::pod_status::watch::{self, PodState};
use healthbridge_agent::server::{AppState, STALE_HEADER, admin_app};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch as channel;
use tokio::time::Instant;
use tokio_util::sync::DropGuard;
use tower::ServiceExt;

const READY: &str = include_str!("data/pod-ready.json");
const CRASHLOOPING: &str = include_str!("data/pod-crashlooping.json");

const MAX_STALENESS: Duration = Duration::from_secs(2);
/// The bound of the issue: unhealthy (or marked stale) no later than MAX_STALENESS + 2 s after the fault.
const DETECTION_BOUND: Duration = Duration::from_secs(4);
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// A change the watch missed is seen at the next GET: at most one round (MAX_STALENESS / 2), plus a second for the
/// request and the polling on a busy machine.
const ONE_ROUND_AND_SLACK: Duration = Duration::from_secs(2);

/// An agent following pod `web-0` at the fake API, answering `/health` through its real router.
struct Agent {
    state: channel::Receiver<PodState>,
    router: axum::Router,
    metrics: Arc<Metrics>,
    _cancel: DropGuard,
}

/// One `/health?verbose` answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    stale: Option<String>,
    body: String,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status == StatusCode::OK && self.stale.is_none()
    }

    fn unknown(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self
                .body
                .contains("[-]pod failed: pod status unknown since ")
    }

    fn crashlooping(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self.stale.is_none()
            && self.body.contains("CrashLoopBackOff")
    }

    fn stale_but_healthy(&self) -> bool {
        self.status == StatusCode::OK
            && self.stale.is_some()
            && self
                .body
                .contains("[+]stale ok: last known pod status, unconfirmed since ")
    }
}

enum Client {
    /// What the agent builds: kube-client without its retry layer.
    Agent,
    /// kube-client's defaults, retry layer included: the bound must hold whatever the library does inside.
    KubeDefault,
}

impl Agent {
    fn start(api: &FakeApi, on_stale: OnStale) -> Self {
        Self::start_with(api, on_stale, MAX_STALENESS, &Client::Agent)
    }

    fn start_with(
        api: &FakeApi,
        on_stale: OnStale,
        max_staleness: Duration,
        client: &Client,
    ) -> Self {
        let mut config = kube::Config::new(api.url().parse().unwrap());
        config.default_namespace = "shop".into();
        let client = match client {
            Client::Agent => watch::client(config).unwrap(),
            Client::KubeDefault => kube::Client::try_from(config).unwrap(),
        };
        let Following {
            state,
            source,
            metrics,
            cancel,
        } = following::web_0(client, max_staleness, on_stale);
        // The admin port: its verbose body carries the reason the published port leaves out.
        let router = admin_app(AppState::new(
            source,
            StatusCode::SERVICE_UNAVAILABLE,
            Arc::clone(&metrics),
        ));
        Self {
            state,
            router,
            metrics,
            _cancel: cancel,
        }
    }

    async fn health(&self) -> Answer {
        let request = Request::get("/health?verbose").body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let stale = response
            .headers()
            .get(STALE_HEADER)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            stale,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// Polls `/health` with backoff until `wanted`; every answer on the way must satisfy `meanwhile`.
    /// Returns the time from `since` to the first wanted answer; fails past `since + within`.
    async fn until(
        &self,
        what: &str,
        since: Instant,
        within: Duration,
        wanted: impl Fn(&Answer) -> bool,
        meanwhile: impl Fn(&Answer) -> bool,
    ) -> Duration {
        let mut delay = Duration::from_millis(10);
        loop {
            let answer = self.health().await;
            let elapsed = since.elapsed();
            if wanted(&answer) {
                return elapsed;
            }
            assert!(meanwhile(&answer), "while waiting for {what}: {answer:?}");
            assert!(
                elapsed <= within,
                "{what}: not within {within:?} ({elapsed:?}); last answer {answer:?}"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_millis(100));
        }
    }

    /// Waits for the first 200, at most `RECOVERY_BOUND` after `start`.
    async fn answers_200_since(&self, start: Instant) {
        self.until("the first 200", start, RECOVERY_BOUND, Answer::ok, anything)
            .await;
    }

    /// Waits for the first 200 and for the agent's watch on `api`.
    async fn answers_200_and_watches(&self, api: &FakeApi) {
        self.answers_200_since(Instant::now()).await;
        eventually("a watch", RECOVERY_BOUND, || api.count(Kind::Watch) > 0).await;
    }

    /// The time from `fault_at` to "pod status unknown since …", within the bound.
    async fn unknown_after(&self, fault_at: Instant) -> Duration {
        self.until(
            "unknown since",
            fault_at,
            DETECTION_BOUND,
            Answer::unknown,
            anything,
        )
        .await
    }

    /// The time from `fault_at` to the last-known answer marked stale (`what`), within the bound; 200 all along.
    async fn stale_mark_after(&self, what: &str, fault_at: Instant) -> Duration {
        self.until(
            what,
            fault_at,
            DETECTION_BOUND,
            Answer::stale_but_healthy,
            |a| a.status == StatusCode::OK,
        )
        .await
    }

    /// The time from `healed_at` back to a plain 200 (`what`), within the recovery bound.
    async fn back_to_200(&self, what: &str, healed_at: Instant) -> Duration {
        self.until(what, healed_at, RECOVERY_BOUND, Answer::ok, anything)
            .await
    }

    /// Asserts `/health` satisfies `always` on every poll for `period`.
    async fn holds_for(&self, what: &str, period: Duration, always: impl Fn(&Answer) -> bool) {
        let start = Instant::now();
        while start.elapsed() < period {
            let answer = self.health().await;
            assert!(
                always(&answer),
                "{what}: broken after {:?}: {answer:?}",
                start.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn anything(_: &Answer) -> bool {
    true
}

/// One agent of each mode, both answering 200 for the ready pod.
async fn ready_agents(api: &FakeApi) -> (Agent, Agent) {
    let strict = Agent::start(api, OnStale::Unhealthy);
    let lenient = Agent::start(api, OnStale::LastKnown);
    let start = Instant::now();
    strict.answers_200_since(start).await;
    lenient.answers_200_since(start).await;
    (strict, lenient)
}

/// The whole story of one fault: unknown (strict) and stale-but-kept (lenient) within the bound, both
/// back to a plain 200 within 5 s of the heal. Prints the measured times for the record.
async fn fault_is_detected_and_recovered(fault: Fault) {
    let api = FakeApi::start(READY).await;
    let (strict, lenient) = ready_agents(&api).await;

    let fault_at = Instant::now();
    api.set_fault(fault).await;
    let to_unknown = strict.unknown_after(fault_at).await;
    let to_stale = lenient.stale_mark_after("the stale mark", fault_at).await;

    let healed_at = Instant::now();
    api.set_fault(Fault::None).await;
    let strict_back = strict.back_to_200("200 after the heal", healed_at).await;
    let lenient_back = lenient
        .until(
            "an unmarked 200 after the heal",
            healed_at,
            RECOVERY_BOUND,
            Answer::ok,
            |a| a.status == StatusCode::OK,
        )
        .await;
    eprintln!(
        "measured {fault:?} (MAX_STALENESS {MAX_STALENESS:?}): fault→503 {to_unknown:?}, fault→stale mark {to_stale:?}, \
         heal→200 unhealthy-mode {strict_back:?}, heal→200 last-known {lenient_back:?}"
    );
}

#[tokio::test]
async fn every_request_answered_503_forever() {
    fault_is_detected_and_recovered(Fault::Status {
        code: 503,
        retry_after: None,
    })
    .await;
}

#[tokio::test]
async fn every_request_answered_429_with_retry_after_forever() {
    fault_is_detected_and_recovered(Fault::Status {
        code: 429,
        retry_after: Some(1),
    })
    .await;
}

#[tokio::test]
async fn connection_refused() {
    fault_is_detected_and_recovered(Fault::Refused).await;
}

#[tokio::test]
async fn a_blackholed_api_accepts_connections_and_never_answers() {
    fault_is_detected_and_recovered(Fault::Blackhole).await;
}

#[tokio::test]
async fn an_api_that_answers_gets_but_never_starts_a_watch_keeps_the_answer_confirmed_and_current()
{
    let api = FakeApi::start(READY).await;
    let (strict, lenient) = ready_agents(&api).await;
    api.set_fault(Fault::WatchHangs).await;
    // Only the GETs confirm, and they still work: never stale.
    for agent in [&strict, &lenient] {
        agent
            .holds_for(
                "200 while no watch can start",
                MAX_STALENESS * 2,
                Answer::ok,
            )
            .await;
    }
    let changed_at = Instant::now();
    api.set_pod(CRASHLOOPING);
    for agent in [&strict, &lenient] {
        let seen = agent
            .until(
                "the crash loop through the next GET",
                changed_at,
                ONE_ROUND_AND_SLACK,
                Answer::crashlooping,
                |a| a.ok() || a.crashlooping(),
            )
            .await;
        assert!(
            agent.metrics.restarts("timeout") > 0,
            "the watch starts ran into their deadline"
        );
        eprintln!("measured watch never starts: change→seen {seen:?}");
    }
}

#[tokio::test]
async fn the_bound_holds_with_kube_clients_own_retry_layer_on() {
    let api = FakeApi::start(READY).await;
    let agent = Agent::start_with(
        &api,
        OnStale::Unhealthy,
        MAX_STALENESS,
        &Client::KubeDefault,
    );
    agent.answers_200_since(Instant::now()).await;
    let fault_at = Instant::now();
    api.set_fault(Fault::Status {
        code: 503,
        retry_after: None,
    })
    .await;
    let to_unknown = agent.unknown_after(fault_at).await;
    let healed_at = Instant::now();
    api.set_fault(Fault::None).await;
    let back = agent.back_to_200("200 after the heal", healed_at).await;
    eprintln!("measured 503 with kube's retry layer: fault→503 {to_unknown:?}, heal→200 {back:?}");
}

#[tokio::test]
async fn a_one_second_cut_then_a_quiet_resumed_watch_stays_200() {
    let api = FakeApi::start(READY).await;
    let (strict, lenient) = ready_agents(&api).await;

    api.set_fault(Fault::Refused).await;
    // The length of the outage is the fault itself, not a wait for state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let healed_at = Instant::now();
    api.set_fault(Fault::None).await;
    let back = strict.back_to_200("200 after the cut", healed_at).await;
    lenient.back_to_200("200 after the cut", healed_at).await;
    // No pod event follows: only the agent's own rounds can keep the state confirmed.
    strict
        .holds_for(
            "200 on a quiet pod after the cut",
            MAX_STALENESS * 3,
            Answer::ok,
        )
        .await;
    lenient
        .holds_for(
            "200 on a quiet pod after the cut",
            MAX_STALENESS * 3,
            Answer::ok,
        )
        .await;
    let requests = api.requests();
    // The GET carries no resourceVersion: kube-apiserver reads it from etcd, not from its watch cache.
    assert!(
        requests
            .iter()
            .filter(|r| Kind::of(r) == Kind::Get)
            .all(|r| r == "/api/v1/namespaces/shop/pods/web-0"),
        "{requests:?}"
    );
    let watch = requests
        .iter()
        .find(|r| Kind::of(r) == Kind::Watch)
        .unwrap();
    assert!(watch.contains("allowWatchBookmarks=true"), "{watch}");
    assert!(
        watch.contains("fieldSelector=metadata.name%3Dweb-0"),
        "{watch}"
    );
    let lifetime: u32 = watch
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeoutSeconds="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((232..=290).contains(&lifetime), "{watch}");
    eprintln!("measured 1 s cut: heal→200 {back:?}");
}

#[tokio::test]
async fn after_an_outage_the_agent_answers_the_pods_true_state() {
    let api = FakeApi::start(READY).await;
    let (strict, lenient) = ready_agents(&api).await;

    let fault_at = Instant::now();
    api.set_fault(Fault::Refused).await;
    api.set_pod(CRASHLOOPING);
    lenient
        .stale_mark_after("the stale mark on the old answer", fault_at)
        .await;

    let healed_at = Instant::now();
    api.set_fault(Fault::None).await;
    for agent in [&strict, &lenient] {
        agent
            .until(
                "the crash loop",
                healed_at,
                RECOVERY_BOUND,
                Answer::crashlooping,
                anything,
            )
            .await;
    }
}

/// Polls until `done`, with backoff; fails past `within`.
async fn eventually(what: &str, within: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_watch_that_keeps_delivering_events_and_bookmarks_does_not_keep_the_answer_fresh_while_gets_fail()
 {
    let api = Arc::new(FakeApi::start(READY).await);
    let agent = Agent::start(&api, OnStale::Unhealthy);
    agent.answers_200_and_watches(&api).await;

    // etcd is gone: reads fail, the API server's cache keeps the watch going.
    let fault_at = Instant::now();
    api.set_fault(Fault::ReadsFail).await;
    api.set_pod(CRASHLOOPING);
    agent
        .until(
            "the crash loop, from the watch at once",
            fault_at,
            Duration::from_secs(1),
            Answer::crashlooping,
            |a| a.ok(),
        )
        .await;
    let confirmed = agent.state.borrow().confirmed.unwrap().at;
    let bookmarks = {
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            loop {
                api.bookmark();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let to_unknown = agent
        .until(
            "unknown since, despite the events and bookmarks",
            fault_at,
            DETECTION_BOUND,
            Answer::unknown,
            Answer::crashlooping,
        )
        .await;
    bookmarks.abort();
    assert_eq!(
        agent.state.borrow().confirmed.unwrap().at,
        confirmed,
        "an event or a bookmark advanced the confirmed contact"
    );
    assert!(
        agent
            .state
            .borrow()
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("answered 503 to the GET")),
        "{:?}",
        agent.state.borrow().failure
    );

    let healed_at = Instant::now();
    api.set_fault(Fault::None).await;
    agent
        .until(
            "the crash loop, confirmed again",
            healed_at,
            RECOVERY_BOUND,
            Answer::crashlooping,
            anything,
        )
        .await;
    eprintln!(
        "measured reads failing, watch delivering (MAX_STALENESS {MAX_STALENESS:?}): fault→503 unknown {to_unknown:?}"
    );
}

#[tokio::test]
async fn a_watch_that_went_silent_misses_a_change_and_the_next_get_shows_it_and_restarts_the_watch()
{
    let api = FakeApi::start(READY).await;
    let agent = Agent::start(&api, OnStale::Unhealthy);
    agent.answers_200_and_watches(&api).await;

    api.set_fault(Fault::WatchSilent).await;
    let changed_at = Instant::now();
    api.set_pod(CRASHLOOPING);
    let seen = agent
        .until(
            "the crash loop through the next GET",
            changed_at,
            ONE_ROUND_AND_SLACK,
            Answer::crashlooping,
            |a| a.ok(),
        )
        .await;
    assert_eq!(
        agent.metrics.restarts("behind"),
        1,
        "the GET restarts the watch that missed the change"
    );
    eventually(
        "the watch restarted after the GET's version",
        RECOVERY_BOUND,
        || {
            api.requests()
                .iter()
                .any(|r| Kind::of(r) == Kind::Watch && r.ends_with("&resourceVersion=2"))
        },
    )
    .await;
    // The GETs keep it confirmed although the watch says nothing.
    agent
        .holds_for(
            "the crash loop, confirmed",
            MAX_STALENESS * 2,
            Answer::crashlooping,
        )
        .await;
    eprintln!("measured silent watch: change→seen {seen:?}");
}

#[tokio::test]
async fn in_steady_state_each_round_is_one_get_and_the_watch_is_not_restarted() {
    let api = FakeApi::start(READY).await;
    let agent = Agent::start(&api, OnStale::Unhealthy);
    agent.answers_200_and_watches(&api).await;
    let (gets, watches) = (api.count(Kind::Get), api.count(Kind::Watch));

    let period = Duration::from_secs(5);
    let from = Instant::now();
    agent
        .holds_for("200 on a quiet pod", period, Answer::ok)
        .await;
    let elapsed = from.elapsed();

    let gets = api.count(Kind::Get) - gets;
    // Rounds last 80–100 % of MAX_STALENESS / 2, plus the GET itself: one GET each, no more.
    let shortest_round = (MAX_STALENESS / 2).mul_f64(0.8);
    let most = (elapsed.as_secs_f64() / shortest_round.as_secs_f64()).ceil() as usize + 1;
    let fewest = (elapsed.as_secs_f64() / (MAX_STALENESS / 2).as_secs_f64()) as usize / 2;
    assert!(
        (fewest..=most).contains(&gets),
        "{gets} GETs in {elapsed:?}, expected {fewest}..={most}: {:?}",
        api.requests()
    );
    assert_eq!(
        api.count(Kind::Watch) - watches,
        0,
        "the watch lives for minutes: {:?}",
        api.requests()
    );
    assert_eq!(api.count(Kind::List), 0, "{:?}", api.requests());
    eprintln!(
        "counted in {elapsed:?} (rounds of {:?}–{:?}): {gets} GETs, 0 watch starts, 0 lists",
        shortest_round,
        MAX_STALENESS / 2
    );
}

#[tokio::test]
async fn a_watch_event_changes_the_answer_at_once_without_waiting_for_a_get() {
    // A long staleness: the next GET is 24–30 s away, so only the watch can bring the change within the test.
    let api = FakeApi::start(READY).await;
    let agent = Agent::start_with(
        &api,
        OnStale::Unhealthy,
        Duration::from_secs(60),
        &Client::Agent,
    );
    agent.answers_200_and_watches(&api).await;
    let gets = api.count(Kind::Get);

    let changed_at = Instant::now();
    api.set_pod(CRASHLOOPING);
    let seen = agent
        .until(
            "the crash loop from the watch",
            changed_at,
            Duration::from_secs(1),
            Answer::crashlooping,
            Answer::ok,
        )
        .await;
    assert_eq!(api.count(Kind::Get), gets, "{:?}", api.requests());
    eprintln!("measured watch event: change→seen {seen:?}");
}
