//! Runs every check on its period and keeps the latest result of each, readable from memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::process::run_once;
use super::spec::{ExecAnswer, ExecCheck, ExecChecks};
use super::status::{ExecStatus, RunOutcome, evaluate};
use crate::report::CheckResult;

impl ExecChecks {
    /// Starts one runner task per check; they stop (killing any running command) when `shutdown` is cancelled.
    pub fn spawn(self, shutdown: CancellationToken) -> ExecHandle {
        let mut slots = Vec::with_capacity(self.checks.len());
        for check in self.checks {
            let (sender, receiver) = watch::channel(None);
            let check = Arc::new(check);
            tokio::spawn(run_periodically(
                check.clone(),
                sender,
                self.period,
                self.timeout,
                shutdown.clone(),
            ));
            slots.push(Slot {
                check,
                results: receiver,
            });
        }
        ExecHandle {
            inner: Arc::new(HandleInner {
                slots,
                max_age: self.max_age,
                answer: self.answer,
            }),
        }
    }
}

struct Slot {
    check: Arc<ExecCheck>,
    results: watch::Receiver<Option<RunOutcome>>,
}

struct HandleInner {
    slots: Vec<Slot>,
    max_age: Duration,
    answer: ExecAnswer,
}

/// Read side of the running checks; cheap to clone, answers from memory.
#[derive(Clone)]
pub struct ExecHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for ExecHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecHandle")
            .field("paths", &self.paths().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ExecHandle {
    /// The body style of exec URLs on the published port.
    pub fn answer(&self) -> ExecAnswer {
        self.inner.answer
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.inner.slots.iter().map(|slot| slot.check.path.as_str())
    }

    /// The current state of the check served at `path`, or `None` when no check has that path.
    pub fn result(&self, path: &str) -> Option<ExecStatus> {
        let now = Instant::now();
        self.inner
            .slots
            .iter()
            .find(|slot| slot.check.path == path)
            .map(|slot| {
                evaluate(
                    &slot.check,
                    slot.results.borrow().as_ref(),
                    self.inner.max_age,
                    now,
                )
            })
    }

    pub fn statuses(&self) -> Vec<ExecStatus> {
        let now = Instant::now();
        self.inner
            .slots
            .iter()
            .map(|slot| {
                evaluate(
                    &slot.check,
                    slot.results.borrow().as_ref(),
                    self.inner.max_age,
                    now,
                )
            })
            .collect()
    }

    /// Every check as a `CheckResult`, for `/all`.
    pub fn all(&self) -> Vec<CheckResult> {
        self.statuses()
            .iter()
            .map(ExecStatus::to_check_result)
            .collect()
    }

    /// Resolves once every check has produced at least one result (for start-up and tests).
    pub async fn first_results(&self) {
        for slot in &self.inner.slots {
            let mut results = slot.results.clone();
            let _ = results.wait_for(Option::is_some).await;
        }
    }

    /// Resolves once the check at `path` has a result newer than `after`.
    pub async fn result_after(&self, path: &str, after: Instant) -> Option<ExecStatus> {
        let slot = self
            .inner
            .slots
            .iter()
            .find(|slot| slot.check.path == path)?;
        let mut results = slot.results.clone();
        results
            .wait_for(|r| r.as_ref().is_some_and(|r| r.finished > after))
            .await
            .ok()?;
        self.result(path)
    }
}

async fn run_periodically(
    check: Arc<ExecCheck>,
    results: watch::Sender<Option<RunOutcome>>,
    period: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    // A small random offset so checks configured together do not all fire at the same instant.
    let max_jitter = (period / 10).min(Duration::from_millis(500));
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
            outcome = run_once(&check.invocation, timeout) => outcome,
        };
        if !outcome.passed() {
            tracing::debug!(path = %check.path, reason = %outcome.describe_end(), "exec check failed");
        }
        results.send_replace(Some(outcome));
        next = (started + period + jitter()).max(Instant::now());
    }
}
