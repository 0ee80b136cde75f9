//! The state of an exec check: how a run ended, fresh or stale, rendered as text, JSON or a `CheckResult`.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::spec::ExecCheck;
use crate::duration::format_duration;
use crate::periodic::{CheckState, PeriodicCheck, stale_reason};
use crate::report::CheckResult;

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunEnd {
    Exited { code: i32 },
    Signalled { signal: i32 },
    TimedOut { after_ms: u128 },
    CouldNotStart { error: String },
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub end: RunEnd,
    pub finished_at: SystemTime,
    pub finished: Instant,
    pub took: Duration,
    pub output: String,
    pub truncated: bool,
}

impl RunOutcome {
    pub fn passed(&self) -> bool {
        self.end == RunEnd::Exited { code: 0 }
    }

    pub fn describe_end(&self) -> String {
        match &self.end {
            RunEnd::Exited { code } => format!("exit status {code}"),
            RunEnd::Signalled { signal } => format!("killed by signal {signal}"),
            RunEnd::TimedOut { after_ms } => {
                format!(
                    "timed out after {}, process group killed",
                    format_duration(Duration::from_millis(*after_ms as u64))
                )
            }
            RunEnd::CouldNotStart { error } => format!("could not start: {error}"),
        }
    }
}

/// What one path answers right now: its last run, fresh or stale, or none yet.
pub type ExecState = CheckState<RunOutcome>;

/// The state of one exec check, renderable as a text body, JSON or a `CheckResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecStatus {
    pub path: String,
    pub command: String,
    pub state: ExecState,
}

#[derive(Serialize)]
struct ExecStatusJson<'a> {
    path: &'a str,
    command: &'a str,
    healthy: bool,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<&'a RunEnd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    took_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_truncated: Option<bool>,
}

impl ExecStatus {
    pub fn healthy(&self) -> bool {
        matches!(&self.state, ExecState::Fresh(outcome) if outcome.passed())
    }

    /// One line saying why, for `/all` and logs.
    pub fn reason(&self) -> String {
        match &self.state {
            ExecState::NoResultYet => "no result yet".to_owned(),
            ExecState::Stale { age, max_age, .. } => stale_reason(*age, *max_age),
            ExecState::Fresh(outcome) => outcome.describe_end(),
        }
    }

    fn last(&self) -> Option<&RunOutcome> {
        match &self.state {
            ExecState::NoResultYet => None,
            ExecState::Stale { last, .. } | ExecState::Fresh(last) => Some(last),
        }
    }

    /// Plain-text body: `ok` or `unhealthy` first (as the older bridge answered `ok`), then the details.
    /// The output is escaped so control characters cannot forge lines or terminal sequences.
    pub fn text_body(&self) -> String {
        let mut body = format!(
            "{}: {} {}\n",
            if self.healthy() { "ok" } else { "unhealthy" },
            self.path,
            self.reason()
        );
        if let Some(last) = self.last() {
            body.push_str(&format!(
                "last run: {} at {} (took {})\n",
                last.describe_end(),
                humantime::format_rfc3339_millis(last.finished_at),
                format_duration(round_ms(last.took))
            ));
            body.push_str(&format!("command: {}\n", self.command.escape_debug()));
            body.push_str(&format!(
                "output{}: {}\n",
                if last.truncated { " (truncated)" } else { "" },
                last.output.escape_debug()
            ));
        }
        body
    }

    /// The exec-to-HTTP bridge's body: `ok`, or the last result with its time and how it ended (our reasons for
    /// what the bridge did not know: no result yet, a timeout). The output is escaped as in [`Self::text_body`].
    pub fn bridge_body(&self) -> String {
        let last_exec = |last: &RunOutcome| {
            format!(
                "Result of last exec: {}, at {}, error {}",
                last.output.escape_debug(),
                humantime::format_rfc3339_millis(last.finished_at),
                last.describe_end()
            )
        };
        match &self.state {
            ExecState::Fresh(last) if last.passed() => "ok".to_owned(),
            ExecState::Fresh(last) => {
                format!(
                    "Healthz probe on {} error: {}\n",
                    self.path,
                    last_exec(last)
                )
            }
            ExecState::Stale { last, .. } => format!(
                "Latest result too old to be useful: {} ({}).\n",
                last_exec(last),
                self.reason()
            ),
            ExecState::NoResultYet => {
                format!("Healthz probe on {} error: no result yet\n", self.path)
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let last = self.last();
        let age = match &self.state {
            ExecState::Stale { age, .. } => Some(age.as_secs_f64() * 1000.0),
            _ => None,
        };
        let doc = ExecStatusJson {
            path: &self.path,
            command: &self.command,
            healthy: self.healthy(),
            reason: self.reason(),
            end: last.map(|l| &l.end),
            finished_at: last.map(|l| humantime::format_rfc3339_millis(l.finished_at).to_string()),
            took_ms: last.map(|l| l.took.as_secs_f64() * 1000.0),
            age_ms: age,
            output: last.map(|l| l.output.as_str()),
            output_truncated: last.map(|l| l.truncated),
        };
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }

    pub fn to_check_result(&self) -> CheckResult {
        let name = format!("exec:{}", self.path);
        let result = if self.healthy() {
            CheckResult::pass(name, self.reason())
        } else {
            CheckResult::fail(name, self.reason())
        };
        match self.last() {
            Some(last) => result.with_latency(last.took),
            None => result,
        }
    }
}

impl From<ExecStatus> for CheckResult {
    fn from(status: ExecStatus) -> Self {
        status.to_check_result()
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The state of a check at `now`: stale beyond max age, unhealthy before the first result.
pub fn evaluate(
    check: &ExecCheck,
    last: Option<&RunOutcome>,
    max_age: Duration,
    now: Instant,
) -> ExecStatus {
    check.status(CheckState::at(last, max_age, now))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::exec::spec::Invocation;

    fn outcome_at(end: RunEnd, finished: Instant) -> RunOutcome {
        RunOutcome {
            end,
            finished_at: SystemTime::UNIX_EPOCH,
            finished,
            took: Duration::from_millis(3),
            output: "line\n\u{1b}[31mred".to_owned(),
            truncated: false,
        }
    }

    fn check() -> ExecCheck {
        ExecCheck {
            path: "/healthz".into(),
            command: "ls /tmp".into(),
            invocation: Invocation::Shell {
                shell: "sh".into(),
                script: "ls /tmp".into(),
            },
        }
    }

    #[test]
    fn before_the_first_run_the_check_is_unhealthy() {
        let status = evaluate(&check(), None, Duration::from_secs(30), Instant::now());
        assert!(!status.healthy());
        assert_eq!(status.reason(), "no result yet");
        assert_eq!(status.text_body(), "unhealthy: /healthz no result yet\n");
        assert_eq!(
            status.to_check_result(),
            CheckResult::fail("exec:/healthz", "no result yet")
        );
    }

    #[test]
    fn a_fresh_pass_is_healthy_and_a_fresh_failure_is_not() {
        let now = Instant::now();
        let pass = evaluate(
            &check(),
            Some(&outcome_at(RunEnd::Exited { code: 0 }, now)),
            Duration::from_secs(30),
            now,
        );
        assert!(pass.healthy());
        assert!(
            pass.text_body().starts_with("ok: /healthz exit status 0\n"),
            "{}",
            pass.text_body()
        );
        let fail = evaluate(
            &check(),
            Some(&outcome_at(RunEnd::Exited { code: 2 }, now)),
            Duration::from_secs(30),
            now,
        );
        assert!(!fail.healthy());
        assert_eq!(fail.reason(), "exit status 2");
    }

    #[test]
    fn the_bridge_body_is_ok_or_the_last_result_with_its_time() {
        let now = Instant::now();
        let body = |end, at| {
            evaluate(
                &check(),
                Some(&outcome_at(end, at)),
                Duration::from_secs(30),
                now,
            )
            .bridge_body()
        };
        assert_eq!(body(RunEnd::Exited { code: 0 }, now), "ok");
        assert_eq!(
            body(RunEnd::Exited { code: 2 }, now),
            "Healthz probe on /healthz error: Result of last exec: line\\n\\u{1b}[31mred, at 1970-01-01T00:00:00.000Z, error exit status 2\n"
        );
        let stale = body(RunEnd::Exited { code: 0 }, now - Duration::from_secs(31));
        assert!(
            stale.starts_with("Latest result too old to be useful: Result of last exec: "),
            "{stale}"
        );
        assert!(
            stale.contains("(last result is 31s old (max age 30s))"),
            "{stale}"
        );
        let none = evaluate(&check(), None, Duration::from_secs(30), now).bridge_body();
        assert_eq!(none, "Healthz probe on /healthz error: no result yet\n");
    }

    #[test]
    fn a_result_older_than_max_age_is_stale() {
        let finished = Instant::now();
        let later = finished + Duration::from_secs(31);
        let status = evaluate(
            &check(),
            Some(&outcome_at(RunEnd::Exited { code: 0 }, finished)),
            Duration::from_secs(30),
            later,
        );
        assert!(!status.healthy());
        assert_eq!(status.reason(), "last result is 31s old (max age 30s)");
    }

    #[test]
    fn output_is_escaped_in_text_and_exact_in_json() {
        let now = Instant::now();
        let status = evaluate(
            &check(),
            Some(&outcome_at(RunEnd::Exited { code: 1 }, now)),
            Duration::from_secs(30),
            now,
        );
        let body = status.text_body();
        assert!(body.contains(r"output: line\n\u{1b}[31mred"), "{body}");
        assert_eq!(body.lines().count(), 4, "{body}");
        let json = status.to_json();
        assert_eq!(json["output"], "line\n\u{1b}[31mred");
        assert_eq!(
            json["end"],
            serde_json::json!({"kind": "exited", "code": 1})
        );
        assert_eq!(json["healthy"], false);
        assert_eq!(json["finished_at"], "1970-01-01T00:00:00.000Z");
    }
}
