//! Runs every exec check on its period (the shared periodic runner) and keeps the latest result of each, readable
//! from memory.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::process::run_once;
use super::spec::{ExecAnswer, ExecCheck, ExecChecks};
use super::status::{ExecState, ExecStatus, RunOutcome};
use crate::metrics::Metrics;
use crate::periodic::{PeriodicCheck, PeriodicChecks, RunResult, Timing};

impl ExecChecks {
    /// Starts one runner task per check, each run counted in the check metrics with `kind="exec"`; they stop
    /// (killing any running command) when `shutdown` is cancelled.
    pub fn spawn(self, metrics: Arc<Metrics>, shutdown: CancellationToken) -> ExecHandle {
        let timing = Timing {
            period: self.period,
            timeout: self.timeout,
            max_age: self.max_age,
        };
        ExecHandle {
            checks: PeriodicChecks::spawn(self.checks, timing, metrics, shutdown),
            answer: self.answer,
        }
    }
}

impl PeriodicCheck for ExecCheck {
    type Outcome = RunOutcome;
    type Status = ExecStatus;

    fn kind(&self) -> &'static str {
        "exec"
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn name(&self) -> String {
        format!("exec:{}", self.path)
    }

    fn run(&self, timeout: Duration) -> impl Future<Output = RunOutcome> + Send {
        run_once(&self.invocation, timeout)
    }

    fn status(&self, state: ExecState) -> ExecStatus {
        ExecStatus {
            path: self.path.clone(),
            command: self.command.clone(),
            state,
        }
    }
}

impl RunResult for RunOutcome {
    fn healthy(&self) -> bool {
        self.passed()
    }

    fn reason(&self) -> String {
        self.describe_end()
    }

    fn finished(&self) -> Instant {
        self.finished
    }

    fn took(&self) -> Duration {
        self.took
    }
}

/// Read side of the running exec checks (paths, results, waiting for one) and how their URLs answer on the
/// published port; cheap to clone, answers from memory.
#[derive(Clone, Debug)]
pub struct ExecHandle {
    checks: PeriodicChecks<ExecCheck>,
    answer: ExecAnswer,
}

impl ExecHandle {
    /// The body style of exec URLs on the published port.
    pub fn answer(&self) -> ExecAnswer {
        self.answer
    }
}

impl Deref for ExecHandle {
    type Target = PeriodicChecks<ExecCheck>;

    fn deref(&self) -> &Self::Target {
        &self.checks
    }
}
