//! Follows one pod with a GET every round (the only confirmation) and a long-lived watch beside it (changes at once),
//! and keeps the evaluated answer and its confirmation time in memory, so health requests never reach the API.
//!
//! Why a GET confirms and nothing else does: kube-apiserver answers a GET without resourceVersion from etcd (a
//! quorum read), never from its watch cache, so a successful GET proves that etcd answered just now. Watch starts,
//! events and bookmarks come from the watch cache, which keeps serving when etcd is gone. Which version to answer
//! from, and where the watch starts, is decided by the pure [`Tracker`].
//!
//! Why not kube-runtime's `watcher`: it resumes silently and hides where each answer came from, so an agent built on
//! it can only count errors, and errors are exactly what a blackholed connection or kube-client's retry layer never
//! produce. Here every request has a deadline and only a GET's answer advances [`PodState::confirmed`].

use std::error::Error as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{WatchEvent, WatchParams};
use kube::core::Status;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::{Backoff, Schedule};
pub use super::state::{Contact, PodState};
use super::tracker::{AfterEvent, AfterGet, GetTicket, Start, Tracker, Version};
use super::{Target, evaluate, missing_pod};
use crate::metrics::Metrics;

/// The pod being followed and how to judge it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub name: String,
    pub namespace: String,
    pub target: Target,
}

/// The API client of the agent, without kube-client's retry layer: that layer retries 429/503/504 inside a
/// request and so hides them; the agent retries itself, with jittered backoff, a deadline and the error in the
/// reason. (The staleness bound does not depend on it: a retried request only runs into the deadline.)
pub fn client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Starts following the pod; the returned receiver always holds the latest state. The GET rounds and the watch run
/// as two tasks, so with kube's HTTP/1.1 client each agent holds two connections to the API server.
pub fn spawn(
    client: Client,
    pod: Followed,
    max_staleness: Duration,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> watch::Receiver<PodState> {
    let (tx, rx) = watch::channel(PodState::default());
    let schedule = Schedule::for_max_staleness(max_staleness);
    let shared = Arc::new(Shared {
        api: Api::namespaced(client, &pod.namespace),
        selector: format!("metadata.name={}", pod.name),
        pod,
        schedule,
        metrics,
        tx,
        tracker: Mutex::new(Tracker::default()),
        orders: watch::channel(0).0,
    });
    let getter = Getter {
        shared: Arc::clone(&shared),
        max_staleness,
        backoff: Backoff::new(&schedule),
        reported_failure: false,
        reported_stale: false,
    };
    let watcher = Watcher {
        shared,
        backoff: Backoff::new(&schedule),
        reported_failure: false,
    };
    tokio::spawn(getter.run(cancel.clone()));
    tokio::spawn(watcher.run(cancel));
    rx
}

/// Why a request was retried or the watch restarted: the `cause` label of `watch_restarts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Scheduled,
    ResourceExpired,
    Closed,
    Timeout,
    ApiError,
    Transport,
    Invalid,
    Behind,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::ResourceExpired => "resource_expired",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
            Self::ApiError => "api_error",
            Self::Transport => "transport",
            Self::Invalid => "invalid",
            Self::Behind => "behind",
        }
    }
}

/// The request that failed, for the operator's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Get,
    WatchStart,
    Watch,
}

impl Request {
    fn label(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::WatchStart => "watch start",
            Self::Watch => "watch",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Get => "reading",
            Self::WatchStart | Self::Watch => "watching",
        }
    }
}

/// One failed request: what to tell the operator, and how long to wait.
#[derive(Debug)]
struct Failure {
    cause: Cause,
    message: String,
    code: Option<u16>,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(cause: Cause, message: String) -> Self {
        Self {
            cause,
            message,
            code: None,
            retry_after: None,
        }
    }

    /// A 410 is not an outage: the resourceVersion is older than the API server's history, watch from now.
    fn expired(&self) -> bool {
        self.cause == Cause::ResourceExpired
    }
}

/// What both tasks share: the API, the decisions, and the state `/health` reads.
struct Shared {
    api: Api<Pod>,
    selector: String,
    pod: Followed,
    schedule: Schedule,
    metrics: Arc<Metrics>,
    tx: watch::Sender<PodState>,
    tracker: Mutex<Tracker>,
    /// The tracker's watch generation: the watch task drops its stream as soon as this moves on.
    orders: watch::Sender<u64>,
}

impl Shared {
    /// Locked while deciding and publishing, so that answers go out in the order the tracker decided them.
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // The tracker's methods cannot panic halfway; a poisoned lock still holds a consistent tracker.
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the watch task where the tracker wants the watch now.
    fn announce(&self, tracker: &Tracker) {
        let generation = tracker.generation();
        self.orders.send_if_modified(|current| {
            let changed = *current != generation;
            *current = generation;
            changed
        });
    }

    fn health_of(&self, pod: Option<&Pod>) -> Arc<super::Health> {
        Arc::new(match pod {
            Some(pod) => evaluate(pod, &self.pod.target),
            None => missing_pod(&self.pod.name, &self.pod.namespace),
        })
    }

    /// A 404 that names this pod: the API server says it does not exist, which is an answer, not an error.
    fn names_this_pod(&self, status: &Status) -> bool {
        status.code == 404
            && status.reason == "NotFound"
            && status
                .details
                .as_ref()
                .is_some_and(|details| details.name == self.pod.name && details.kind == "pods")
    }

    fn no_answer(&self, request: Request) -> Failure {
        Failure::new(
            Cause::Timeout,
            format!(
                "no answer from the API server to the {} within {}",
                request.label(),
                humantime::format_duration(self.schedule.request_timeout)
            ),
        )
    }

    fn failure(&self, request: Request, error: &kube::Error) -> Failure {
        let what = request.label();
        match error {
            kube::Error::Api(status) => self.status_failure(request, status),
            kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => Failure::new(
                Cause::Invalid,
                format!("undecodable {what} answer: {error}"),
            ),
            _ => Failure::new(
                Cause::Transport,
                format!(
                    "cannot reach the API server for the {what}: {}",
                    chain(error)
                ),
            ),
        }
    }

    fn status_failure(&self, request: Request, status: &Status) -> Failure {
        let (name, namespace, what) = (&self.pod.name, &self.pod.namespace, request.label());
        let (cause, message) = match status.code {
            410 => (
                Cause::ResourceExpired,
                format!(
                    "the {what} resourceVersion expired (410); watching from the API server's current state"
                ),
            ),
            403 => (
                Cause::ApiError,
                format!(
                    "the API server forbids {} pod \"{name}\" in namespace \"{namespace}\" (403)",
                    request.verb()
                ),
            ),
            404 => (
                Cause::ApiError,
                format!("the API server answered 404 for pods in namespace \"{namespace}\""),
            ),
            code => {
                let detail = [status.reason.as_str(), status.message.as_str()]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                (
                    Cause::ApiError,
                    format!("the API server answered {code} to the {what}: {detail}"),
                )
            }
        };
        let retry_after = status
            .details
            .as_ref()
            .map(|details| Duration::from_secs(u64::from(details.retry_after_seconds)))
            .filter(|delay| !delay.is_zero());
        Failure {
            cause,
            message,
            code: Some(status.code),
            retry_after,
        }
    }

    /// Logs a failure once per streak (a missing permission does not fix itself: say once what is missing).
    fn report(&self, failure: &Failure, reported: &mut bool, task: &str) {
        if *reported || failure.expired() {
            tracing::debug!(pod = %self.pod.name, cause = failure.cause.label(), "pod {task} still failing: {}", failure.message);
            return;
        }
        *reported = true;
        match failure.code {
            Some(403 | 404) => tracing::error!(
                pod = %self.pod.name,
                namespace = %self.pod.namespace,
                "{}; the pod's service account needs a Role with verbs get, watch on resource pods with \
                 resourceNames [\"{}\"] in namespace \"{}\", bound by a RoleBinding; retrying with backoff",
                failure.message,
                self.pod.name,
                self.pod.namespace
            ),
            _ => tracing::warn!(
                pod = %self.pod.name,
                cause = failure.cause.label(),
                "pod {task} failed: {}; retrying with backoff",
                failure.message
            ),
        }
    }
}

fn resource_version(pod: &Pod) -> Option<String> {
    pod.resource_version().filter(|rv| !rv.is_empty())
}

/// The rounds: one GET each, the only step that confirms the answer.
struct Getter {
    shared: Arc<Shared>,
    max_staleness: Duration,
    backoff: Backoff,
    /// The operator has been told about the current failure (once, not every backoff).
    reported_failure: bool,
    /// The operator has been told that the state went stale.
    reported_stale: bool,
}

impl Getter {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            let ticket = self.shared.tracker().get_sent();
            let answer = tokio::select! {
                () = cancel.cancelled() => return,
                answer = self.get() => answer,
            };
            let wait = match answer {
                Ok(pod) => {
                    self.answered(&ticket, pod.as_ref());
                    self.backoff.reset();
                    self.shared.schedule.round_length()
                }
                Err(failure) => {
                    self.shared.metrics.count_restart(failure.cause.label());
                    self.failed(&failure);
                    self.backoff.delay(failure.retry_after)
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `GET pods/NAME` without resourceVersion; `None` when the API server says the pod does not exist.
    async fn get(&self) -> Result<Option<Pod>, Failure> {
        let shared = &self.shared;
        let answer = tokio::time::timeout(
            shared.schedule.request_timeout,
            shared.api.get(&shared.pod.name),
        )
        .await
        .map_err(|_| shared.no_answer(Request::Get))?;
        match answer {
            Ok(pod) if resource_version(&pod).is_some() => Ok(Some(pod)),
            Ok(_) => Err(Failure::new(
                Cause::Invalid,
                "the API server's pod has no resourceVersion".to_owned(),
            )),
            Err(kube::Error::Api(status)) if shared.names_this_pod(&status) => Ok(None),
            Err(error) => Err(shared.failure(Request::Get, &error)),
        }
    }

    /// The API server answered from etcd just now: the answer is confirmed, and corrected if the watch missed it.
    fn answered(&mut self, ticket: &GetTicket, pod: Option<&Pod>) {
        let contact = Contact::now();
        let version = match pod.and_then(resource_version) {
            Some(resource_version) => Version::Present(resource_version),
            None => Version::Missing,
        };
        if self.reported_failure {
            let unconfirmed = self
                .shared
                .tx
                .borrow()
                .confirmed
                .map_or(Duration::ZERO, |last| {
                    contact.at.saturating_duration_since(last.at)
                });
            tracing::info!(
                pod = %self.shared.pod.name,
                unconfirmed_for = %humantime::format_duration(round_to_millis(unconfirmed)),
                "API server contact confirmed again"
            );
            self.reported_failure = false;
            self.reported_stale = false;
        }
        let shared = &self.shared;
        let mut tracker = shared.tracker();
        let decision = tracker.got(ticket, version);
        let health = match decision {
            AfterGet::Keep => None,
            AfterGet::Publish | AfterGet::PublishAndRestart { .. } => Some(shared.health_of(pod)),
        };
        shared.tx.send_if_modified(|state| {
            let news = health.is_some() || state.failure.is_some() || state.access_denied;
            if let Some(health) = health {
                state.health = Some(health);
            }
            state.last_update = Some(contact);
            state.confirmed = Some(contact);
            state.failure = None;
            state.access_denied = false;
            // Receivers read the clock on every answer; only a new answer or a cleared failure is news.
            news
        });
        if let AfterGet::PublishAndRestart { behind } = decision {
            if behind {
                shared.metrics.count_restart(Cause::Behind.label());
                tracing::debug!(pod = %shared.pod.name, "the GET found a version the watch had not delivered; restarting the watch after it");
            }
            shared.announce(&tracker);
        }
    }

    fn failed(&mut self, failure: &Failure) {
        let shared = &self.shared;
        shared.report(failure, &mut self.reported_failure, "GET");
        let confirmed = shared.tx.borrow().confirmed;
        if let Some(confirmed) = confirmed
            && !self.reported_stale
            && confirmed.at.elapsed() > self.max_staleness
        {
            self.reported_stale = true;
            tracing::warn!(
                pod = %shared.pod.name,
                since = %humantime::format_rfc3339_seconds(confirmed.wall),
                "no confirmed contact with the API server for more than {}: the pod status is stale",
                humantime::format_duration(self.max_staleness)
            );
        }
        let denied = failure.code == Some(403);
        shared.tx.send_modify(|state| {
            state.failure = Some(failure.message.clone());
            state.access_denied = denied;
        });
    }
}

/// How a watch ended without failing.
enum End {
    /// The API server ended it at its `timeoutSeconds`: resume at once.
    RanItsCourse,
    /// The tracker wants it started elsewhere (a GET found a version it had missed, or a 410).
    Superseded,
}

/// The long-lived watch: changes between GETs, never a confirmation.
struct Watcher {
    shared: Arc<Shared>,
    backoff: Backoff,
    reported_failure: bool,
}

impl Watcher {
    async fn run(mut self, cancel: CancellationToken) {
        let mut orders = self.shared.orders.subscribe();
        loop {
            // Nothing to start from before the first GET answered.
            let begun = self.shared.tracker().begin();
            let Some((generation, start)) = begun else {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = orders.changed() => if changed.is_err() { return },
                }
                continue;
            };
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                outcome = self.follow(generation, start) => outcome,
            };
            self.shared.tracker().closed(generation);
            let delay = match outcome {
                Ok(End::RanItsCourse) => {
                    self.shared.metrics.count_restart(Cause::Scheduled.label());
                    self.backoff.reset();
                    Duration::ZERO
                }
                Ok(End::Superseded) => Duration::ZERO,
                Err(failure) => {
                    self.shared.metrics.count_restart(failure.cause.label());
                    self.shared
                        .report(&failure, &mut self.reported_failure, "watch");
                    if failure.expired() {
                        let mut tracker = self.shared.tracker();
                        tracker.expired(generation);
                        self.shared.announce(&tracker);
                        Duration::ZERO
                    } else {
                        self.backoff.delay(failure.retry_after)
                    }
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One watch, from `start` until the API server ends it, it fails, or the tracker replaces it.
    async fn follow(&mut self, generation: u64, start: Start) -> Result<End, Failure> {
        let shared = Arc::clone(&self.shared);
        let mut orders = shared.orders.subscribe();
        let superseded = orders.wait_for(|current| *current != generation);
        let mut superseded = std::pin::pin!(superseded);
        let lifetime_secs = shared.schedule.watch_timeout_secs();
        let params = WatchParams::default()
            .fields(&shared.selector)
            .timeout(lifetime_secs);
        let from = match &start {
            Start::After(resource_version) => resource_version.as_str(),
            Start::Now => "0",
        };
        let sent = Instant::now();
        let started = tokio::select! {
            _ = &mut superseded => return Ok(End::Superseded),
            started = tokio::time::timeout(shared.schedule.request_timeout, shared.api.watch(&params, from)) => started,
        };
        let stream = started
            .map_err(|_| shared.no_answer(Request::WatchStart))?
            .map_err(|error| shared.failure(Request::WatchStart, &error))?;
        if !shared.tracker().opened(generation) {
            return Ok(End::Superseded);
        }
        if self.reported_failure {
            tracing::info!(pod = %shared.pod.name, "pod watch started again");
            self.reported_failure = false;
        }
        let lifetime = Duration::from_secs(lifetime_secs.into());
        // The API server ends the watch at `timeoutSeconds`; one still open well after that is blackholed.
        let deadline = sent + lifetime + shared.schedule.request_timeout;
        let mut events = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = &mut superseded => return Ok(End::Superseded),
                next = tokio::time::timeout_at(deadline, events.next()) => next,
            };
            let Ok(next) = next else {
                return Err(Failure::new(
                    Cause::Timeout,
                    format!(
                        "the watch was still open {} after its timeoutSeconds",
                        humantime::format_duration(shared.schedule.request_timeout)
                    ),
                ));
            };
            match next {
                None if Instant::now() >= sent + lifetime => return Ok(End::RanItsCourse),
                None => {
                    return Err(Failure::new(
                        Cause::Closed,
                        "the watch stream ended before its timeout".to_owned(),
                    ));
                }
                Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                    self.event(generation, &pod, false)?;
                }
                Some(Ok(WatchEvent::Deleted(pod))) => self.event(generation, &pod, true)?,
                Some(Ok(WatchEvent::Bookmark(bookmark))) => shared
                    .tracker()
                    .bookmark(generation, bookmark.metadata.resource_version),
                Some(Ok(WatchEvent::Error(status))) => {
                    return Err(shared.status_failure(Request::Watch, &status));
                }
                Some(Err(error)) => return Err(shared.failure(Request::Watch, &error)),
            }
        }
    }

    /// An event changes the answer at once when the tracker knows it to be newer than what the agent holds. It
    /// confirms nothing: it may come from a watch cache whose etcd is gone.
    fn event(&self, generation: u64, pod: &Pod, deleted: bool) -> Result<(), Failure> {
        let Some(resume) = resource_version(pod) else {
            return Err(Failure::new(
                Cause::Invalid,
                "a watch event without resourceVersion".to_owned(),
            ));
        };
        let version = if deleted {
            Version::Missing
        } else {
            Version::Present(resume.clone())
        };
        let shared = &self.shared;
        let mut tracker = shared.tracker();
        match tracker.event(generation, version, resume) {
            AfterEvent::Publish => {
                let health = shared.health_of((!deleted).then_some(pod));
                let contact = Contact::now();
                shared.tx.send_modify(|state| {
                    state.health = Some(health);
                    state.last_update = Some(contact);
                });
                tracing::debug!(pod = %shared.pod.name, "pod status updated by the watch");
            }
            AfterEvent::Hold => {
                tracing::debug!(pod = %shared.pod.name, "watch event held until a GET agrees with the watch");
            }
            AfterEvent::Superseded => {}
        }
        drop(tracker);
        Ok(())
    }
}

/// An error with its sources: kube and hyper put the useful part ("connection refused") at the end.
fn chain(error: &kube::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn round_to_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}
