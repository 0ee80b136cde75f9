//! Follows one pod with list + watch rounds and keeps the evaluated answer and its confirmation time in memory,
//! so health requests never reach the API.
//!
//! Why not kube-runtime's `watcher`: it hides the contacts that prove the state is current (watch starts,
//! bookmarks) and resumes silently, so an agent built on it can only count errors, and errors are exactly what a
//! blackholed connection or kube-client's retry layer never produce. Here every step that confirms the state
//! advances the clock in [`PodState::confirmed`], and every step has a deadline.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::core::Status;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::{Backoff, Schedule};
pub use super::state::{Contact, PodState};
use super::{Target, evaluate, missing_pod};
use crate::metrics::Metrics;

/// The pod being followed and how to judge it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub name: String,
    pub namespace: String,
    pub target: Target,
}

/// The API client of the watch, without kube-client's retry layer: that layer retries 429/503/504 inside a
/// request and so hides them; the watch retries itself, with jittered backoff, a deadline and the error in the
/// reason. (The staleness bound does not depend on it: a retried request only runs into the deadline.)
pub fn client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Starts following the pod; the returned receiver always holds the latest state.
pub fn spawn(
    client: Client,
    pod: Followed,
    max_staleness: Duration,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> watch::Receiver<PodState> {
    let (tx, rx) = watch::channel(PodState::default());
    let watcher = Watcher::new(client, pod, max_staleness, tx, metrics);
    tokio::spawn(watcher.run(cancel));
    rx
}

/// Where the watch is: every round starts with a list and watches until `round_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    List,
    /// A failed watch is retried as a watch from `resource_version` until it starts again: lists alone would
    /// turn the agent into a poller that hides a broken watch path.
    Watch {
        resource_version: String,
        round_end: Instant,
    },
}

/// Why the watch was restarted: the `cause` label of `watch_restarts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Scheduled,
    ResourceExpired,
    Closed,
    Timeout,
    ApiError,
    Transport,
    Invalid,
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
        }
    }
}

/// One failed step: what to tell the operator, and where to go on.
#[derive(Debug)]
struct Failure {
    cause: Cause,
    message: String,
    code: Option<u16>,
    retry_after: Option<Duration>,
    then: Phase,
}

impl Failure {
    fn new(cause: Cause, message: String, then: Phase) -> Self {
        Self {
            cause,
            message,
            code: None,
            retry_after: None,
            then,
        }
    }

    /// A 410 is not an outage: the resourceVersion is too old, relist at once.
    fn expired(&self) -> bool {
        self.cause == Cause::ResourceExpired
    }
}

struct Watcher {
    api: Api<Pod>,
    selector: String,
    pod: Followed,
    schedule: Schedule,
    max_staleness: Duration,
    backoff: Backoff,
    tx: watch::Sender<PodState>,
    metrics: Arc<Metrics>,
    /// The operator has been told about the current failure (once, not every backoff).
    reported_failure: bool,
    /// The operator has been told that the state went stale.
    reported_stale: bool,
}

impl Watcher {
    fn new(
        client: Client,
        pod: Followed,
        max_staleness: Duration,
        tx: watch::Sender<PodState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let schedule = Schedule::for_max_staleness(max_staleness);
        Self {
            api: Api::namespaced(client, &pod.namespace),
            selector: format!("metadata.name={}", pod.name),
            pod,
            schedule,
            max_staleness,
            backoff: Backoff::new(&schedule),
            tx,
            metrics,
            reported_failure: false,
            reported_stale: false,
        }
    }

    /// Runs until `cancel`: rounds of list + watch, backing off after every failure.
    async fn run(mut self, cancel: CancellationToken) {
        let mut phase = Phase::List;
        loop {
            let step = async {
                match phase.clone() {
                    Phase::List => self.list().await,
                    Phase::Watch {
                        resource_version,
                        round_end,
                    } => self.watch(resource_version, round_end).await,
                }
            };
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                outcome = step => outcome,
            };
            match outcome {
                Ok(next) => phase = next,
                Err(failure) => {
                    self.metrics.count_restart(failure.cause.label());
                    let delay = if failure.expired() {
                        Duration::ZERO
                    } else {
                        self.backoff.delay(failure.retry_after)
                    };
                    self.failed(&failure);
                    phase = failure.then;
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The first step of a round: a consistent read of the pod, which confirms the state as of now.
    async fn list(&mut self) -> Result<Phase, Failure> {
        let params = ListParams::default().fields(&self.selector);
        let list = tokio::time::timeout(self.schedule.request_timeout, self.api.list(&params))
            .await
            .map_err(|_| self.no_answer("list", Phase::List))?
            .map_err(|error| self.failure("list", &error, Phase::List))?;
        let round_end = Instant::now() + self.schedule.round_length();
        let Some(resource_version) = list.metadata.resource_version.filter(|rv| !rv.is_empty())
        else {
            return Err(Failure::new(
                Cause::Invalid,
                "the API server's pod list has no resourceVersion to watch from".to_owned(),
                Phase::List,
            ));
        };
        let pod = list
            .items
            .into_iter()
            .find(|pod| pod.metadata.name.as_deref() == Some(self.pod.name.as_str()));
        self.publish(pod.as_ref());
        Ok(Phase::Watch {
            resource_version,
            round_end,
        })
    }

    /// Watches from `resource_version` until `round_end`; a start, every event and every bookmark confirm the state.
    async fn watch(
        &mut self,
        mut resource_version: String,
        round_end: Instant,
    ) -> Result<Phase, Failure> {
        let params = WatchParams::default()
            .fields(&self.selector)
            .timeout(self.schedule.server_timeout_secs());
        let retry = |rv: &str| Phase::Watch {
            resource_version: rv.to_owned(),
            round_end,
        };
        let started = tokio::time::timeout(
            self.schedule.request_timeout,
            self.api.watch(&params, &resource_version),
        )
        .await
        .map_err(|_| self.no_answer("watch start", retry(&resource_version)))?
        .map_err(|error| self.failure("watch start", &error, retry(&resource_version)))?;
        self.confirm();
        let mut events = std::pin::pin!(started);
        loop {
            let Ok(next) = tokio::time::timeout_at(round_end, events.next()).await else {
                return Ok(self.round_over());
            };
            match next {
                None if Instant::now() >= round_end => return Ok(self.round_over()),
                None => {
                    return Err(Failure::new(
                        Cause::Closed,
                        "the watch stream ended before its timeout".to_owned(),
                        retry(&resource_version),
                    ));
                }
                Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                    resource_version = pod.resource_version().unwrap_or(resource_version);
                    self.publish(Some(&pod));
                }
                Some(Ok(WatchEvent::Deleted(pod))) => {
                    resource_version = pod.resource_version().unwrap_or(resource_version);
                    self.publish(None);
                }
                Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                    resource_version = bookmark.metadata.resource_version;
                    self.confirm();
                }
                Some(Ok(WatchEvent::Error(status))) => {
                    return Err(self.status_failure("watch", &status, retry(&resource_version)));
                }
                Some(Err(error)) => {
                    return Err(self.failure("watch", &error, retry(&resource_version)));
                }
            }
        }
    }

    /// A watch that ran its course: the next round relists, so a frozen API (etcd gone) cannot keep vouching.
    fn round_over(&mut self) -> Phase {
        self.metrics.count_restart(Cause::Scheduled.label());
        self.backoff.reset();
        Phase::List
    }

    fn no_answer(&self, what: &str, then: Phase) -> Failure {
        Failure::new(
            Cause::Timeout,
            format!(
                "no answer from the API server to the {what} within {}",
                humantime::format_duration(self.schedule.request_timeout)
            ),
            then,
        )
    }

    fn failure(&self, what: &str, error: &kube::Error, then: Phase) -> Failure {
        match error {
            kube::Error::Api(status) => self.status_failure(what, status, then),
            kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => Failure::new(
                Cause::Invalid,
                format!("undecodable {what} answer: {error}"),
                then,
            ),
            _ => Failure::new(
                Cause::Transport,
                format!(
                    "cannot reach the API server for the {what}: {}",
                    chain(error)
                ),
                then,
            ),
        }
    }

    fn status_failure(&self, what: &str, status: &Status, then: Phase) -> Failure {
        let (name, namespace) = (&self.pod.name, &self.pod.namespace);
        let (cause, then, message) = match status.code {
            410 => (
                Cause::ResourceExpired,
                Phase::List,
                format!("the {what} resourceVersion expired (410); relisting"),
            ),
            403 => (
                Cause::ApiError,
                then,
                format!(
                    "the API server forbids watching pod \"{name}\" in namespace \"{namespace}\" (403)"
                ),
            ),
            404 => (
                Cause::ApiError,
                then,
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
                    then,
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
            then,
        }
    }

    /// The pod (or its absence) as the API server just told it: a new answer, confirmed now.
    fn publish(&mut self, pod: Option<&Pod>) {
        let health = match pod {
            Some(pod) => evaluate(pod, &self.pod.target),
            None => missing_pod(&self.pod.name, &self.pod.namespace),
        };
        let contact = Contact::now();
        self.tx.send_modify(|state| {
            state.health = Some(Arc::new(health));
            state.last_update = Some(contact);
        });
        self.confirm_at(contact);
        tracing::debug!(pod = %self.pod.name, "pod status updated");
    }

    /// The API server vouched for the state we hold (a watch start, a bookmark).
    fn confirm(&mut self) {
        self.confirm_at(Contact::now());
    }

    fn confirm_at(&mut self, contact: Contact) {
        if self.reported_failure {
            let unconfirmed = self.tx.borrow().confirmed.map_or(Duration::ZERO, |last| {
                contact.at.saturating_duration_since(last.at)
            });
            tracing::info!(
                pod = %self.pod.name,
                unconfirmed_for = %humantime::format_duration(round_to_millis(unconfirmed)),
                "API server contact confirmed again"
            );
            self.reported_failure = false;
            self.reported_stale = false;
        }
        self.tx.send_if_modified(|state| {
            let cleared = state.failure.is_some() || state.access_denied;
            state.confirmed = Some(contact);
            state.failure = None;
            state.access_denied = false;
            // Receivers read the clock on every answer; only a new answer or a cleared failure is news.
            cleared || state.health.is_none()
        });
    }

    fn failed(&mut self, failure: &Failure) {
        let denied = failure.code == Some(403);
        // Permission problems do not fix themselves: say once what is missing instead of repeating it every backoff.
        if !self.reported_failure && !failure.expired() {
            self.reported_failure = true;
            match failure.code {
                Some(403 | 404) => tracing::error!(
                    pod = %self.pod.name,
                    namespace = %self.pod.namespace,
                    "{}; the pod's service account needs a Role with verbs get, list, watch on resource pods \
                     with resourceNames [\"{}\"] in namespace \"{}\", bound by a RoleBinding; retrying with backoff",
                    failure.message,
                    self.pod.name,
                    self.pod.namespace
                ),
                _ => tracing::warn!(
                    pod = %self.pod.name,
                    cause = failure.cause.label(),
                    "pod watch failed: {}; retrying with backoff",
                    failure.message
                ),
            }
        } else {
            tracing::debug!(pod = %self.pod.name, cause = failure.cause.label(), "pod watch still failing: {}", failure.message);
        }
        let confirmed = self.tx.borrow().confirmed;
        if let Some(confirmed) = confirmed
            && !self.reported_stale
            && confirmed.at.elapsed() > self.max_staleness
        {
            self.reported_stale = true;
            tracing::warn!(
                pod = %self.pod.name,
                since = %humantime::format_rfc3339_seconds(confirmed.wall),
                "no confirmed contact with the API server for more than {}: the pod status is stale",
                humantime::format_duration(self.max_staleness)
            );
        }
        self.tx.send_modify(|state| {
            state.failure = Some(failure.message.clone());
            state.access_denied = denied;
        });
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
