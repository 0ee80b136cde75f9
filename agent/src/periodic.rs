//! Checks run on a period in the background, each result kept in a watched slot that a request reads from memory,
//! judged fresh or stale by its age; the exec checks and the socket checks both run this way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::duration::format_duration;
use crate::metrics::Metrics;
use crate::report::CheckResult;

/// One kind of check the runner can repeat: what it is called and how one run goes.
pub trait PeriodicCheck: Send + Sync + 'static {
    /// What one run found, with when it finished.
    type Outcome: RunResult;
    /// What a request is answered from: the check and the state of its last result; in `/all`, a `CheckResult`.
    type Status: Into<CheckResult>;

    /// The `kind` label of the check metrics: `exec`, `tcp`, `udp`, `grpc`.
    fn kind(&self) -> &'static str;
    /// The URL path the check is served at, unique among all checks.
    fn path(&self) -> &str;
    /// `exec:/healthz`, `tcp:/db`: the name in `/all` and in logs.
    fn name(&self) -> String;
    /// One run, bounded by `default_timeout` unless the check has a timeout of its own.
    fn run(&self, default_timeout: Duration) -> impl Future<Output = Self::Outcome> + Send;
    /// The answer for a request, from the state of the last result.
    fn status(&self, state: CheckState<Self::Outcome>) -> Self::Status;
}

/// What the runner needs to know of one run's result.
pub trait RunResult: Clone + Send + Sync + 'static {
    fn healthy(&self) -> bool;
    /// One line saying why, for the log of a failed run.
    fn reason(&self) -> String;
    /// When the run finished: its age decides whether it still counts.
    fn finished(&self) -> Instant;
    fn took(&self) -> Duration;
}

/// How often each check runs, how long one run may take (unless a check says otherwise), and how old a result may
/// be before it no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub period: Duration,
    pub timeout: Duration,
    pub max_age: Duration,
}

/// The last result of a check as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckState<O> {
    NoResultYet,
    Stale {
        age: Duration,
        max_age: Duration,
        last: O,
    },
    Fresh(O),
}

impl<O: RunResult> CheckState<O> {
    /// The state at `now`: unhealthy before the first result and once the last one is older than `max_age`.
    pub fn at(last: Option<&O>, max_age: Duration, now: Instant) -> Self {
        let Some(last) = last else {
            return Self::NoResultYet;
        };
        let age = now.saturating_duration_since(last.finished());
        if age > max_age {
            Self::Stale {
                age,
                max_age,
                last: last.clone(),
            }
        } else {
            Self::Fresh(last.clone())
        }
    }
}

/// `last result is 31s old (max age 30s)`: why a stale result no longer counts (the age to the millisecond).
pub fn stale_reason(age: Duration, max_age: Duration) -> String {
    format!(
        "last result is {} old (max age {})",
        format_duration(Duration::from_millis(age.as_millis() as u64)),
        format_duration(max_age)
    )
}

struct Slot<C: PeriodicCheck> {
    check: Arc<C>,
    results: watch::Receiver<Option<C::Outcome>>,
}

struct Inner<C: PeriodicCheck> {
    slots: Vec<Slot<C>>,
    max_age: Duration,
}

/// Read side of running checks of one kind; cheap to clone, answers from memory.
pub struct PeriodicChecks<C: PeriodicCheck> {
    inner: Arc<Inner<C>>,
}

impl<C: PeriodicCheck> Clone for PeriodicChecks<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: PeriodicCheck> std::fmt::Debug for PeriodicChecks<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodicChecks")
            .field("paths", &self.paths().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<C: PeriodicCheck> PeriodicChecks<C> {
    /// Starts one runner task per check, counting each run in the check metrics; they stop (abandoning a run in
    /// progress) when `shutdown` is cancelled.
    pub fn spawn(
        checks: impl IntoIterator<Item = C>,
        timing: Timing,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = checks
            .into_iter()
            .map(|check| {
                let (sender, results) = watch::channel(None);
                let check = Arc::new(check);
                tokio::spawn(run_periodically(
                    Arc::clone(&check),
                    sender,
                    timing,
                    Arc::clone(&metrics),
                    shutdown.clone(),
                ));
                Slot { check, results }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                slots,
                max_age: timing.max_age,
            }),
        }
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.inner.slots.iter().map(|slot| slot.check.path())
    }

    fn slot(&self, path: &str) -> Option<&Slot<C>> {
        self.inner
            .slots
            .iter()
            .find(|slot| slot.check.path() == path)
    }

    fn status(&self, slot: &Slot<C>, now: Instant) -> C::Status {
        let state = CheckState::at(slot.results.borrow().as_ref(), self.inner.max_age, now);
        slot.check.status(state)
    }

    /// The state of the check at `path` now, or `None` when no check has that path.
    pub fn result(&self, path: &str) -> Option<C::Status> {
        Some(self.status(self.slot(path)?, Instant::now()))
    }

    /// Every check, in the order they were configured.
    pub fn statuses(&self) -> Vec<C::Status> {
        let now = Instant::now();
        self.inner
            .slots
            .iter()
            .map(|slot| self.status(slot, now))
            .collect()
    }

    /// Every check as a `CheckResult`, for `/all`.
    pub fn all(&self) -> Vec<CheckResult> {
        self.statuses().into_iter().map(Into::into).collect()
    }

    /// Resolves once every check has produced at least one result (for start-up and tests).
    pub async fn first_results(&self) {
        for slot in &self.inner.slots {
            let mut results = slot.results.clone();
            let _ = results.wait_for(Option::is_some).await;
        }
    }

    /// Resolves once the check at `path` has a result newer than `after`.
    pub async fn result_after(&self, path: &str, after: Instant) -> Option<C::Status> {
        let slot = self.slot(path)?;
        let mut results = slot.results.clone();
        results
            .wait_for(|r| r.as_ref().is_some_and(|r| r.finished() > after))
            .await
            .ok()?;
        self.result(path)
    }
}

async fn run_periodically<C: PeriodicCheck>(
    check: Arc<C>,
    results: watch::Sender<Option<C::Outcome>>,
    timing: Timing,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // A small random offset so checks configured together do not all fire at the same instant.
    let max_jitter = (timing.period / 10).min(Duration::from_millis(500));
    let jitter = || max_jitter.mul_f64(fastrand::f64());
    let mut next = Instant::now() + jitter();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = check.run(timing.timeout) => outcome,
        };
        let healthy = outcome.healthy();
        metrics.count_check_run(check.kind(), check.path(), healthy, outcome.took());
        if !healthy {
            tracing::debug!(check = %check.name(), reason = %outcome.reason(), "check failed");
        }
        results.send_replace(Some(outcome));
        next = (started + timing.period + jitter()).max(Instant::now());
    }
}
