//! Exec checks: commands run every period in their own process group, with a timeout, served per URL path.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::process::{Pid, Signal, WaitOptions, kill_process_group, waitpgid};
use serde::Serialize;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::duration::{format_duration, parse_duration};
use crate::report::CheckResult;

/// Output kept per run; the rest is read and thrown away so the command never blocks on a full pipe.
pub const OUTPUT_LIMIT: usize = 4 * 1024;
/// Where a command given without a URL is served, as in the older exec bridge.
pub const DEFAULT_PATH: &str = "/healthz";
/// Routes of the agent itself that an exec check cannot take.
pub const RESERVED_PATHS: [&str; 4] = ["/health", "/all", "/self", "/metrics"];
/// Characters that need a shell to mean what the user wrote.
const SHELL_SYNTAX: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
    '{', '}', '\n',
];

/// Exec-check flags, each also an `HTTP_HEALTHCHECK_SIDECAR_` variable.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ExecArgs {
    /// `URL=COMMAND`, e.g. `/healthz='ls /tmp/test'`; repeatable. A lone command is served at /healthz.
    /// The variable holds one `URL=COMMAND` per line.
    #[arg(
        long = "exec",
        env = "HTTP_HEALTHCHECK_SIDECAR_EXEC",
        value_name = "URL=COMMAND"
    )]
    pub exec: Vec<String>,
    /// How often each command runs: `2s`, `500ms`, `2`.
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_EXEC_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub exec_period: Duration,
    /// A result older than this is unhealthy.
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_EXEC_MAX_AGE", default_value = "30s", value_parser = parse_duration)]
    pub exec_max_age: Duration,
    /// A run taking longer is killed with its whole process group and counts as failed (default: the period).
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_EXEC_TIMEOUT", value_parser = parse_duration)]
    pub exec_timeout: Option<Duration>,
}

impl Default for ExecArgs {
    fn default() -> Self {
        Self {
            exec: Vec::new(),
            exec_period: Duration::from_secs(2),
            exec_max_age: Duration::from_secs(30),
            exec_timeout: None,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExecConfigError {
    #[error(
        "--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: the command is empty; write it like /healthz='ls /tmp/test'"
    )]
    EmptyCommand { spec: String },
    #[error(
        "--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: the URL `{path}` must be a path starting with / and without spaces"
    )]
    BadPath { spec: String, path: String },
    #[error(
        "--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: {path} is the agent's own route; pick another path such as /healthz"
    )]
    ReservedPath { spec: String, path: String },
    #[error(
        "--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC: {path} is given twice; every check needs its own path"
    )]
    DuplicatePath { path: String },
    #[error("--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: program `{program}` {why}")]
    Program {
        spec: String,
        program: String,
        why: String,
    },
    #[error(
        "--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: the command uses shell syntax but no `sh` was found in PATH; install a shell or call the program directly"
    )]
    NoShell { spec: String },
    #[error("--exec-period / HTTP_HEALTHCHECK_SIDECAR_EXEC_PERIOD must be more than 0")]
    ZeroPeriod,
    #[error("--exec-timeout / HTTP_HEALTHCHECK_SIDECAR_EXEC_TIMEOUT must be more than 0")]
    ZeroTimeout,
    #[error(
        "--exec-max-age ({max_age}) is shorter than --exec-period ({period}): every result would be stale before the next run; raise HTTP_HEALTHCHECK_SIDECAR_EXEC_MAX_AGE"
    )]
    MaxAgeBelowPeriod { max_age: String, period: String },
}

/// How a command is started: directly when it is a plain word list, else through `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Direct { program: PathBuf, args: Vec<String> },
    Shell { shell: PathBuf, script: String },
}

/// One configured check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCheck {
    pub path: String,
    pub command: String,
    pub invocation: Invocation,
}

/// All exec checks with their timing, validated and ready to spawn.
#[derive(Debug, Clone)]
pub struct ExecChecks {
    pub checks: Vec<ExecCheck>,
    pub period: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
}

/// Splits `URL=COMMAND`; a spec whose part before `=` is not a path is a lone command for `/healthz`.
pub fn split_spec(spec: &str) -> Result<(String, String), ExecConfigError> {
    let spec_trimmed = spec.trim();
    let (path, command) = match spec_trimmed.split_once('=') {
        Some((path, command)) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
            (path, command)
        }
        _ => (DEFAULT_PATH, spec_trimmed),
    };
    let command = unquote(command.trim());
    if command.is_empty() {
        return Err(ExecConfigError::EmptyCommand {
            spec: spec.to_owned(),
        });
    }
    if path.contains(['?', '#']) {
        return Err(ExecConfigError::BadPath {
            spec: spec.to_owned(),
            path: path.to_owned(),
        });
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(ExecConfigError::ReservedPath {
            spec: spec.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok((path.to_owned(), command.to_owned()))
}

/// `/x='ls /tmp'` reaches us with the quotes when it comes from a manifest's env value rather than a shell.
fn unquote(command: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = command
            .strip_prefix(quote)
            .and_then(|c| c.strip_suffix(quote))
            && !inner.contains(quote)
        {
            return inner;
        }
    }
    command
}

impl ExecArgs {
    /// Every `URL=COMMAND` spec, one per flag or per line of the variable.
    pub fn specs(&self) -> impl Iterator<Item = &str> {
        self.exec
            .iter()
            .flat_map(|v| v.lines())
            .filter(|line| !line.trim().is_empty())
    }

    /// Parses every spec and checks that each program can run, so mistakes stop the start-up.
    pub fn validate(&self) -> Result<ExecChecks, ExecConfigError> {
        self.validate_with_path(
            std::env::var_os("PATH")
                .as_deref()
                .and_then(|p| p.to_str())
                .unwrap_or("/usr/bin:/bin"),
        )
    }

    fn validate_with_path(&self, search_path: &str) -> Result<ExecChecks, ExecConfigError> {
        if self.exec_period.is_zero() {
            return Err(ExecConfigError::ZeroPeriod);
        }
        let timeout = self.exec_timeout.unwrap_or(self.exec_period);
        if timeout.is_zero() {
            return Err(ExecConfigError::ZeroTimeout);
        }
        if self.exec_max_age < self.exec_period {
            return Err(ExecConfigError::MaxAgeBelowPeriod {
                max_age: format_duration(self.exec_max_age),
                period: format_duration(self.exec_period),
            });
        }
        let mut seen = BTreeSet::new();
        let mut checks = Vec::new();
        for spec in self.specs() {
            let (path, command) = split_spec(spec)?;
            if !seen.insert(path.clone()) {
                return Err(ExecConfigError::DuplicatePath { path });
            }
            let invocation = plan(spec, &command, search_path)?;
            checks.push(ExecCheck {
                path,
                command,
                invocation,
            });
        }
        Ok(ExecChecks {
            checks,
            period: self.exec_period,
            max_age: self.exec_max_age,
            timeout,
        })
    }
}

fn plan(spec: &str, command: &str, search_path: &str) -> Result<Invocation, ExecConfigError> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let needs_shell =
        command.contains(SHELL_SYNTAX) || words.first().is_some_and(|w| w.contains('='));
    if needs_shell {
        let shell = find_program("sh", search_path).map_err(|_| ExecConfigError::NoShell {
            spec: spec.to_owned(),
        })?;
        return Ok(Invocation::Shell {
            shell,
            script: command.to_owned(),
        });
    }
    let (program, args) = words
        .split_first()
        .ok_or_else(|| ExecConfigError::EmptyCommand {
            spec: spec.to_owned(),
        })?;
    let program_path =
        find_program(program, search_path).map_err(|why| ExecConfigError::Program {
            spec: spec.to_owned(),
            program: (*program).to_owned(),
            why,
        })?;
    Ok(Invocation::Direct {
        program: program_path,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    })
}

fn find_program(program: &str, search_path: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).map(|()| path);
    }
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| format!("was not found in PATH ({search_path})"))
}

fn executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be used: {e}"))?;
    if !meta.is_file() {
        return Err("is not a file".to_owned());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (chmod +x it)".to_owned());
    }
    Ok(())
}

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

/// What one path answers right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecState {
    NoResultYet,
    Stale {
        age: Duration,
        max_age: Duration,
        last: RunOutcome,
    },
    Fresh(RunOutcome),
}

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
            ExecState::Stale { age, max_age, .. } => {
                format!(
                    "last result is {} old (max age {})",
                    format_duration(round_ms(*age)),
                    format_duration(*max_age)
                )
            }
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

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The state of every check at `now`: stale beyond max age, unhealthy before the first result.
pub fn evaluate(
    check: &ExecCheck,
    last: Option<&RunOutcome>,
    max_age: Duration,
    now: Instant,
) -> ExecStatus {
    let state = match last {
        None => ExecState::NoResultYet,
        Some(last) => {
            let age = now.saturating_duration_since(last.finished);
            if age > max_age {
                ExecState::Stale {
                    age,
                    max_age,
                    last: last.clone(),
                }
            } else {
                ExecState::Fresh(last.clone())
            }
        }
    };
    ExecStatus {
        path: check.path.clone(),
        command: check.command.clone(),
        state,
    }
}

impl ExecArgs {
    pub fn is_empty(&self) -> bool {
        self.specs().next().is_none()
    }
}

impl ExecChecks {
    pub fn new(args: &ExecArgs) -> Result<Self, ExecConfigError> {
        args.validate()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

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

/// Kills the process group if the run is abandoned (shutdown) before the leader was reaped.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

/// Runs the command once in a new process group, capturing stdout and stderr together up to `OUTPUT_LIMIT`.
pub async fn run_once(invocation: &Invocation, timeout: Duration) -> RunOutcome {
    let started = Instant::now();
    let could_not_start = |error: std::io::Error| {
        outcome(
            RunEnd::CouldNotStart {
                error: error.to_string(),
            },
            started,
            Vec::new(),
            false,
        )
    };
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return could_not_start(e),
    };
    let writer_for_stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return could_not_start(e),
    };
    let mut command = match invocation {
        Invocation::Direct { program, args } => {
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            command
        }
        Invocation::Shell { shell, script } => {
            let mut command = tokio::process::Command::new(shell);
            command.arg("-c").arg(script);
            command
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_for_stderr)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds our copies of the pipe's write end; drop it so the read side sees EOF when the group is done.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return could_not_start(e),
    };
    let pgid = child.id().and_then(|id| Pid::from_raw(id as i32));
    let mut guard = GroupGuard { pgid };
    let mut receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
    {
        Ok(receiver) => receiver,
        Err(e) => return could_not_start(e),
    };

    let mut output = Vec::with_capacity(256);
    let mut truncated = false;
    let finished = tokio::time::timeout(timeout, async {
        let (_, status) = tokio::join!(
            read_bounded(&mut receiver, &mut output, &mut truncated),
            child.wait()
        );
        status
    })
    .await;
    let end = match finished {
        Ok(Ok(status)) => {
            guard.pgid = None;
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => RunEnd::Exited { code },
                (None, Some(signal)) => RunEnd::Signalled { signal },
                (None, None) => RunEnd::CouldNotStart {
                    error: "unknown exit status".to_owned(),
                },
            }
        }
        Ok(Err(e)) => RunEnd::CouldNotStart {
            error: e.to_string(),
        },
        Err(_) => {
            if let Some(pgid) = guard.pgid.take() {
                let _ = kill_process_group(pgid, Signal::KILL);
                let _ = child.wait().await;
                reap_group(pgid).await;
            }
            RunEnd::TimedOut {
                after_ms: timeout.as_millis(),
            }
        }
    };
    drop(receiver);
    outcome(end, started, output, truncated)
}

fn outcome(end: RunEnd, started: Instant, output: Vec<u8>, truncated: bool) -> RunOutcome {
    let finished = Instant::now();
    RunOutcome {
        end,
        finished_at: SystemTime::now(),
        finished,
        took: finished.saturating_duration_since(started),
        output: String::from_utf8_lossy(&output).into_owned(),
        truncated,
    }
}

async fn read_bounded(
    receiver: &mut tokio::net::unix::pipe::Receiver,
    output: &mut Vec<u8>,
    truncated: &mut bool,
) {
    let mut chunk = [0_u8; 4096];
    loop {
        match receiver.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..n.min(room)]);
                if n > room {
                    *truncated = true;
                }
            }
        }
    }
}

/// When the agent is PID 1 (or a subreaper), killed grandchildren are re-parented to it: reap them so none stays a zombie.
async fn reap_group(pgid: Pid) {
    for _ in 0..50 {
        loop {
            match waitpgid(pgid, WaitOptions::NOHANG) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                // No child of ours is left in the group: the usual case when we are not PID 1.
                Err(_) => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PATH: &str = "/usr/bin:/bin";

    fn args(specs: &[&str]) -> ExecArgs {
        ExecArgs {
            exec: specs.iter().map(|s| (*s).to_owned()).collect(),
            ..ExecArgs::default()
        }
    }

    fn paths_and_commands(checks: &ExecChecks) -> Vec<(&str, &str)> {
        checks
            .checks
            .iter()
            .map(|c| (c.path.as_str(), c.command.as_str()))
            .collect()
    }

    #[test]
    fn url_command_pairs_from_flags_and_lines() {
        let checks = args(&[
            "/healthz=ls /tmp",
            "/ready='test -d /tmp'\n/live=\"true\"\n\n",
        ])
        .validate_with_path(PATH)
        .unwrap();
        assert_eq!(
            paths_and_commands(&checks),
            [
                ("/healthz", "ls /tmp"),
                ("/ready", "test -d /tmp"),
                ("/live", "true")
            ]
        );
    }

    #[test]
    fn a_lone_command_is_served_at_healthz() {
        let checks = args(&["ls /tmp/test"]).validate_with_path(PATH).unwrap();
        assert_eq!(paths_and_commands(&checks), [("/healthz", "ls /tmp/test")]);
        let checks = args(&["/bin/ls --color=never /tmp"])
            .validate_with_path(PATH)
            .unwrap();
        assert_eq!(
            paths_and_commands(&checks),
            [("/healthz", "/bin/ls --color=never /tmp")]
        );
    }

    #[test]
    fn plain_commands_run_directly_and_shell_syntax_through_sh() {
        let checks = args(&["/a=ls /tmp", "/b=ls /tmp | grep x", "/c=FOO=1 true"])
            .validate_with_path(PATH)
            .unwrap();
        assert!(
            matches!(&checks.checks[0].invocation, Invocation::Direct { program, args } if program.ends_with("ls") && args == &["/tmp"])
        );
        assert!(
            matches!(&checks.checks[1].invocation, Invocation::Shell { script, .. } if script == "ls /tmp | grep x")
        );
        assert!(matches!(
            &checks.checks[2].invocation,
            Invocation::Shell { .. }
        ));
    }

    #[test]
    fn a_missing_program_is_a_start_up_error() {
        let err = args(&["/x=no-such-program-hb --flag"])
            .validate_with_path(PATH)
            .unwrap_err();
        assert!(
            matches!(&err, ExecConfigError::Program { program, .. } if program == "no-such-program-hb")
        );
        assert!(
            err.to_string()
                .contains("was not found in PATH (/usr/bin:/bin)"),
            "{err}"
        );
        let err = args(&["/x=/nonexistent/check"])
            .validate_with_path(PATH)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`/nonexistent/check` cannot be used"), "{err}");
    }

    #[test]
    fn a_non_executable_file_is_a_start_up_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let spec = format!("/x={}", file.path().display());
        let err = args(&[&spec])
            .validate_with_path(PATH)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not executable"), "{err}");
    }

    #[test]
    fn shell_syntax_without_a_shell_is_a_start_up_error() {
        let err = args(&["/x=ls | wc"])
            .validate_with_path("/nonexistent")
            .unwrap_err();
        assert!(matches!(err, ExecConfigError::NoShell { .. }), "{err}");
    }

    #[test]
    fn bad_duplicate_and_reserved_paths_are_rejected() {
        assert!(matches!(
            args(&["/x="]).validate_with_path(PATH),
            Err(ExecConfigError::EmptyCommand { .. })
        ));
        assert!(matches!(
            args(&["/a=true", "/a=false"]).validate_with_path(PATH),
            Err(ExecConfigError::DuplicatePath { .. })
        ));
        assert!(matches!(
            args(&["/all=true"]).validate_with_path(PATH),
            Err(ExecConfigError::ReservedPath { .. })
        ));
        assert!(matches!(
            args(&["/a?b=true"]).validate_with_path(PATH),
            Err(ExecConfigError::BadPath { .. })
        ));
    }

    #[test]
    fn timing_is_checked() {
        let zero_period = ExecArgs {
            exec_period: Duration::ZERO,
            ..args(&["true"])
        };
        assert_eq!(
            zero_period.validate_with_path(PATH).unwrap_err(),
            ExecConfigError::ZeroPeriod
        );
        let zero_timeout = ExecArgs {
            exec_timeout: Some(Duration::ZERO),
            ..args(&["true"])
        };
        assert_eq!(
            zero_timeout.validate_with_path(PATH).unwrap_err(),
            ExecConfigError::ZeroTimeout
        );
        let short_age = ExecArgs {
            exec_max_age: Duration::from_secs(1),
            ..args(&["true"])
        };
        assert!(
            short_age
                .validate_with_path(PATH)
                .unwrap_err()
                .to_string()
                .contains("(1s) is shorter than --exec-period (2s)")
        );
        let defaults = args(&["true"]).validate_with_path(PATH).unwrap();
        assert_eq!(
            defaults.timeout,
            Duration::from_secs(2),
            "the timeout defaults to the period"
        );
    }

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
