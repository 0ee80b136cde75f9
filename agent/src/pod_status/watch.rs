//! Follows one pod with a Kubernetes watch and keeps the evaluated answer in memory, so health requests never reach the API.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Health, Target, evaluate, missing_pod};
use crate::metrics::Metrics;
use crate::report::{CheckResult, Report};

/// What the watch knows right now. Cheap to clone: the answer is shared.
#[derive(Debug, Clone, Default)]
pub struct PodState {
    /// The answer from the last pod seen (or its absence); `None` until the first list completed.
    pub health: Option<Arc<Health>>,
    /// When the API last told us something about the pod (monotonic, and wall clock for humans).
    pub last_update: Option<(Instant, SystemTime)>,
    /// Set while the watch is failing: since when, and the latest error.
    pub broken: Option<Broken>,
    /// The API refused us the pod (403): the pod status is not something this agent can know.
    pub access_denied: bool,
}

#[derive(Debug, Clone)]
pub struct Broken {
    pub since: Instant,
    pub since_wall: SystemTime,
    pub error: String,
}

/// Where `/health` gets the pod's answer from.
#[derive(Debug, Clone)]
pub enum PodStatusSource {
    /// `STATE_OVERRIDE`: a fixed answer, no API use.
    Override(Arc<Health>),
    /// The watch's latest state, trusted while the watch was broken for at most `max_staleness`.
    Watch {
        state: watch::Receiver<PodState>,
        max_staleness: Duration,
    },
    /// No pod can be watched (no pod name or no API configuration); says why.
    Unavailable(Arc<Health>),
}

impl PodStatusSource {
    pub fn fixed(healthy: bool) -> Self {
        let check = if healthy {
            CheckResult::pass("pod", "STATE_OVERRIDE=true")
        } else {
            CheckResult::fail("pod", "STATE_OVERRIDE=false")
        };
        Self::Override(Arc::new(Report::new(vec![check])))
    }

    pub fn unavailable(why: impl Into<String>) -> Self {
        Self::Unavailable(Arc::new(Report::new(vec![CheckResult::fail("pod", why)])))
    }

    /// The answer now; allocates only when the watch has been broken too long.
    pub fn current(&self) -> Arc<Health> {
        self.current_at(Instant::now())
    }

    pub fn current_at(&self, now: Instant) -> Arc<Health> {
        match self {
            Self::Override(health) | Self::Unavailable(health) => Arc::clone(health),
            Self::Watch {
                state,
                max_staleness,
            } => answer(&state.borrow(), now, *max_staleness),
        }
    }

    /// `/all` includes the pod status only when this agent can know it.
    pub fn reachable(&self) -> bool {
        match self {
            Self::Override(_) => true,
            Self::Unavailable(_) => false,
            Self::Watch { state, .. } => !state.borrow().access_denied,
        }
    }

    /// Seconds since the API last told us about the pod, for `/metrics`.
    pub fn seconds_since_update(&self) -> Option<f64> {
        match self {
            Self::Watch { state, .. } => state
                .borrow()
                .last_update
                .map(|(at, _)| Instant::now().saturating_duration_since(at).as_secs_f64()),
            _ => None,
        }
    }
}

fn answer(state: &PodState, now: Instant, max_staleness: Duration) -> Arc<Health> {
    match (&state.health, &state.broken) {
        (Some(health), None) => Arc::clone(health),
        (Some(health), Some(broken))
            if now.saturating_duration_since(broken.since) <= max_staleness =>
        {
            Arc::clone(health)
        }
        (Some(_), Some(broken)) => Arc::new(Report::new(vec![CheckResult::fail(
            "pod",
            format!(
                "pod status unknown since {} (watch broken for more than {}: {})",
                humantime::format_rfc3339_seconds(broken.since_wall),
                humantime::format_duration(max_staleness),
                broken.error
            ),
        )])),
        (None, Some(broken)) => Arc::new(Report::new(vec![CheckResult::fail(
            "pod",
            format!("pod status not known yet: {}", broken.error),
        )])),
        (None, None) => Arc::new(Report::new(vec![CheckResult::fail(
            "pod",
            "pod status not known yet (waiting for the API server)",
        )])),
    }
}

/// The pod being followed and how to judge it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub name: String,
    pub namespace: String,
    pub target: Target,
}

/// Starts following the pod; the returned receiver always holds the latest state.
pub fn spawn(
    client: Client,
    pod: Followed,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> watch::Receiver<PodState> {
    let (tx, rx) = watch::channel(PodState::default());
    tokio::spawn(run(client, pod, tx, metrics, cancel));
    rx
}

/// Runs the watch until `cancel`; reconnects with exponential backoff after every error.
pub async fn run(
    client: Client,
    pod: Followed,
    tx: watch::Sender<PodState>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", pod.name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut follower = Follower::new(pod);
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        if event.is_err() {
            metrics.watch_restarts.inc();
        }
        if follower.apply(event, &tx) {
            tracing::debug!(pod = %follower.pod.name, "pod status updated");
        }
    }
}

/// Turns watch events into states; keeps the once-only logging of permission problems.
struct Follower {
    pod: Followed,
    seen_in_listing: Option<Pod>,
    listing: bool,
    reported_error: bool,
}

impl Follower {
    fn new(pod: Followed) -> Self {
        Self {
            pod,
            seen_in_listing: None,
            listing: false,
            reported_error: false,
        }
    }

    /// Applies one event; returns whether the answer changed.
    fn apply(
        &mut self,
        event: Result<Event<Pod>, watcher::Error>,
        tx: &watch::Sender<PodState>,
    ) -> bool {
        match event {
            Ok(Event::Init) => {
                self.listing = true;
                self.seen_in_listing = None;
                false
            }
            Ok(Event::InitApply(pod)) => {
                self.seen_in_listing = Some(pod);
                false
            }
            Ok(Event::InitDone) => {
                self.listing = false;
                let pod = self.seen_in_listing.take();
                self.publish(pod.as_ref(), tx);
                true
            }
            Ok(Event::Apply(pod)) => {
                self.publish(Some(&pod), tx);
                true
            }
            Ok(Event::Delete(_)) => {
                self.publish(None, tx);
                true
            }
            Err(error) => {
                self.report(&error, tx);
                false
            }
        }
    }

    fn publish(&mut self, pod: Option<&Pod>, tx: &watch::Sender<PodState>) {
        let health = match pod {
            Some(pod) => evaluate(pod, &self.pod.target),
            None => missing_pod(&self.pod.name, &self.pod.namespace),
        };
        if self.reported_error {
            tracing::info!(pod = %self.pod.name, "watch recovered");
            self.reported_error = false;
        }
        tx.send_modify(|state| {
            state.health = Some(Arc::new(health));
            state.last_update = Some((Instant::now(), SystemTime::now()));
            state.broken = None;
            state.access_denied = false;
        });
    }

    fn report(&mut self, error: &watcher::Error, tx: &watch::Sender<PodState>) {
        let code = status_code(error);
        let denied = code == Some(403);
        let summary = match code {
            Some(403) => format!(
                "the API server forbids watching pod \"{}\" in namespace \"{}\" (403)",
                self.pod.name, self.pod.namespace
            ),
            Some(404) => format!(
                "the API server answered 404 for pods in namespace \"{}\"",
                self.pod.namespace
            ),
            _ => error.to_string(),
        };
        // Permission problems do not fix themselves: say once what is missing instead of repeating it every backoff.
        if !self.reported_error {
            self.reported_error = true;
            match code {
                Some(403 | 404) => tracing::error!(
                    pod = %self.pod.name,
                    namespace = %self.pod.namespace,
                    "{summary}; the pod's service account needs a Role with verbs get, list, watch on resource pods \
                     with resourceNames [\"{}\"] in namespace \"{}\", bound by a RoleBinding; retrying with backoff",
                    self.pod.name,
                    self.pod.namespace
                ),
                _ => {
                    tracing::warn!(pod = %self.pod.name, %error, "pod watch failed; reconnecting with backoff")
                }
            }
        } else {
            tracing::debug!(pod = %self.pod.name, %error, "pod watch still failing");
        }
        tx.send_modify(|state| {
            let now = Instant::now();
            let broken = state.broken.get_or_insert_with(|| Broken {
                since: now,
                since_wall: SystemTime::now(),
                error: String::new(),
            });
            broken.error = summary;
            state.access_denied = denied;
        });
    }
}

fn status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(state: PodState) -> PodStatusSource {
        let (_tx, rx) = watch::channel(state);
        PodStatusSource::Watch {
            state: rx,
            max_staleness: Duration::from_secs(30),
        }
    }

    fn healthy_report() -> Option<Arc<Health>> {
        Some(Arc::new(Report::new(vec![CheckResult::pass(
            "pod",
            "phase Running",
        )])))
    }

    fn broken_at(since: Instant) -> Option<Broken> {
        Some(Broken {
            since,
            since_wall: SystemTime::UNIX_EPOCH,
            error: "connection refused".into(),
        })
    }

    #[test]
    fn before_the_first_listing_the_pod_is_unhealthy() {
        let health = source(PodState::default()).current();
        assert!(!health.healthy());
        assert!(health.checks[0].reason.contains("not known yet"));
    }

    #[test]
    fn a_briefly_broken_watch_keeps_the_last_answer() {
        let start = Instant::now();
        let src = source(PodState {
            health: healthy_report(),
            broken: broken_at(start),
            ..Default::default()
        });
        assert!(src.current_at(start + Duration::from_secs(30)).healthy());
    }

    #[test]
    fn a_watch_broken_beyond_staleness_makes_the_status_unknown() {
        let start = Instant::now();
        let src = source(PodState {
            health: healthy_report(),
            broken: broken_at(start),
            ..Default::default()
        });
        let health = src.current_at(start + Duration::from_secs(31));
        assert!(!health.healthy());
        assert!(
            health.checks[0]
                .reason
                .starts_with("pod status unknown since 1970-01-01T00:00:00Z"),
            "{health:?}"
        );
    }

    #[test]
    fn forbidden_access_leaves_the_pod_out_of_all() {
        let src = source(PodState {
            access_denied: true,
            ..Default::default()
        });
        assert!(!src.reachable());
        assert!(PodStatusSource::fixed(false).reachable());
        assert!(!PodStatusSource::unavailable("no pod name").reachable());
    }
}
