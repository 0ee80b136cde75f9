//! What the agent knows about its pod and how fresh that is: the answer `/health` gives is a pure function of both and the clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::Health;
use crate::report::{CheckResult, Report};

/// What the watch knows right now. Cheap to clone: the answer is shared.
#[derive(Debug, Clone, Default)]
pub struct PodState {
    /// The answer from the last pod seen (or its absence); `None` until the first GET answered.
    pub health: Option<Arc<Health>>,
    /// When the pod object last arrived: a GET's answer, or a watch event that changed the answer.
    pub last_update: Option<Contact>,
    /// When a GET of the pod last succeeded: answered from etcd, it is the only proof that the state is current
    /// (watch starts, events and bookmarks come from the API server's cache, which outlives etcd). Freshness is
    /// measured from here, never from the first error: errors may be hidden, retried or absent.
    pub confirmed: Option<Contact>,
    /// The latest failed GET since the last confirmation, for the reason of an unknown or stale answer.
    pub failure: Option<String>,
    /// The API refused us the pod (403): the pod status is not something this agent can know.
    pub access_denied: bool,
}

/// One moment of contact with the API server, monotonic for arithmetic and wall clock for humans.
#[derive(Debug, Clone, Copy)]
pub struct Contact {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Contact {
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// What `/health` answers once nothing has confirmed the pod's state for longer than `MAX_STALENESS` (a contract rule).
pub use healthbridge_contract::value::OnStale;

/// How old the confirmed state may get, and what to answer beyond that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub max_staleness: Duration,
    pub on_stale: OnStale,
}

/// One answer for the pod: the report, and how long it has gone unconfirmed when that is beyond `MAX_STALENESS`.
#[derive(Debug, Clone)]
pub struct PodAnswer {
    pub report: Arc<Health>,
    pub stale_for: Option<Duration>,
}

/// Where `/health` gets the pod's answer from.
#[derive(Debug, Clone)]
pub enum PodStatusSource {
    /// `STATE_OVERRIDE`: a fixed answer, no API use.
    Override(Arc<Health>),
    /// The watch's latest state, trusted while the API server confirmed it within `max_staleness`.
    Watch {
        state: watch::Receiver<PodState>,
        freshness: Freshness,
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

    pub fn watching(state: watch::Receiver<PodState>, freshness: Freshness) -> Self {
        Self::Watch { state, freshness }
    }

    /// The report now; allocates only when the state is unknown or stale.
    pub fn current(&self) -> Arc<Health> {
        self.answer().report
    }

    /// The answer now. The clock is read on every answer of a watch (a state the API server stopped confirming
    /// turns stale by itself), and not at all for a fixed answer, which never goes stale.
    pub fn answer(&self) -> PodAnswer {
        self.answer_when(Instant::now)
    }

    pub fn answer_at(&self, now: Instant) -> PodAnswer {
        self.answer_when(|| now)
    }

    fn answer_when(&self, now: impl FnOnce() -> Instant) -> PodAnswer {
        match self {
            Self::Override(health) | Self::Unavailable(health) => PodAnswer {
                report: Arc::clone(health),
                stale_for: None,
            },
            Self::Watch { state, freshness } => answer(&state.borrow(), now(), *freshness),
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

    /// Seconds since the pod object last arrived, for `/metrics`.
    pub fn seconds_since_update(&self) -> Option<f64> {
        self.seconds_since(|state| state.last_update)
    }

    /// Seconds since the API server last confirmed the state, for `/metrics`.
    pub fn seconds_since_confirmed(&self) -> Option<f64> {
        self.seconds_since(|state| state.confirmed)
    }

    fn seconds_since(&self, contact: impl Fn(&PodState) -> Option<Contact>) -> Option<f64> {
        match self {
            Self::Watch { state, .. } => contact(&state.borrow()).map(|contact| {
                Instant::now()
                    .saturating_duration_since(contact.at)
                    .as_secs_f64()
            }),
            _ => None,
        }
    }
}

/// The answer for `state` at `now`: the last answer while it is confirmed, else unknown or stale-marked.
pub fn answer(state: &PodState, now: Instant, freshness: Freshness) -> PodAnswer {
    let (Some(health), Some(confirmed)) = (&state.health, state.confirmed) else {
        let reason = match &state.failure {
            Some(failure) => format!("pod status not known yet: {failure}"),
            None => "pod status not known yet (waiting for the API server)".to_owned(),
        };
        return PodAnswer {
            report: Arc::new(Report::new(vec![CheckResult::fail("pod", reason)])),
            stale_for: None,
        };
    };
    let age = now.saturating_duration_since(confirmed.at);
    if age <= freshness.max_staleness {
        return PodAnswer {
            report: Arc::clone(health),
            stale_for: None,
        };
    }
    let since = humantime::format_rfc3339_seconds(confirmed.wall);
    let limit = humantime::format_duration(freshness.max_staleness);
    let why = state
        .failure
        .as_deref()
        .map(|failure| format!(": {failure}"))
        .unwrap_or_default();
    let report = match freshness.on_stale {
        OnStale::Unhealthy => Report::new(vec![CheckResult::fail(
            "pod",
            format!(
                "pod status unknown since {since} (no confirmed contact with the API server for more than {limit}{why})"
            ),
        )]),
        OnStale::LastKnown => {
            let mut checks = health.checks.clone();
            checks.push(CheckResult::pass(
                "stale",
                format!(
                    "last known pod status, unconfirmed since {since} ({}s, more than {limit}; ON_STALE=last-known){why}",
                    age.as_secs()
                ),
            ));
            Report::new(checks)
        }
    };
    PodAnswer {
        report: Arc::new(report),
        stale_for: Some(age),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNHEALTHY: Freshness = Freshness {
        max_staleness: Duration::from_secs(30),
        on_stale: OnStale::Unhealthy,
    };
    const LAST_KNOWN: Freshness = Freshness {
        max_staleness: Duration::from_secs(30),
        on_stale: OnStale::LastKnown,
    };

    fn source(state: PodState, freshness: Freshness) -> PodStatusSource {
        let (_tx, rx) = watch::channel(state);
        PodStatusSource::watching(rx, freshness)
    }

    fn ready_confirmed_at(at: Instant, failure: Option<&str>) -> PodState {
        PodState {
            health: Some(Arc::new(Report::new(vec![CheckResult::pass(
                "pod",
                "phase Running",
            )]))),
            last_update: None,
            confirmed: Some(Contact {
                at,
                wall: SystemTime::UNIX_EPOCH,
            }),
            failure: failure.map(str::to_owned),
            access_denied: false,
        }
    }

    #[test]
    fn before_the_first_get_the_pod_is_unhealthy() {
        let health = source(PodState::default(), UNHEALTHY).current();
        assert!(!health.healthy());
        assert!(health.checks[0].reason.contains("not known yet"));
    }

    #[test]
    fn a_state_confirmed_within_the_limit_is_the_answer_even_while_requests_fail() {
        let start = Instant::now();
        let src = source(
            ready_confirmed_at(start, Some("connection refused")),
            UNHEALTHY,
        );
        let answer = src.answer_at(start + Duration::from_secs(30));
        assert!(answer.report.healthy());
        assert!(answer.stale_for.is_none());
    }

    #[test]
    fn a_state_unconfirmed_beyond_the_limit_is_unknown_even_without_any_error() {
        let start = Instant::now();
        let src = source(ready_confirmed_at(start, None), UNHEALTHY);
        let answer = src.answer_at(start + Duration::from_secs(31));
        assert!(!answer.report.healthy());
        assert_eq!(
            answer.report.checks[0].reason,
            "pod status unknown since 1970-01-01T00:00:00Z (no confirmed contact with the API server for more than 30s)"
        );
        assert_eq!(answer.stale_for, Some(Duration::from_secs(31)));
    }

    #[test]
    fn the_unknown_reason_names_the_latest_failure() {
        let start = Instant::now();
        let src = source(
            ready_confirmed_at(start, Some("connection refused")),
            UNHEALTHY,
        );
        let reason = src.answer_at(start + Duration::from_secs(31)).report.checks[0]
            .reason
            .clone();
        assert!(reason.ends_with(": connection refused)"), "{reason}");
    }

    #[test]
    fn last_known_keeps_the_answer_and_adds_a_passing_stale_check() {
        let start = Instant::now();
        let src = source(
            ready_confirmed_at(start, Some("connection refused")),
            LAST_KNOWN,
        );
        let answer = src.answer_at(start + Duration::from_secs(45));
        assert!(answer.report.healthy());
        assert_eq!(answer.stale_for, Some(Duration::from_secs(45)));
        let stale = &answer.report.checks[1];
        assert_eq!(stale.name, "stale");
        assert!(
            stale
                .reason
                .starts_with("last known pod status, unconfirmed since 1970-01-01T00:00:00Z (45s"),
            "{}",
            stale.reason
        );
    }

    #[test]
    fn last_known_keeps_an_unhealthy_answer_unhealthy() {
        let start = Instant::now();
        let mut state = ready_confirmed_at(start, None);
        state.health = Some(Arc::new(Report::new(vec![CheckResult::fail(
            "container:app",
            "not ready",
        )])));
        let answer = source(state, LAST_KNOWN).answer_at(start + Duration::from_secs(31));
        assert!(!answer.report.healthy());
        assert_eq!(answer.report.checks[0].reason, "not ready");
    }

    #[test]
    fn forbidden_access_leaves_the_pod_out_of_all() {
        let src = source(
            PodState {
                access_denied: true,
                ..Default::default()
            },
            UNHEALTHY,
        );
        assert!(!src.reachable());
        assert!(PodStatusSource::fixed(false).reachable());
        assert!(!PodStatusSource::unavailable("no pod name").reachable());
    }
}
