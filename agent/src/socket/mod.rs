//! Socket checks (TCP connect and exchange, UDP request and answer, gRPC health), run on a period in the
//! background and served per URL path like exec checks: a request never opens a connection itself, so the
//! published port cannot be used to make the agent knock on the app.

pub mod grpc;
pub mod net;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use healthbridge_contract::duration::{format_duration, parse_positive_duration};
use healthbridge_contract::env;
use healthbridge_contract::socket::{self, SocketKind, SocketSpec, SocketSpecError};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::setting;
use crate::metrics::Metrics;
use crate::report::CheckResult;
use crate::tls::{ClientTls, ClientTlsArgs, TlsError};

/// Socket-check flags, each also an `HTTP_HEALTHCHECK_SIDECAR_` variable.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SocketArgs {
    /// `PATH=tcp://HOST:PORT[?send=…&expect=…&timeout=…]`; repeatable. The variable holds one per line.
    #[arg(long = "tcp", env = env::TCP, value_name = "PATH=URL")]
    pub tcp: Vec<String>,
    /// `PATH=udp://HOST:PORT?send=…[&expect=…&timeout=…]`; repeatable. The variable holds one per line.
    #[arg(long = "udp", env = env::UDP, value_name = "PATH=URL")]
    pub udp: Vec<String>,
    /// `PATH=grpc://HOST:PORT[/SERVICE]` (h2c) or `grpcs://…` (TLS with the TLS_* settings); repeatable. The
    /// variable holds one per line.
    #[arg(long = "grpc", env = env::GRPC, value_name = "PATH=URL")]
    pub grpc: Vec<String>,
    /// How often each socket check runs: `2s`, `500ms`, `2`.
    #[arg(long, env = env::CHECK_PERIOD, default_value = "2s", value_parser = setting(env::CHECK_PERIOD, "--check-period", parse_positive_duration))]
    pub check_period: Duration,
    /// A socket-check result older than this is unhealthy; not shorter than the period.
    #[arg(long, env = env::CHECK_MAX_AGE, default_value = "30s", value_parser = setting(env::CHECK_MAX_AGE, "--check-max-age", parse_positive_duration))]
    pub check_max_age: Duration,
    /// Timeout of one socket check (connect + exchange) unless its URL says `?timeout=`.
    #[arg(long, env = env::CHECK_TIMEOUT, default_value = "1s", value_parser = setting(env::CHECK_TIMEOUT, "--check-timeout", parse_positive_duration))]
    pub check_timeout: Duration,
}

impl Default for SocketArgs {
    fn default() -> Self {
        Self {
            tcp: Vec::new(),
            udp: Vec::new(),
            grpc: Vec::new(),
            check_period: Duration::from_secs(2),
            check_max_age: Duration::from_secs(30),
            check_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Error)]
pub enum SocketConfigError {
    #[error("--{} / {variable} {error}", .kind.as_str())]
    Spec {
        kind: SocketKind,
        variable: &'static str,
        error: SocketSpecError,
    },
    #[error(
        "--check-max-age ({max_age}) is shorter than --check-period ({period}): every result would be stale before the next run; raise HTTP_HEALTHCHECK_SIDECAR_CHECK_MAX_AGE"
    )]
    MaxAgeBelowPeriod { max_age: String, period: String },
    #[error("grpcs:// checks use the TLS options: {0}")]
    Tls(#[from] TlsError),
}

impl SocketArgs {
    fn values(&self, kind: SocketKind) -> (&[String], &'static str) {
        match kind {
            SocketKind::Tcp => (&self.tcp, env::TCP),
            SocketKind::Udp => (&self.udp, env::UDP),
            SocketKind::Grpc => (&self.grpc, env::GRPC),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty() && self.grpc.is_empty()
    }

    /// Every spec of every kind, checked by the contract's rules, and the timing.
    pub fn validate_specs(&self) -> Result<Vec<SocketSpec>, SocketConfigError> {
        if self.check_max_age < self.check_period {
            return Err(SocketConfigError::MaxAgeBelowPeriod {
                max_age: format_duration(self.check_max_age),
                period: format_duration(self.check_period),
            });
        }
        let mut specs = Vec::new();
        for kind in SocketKind::ALL {
            let (values, variable) = self.values(kind);
            let parsed =
                socket::parse_specs(kind, values.iter().map(String::as_str)).map_err(|error| {
                    SocketConfigError::Spec {
                        kind,
                        variable,
                        error,
                    }
                })?;
            specs.extend(parsed);
        }
        Ok(specs)
    }

    /// The checks, ready to spawn; `grpcs://` ones verify with `tls`.
    pub fn validate(&self, tls: &ClientTlsArgs) -> Result<SocketChecks, SocketConfigError> {
        let specs = self.validate_specs()?;
        // Loaded once, and only when a gRPC check needs it.
        let mut client_tls: Option<ClientTls> = None;
        let mut checks = Vec::with_capacity(specs.len());
        for spec in specs {
            let timeout = spec.timeout.unwrap_or(self.check_timeout);
            let probe = match spec.kind {
                SocketKind::Grpc => {
                    let loaded = match client_tls {
                        Some(ref loaded) => loaded,
                        None => client_tls.insert(tls.load()?),
                    };
                    Probe::Grpc(Box::new(grpc::GrpcProbe::new(&spec, loaded)))
                }
                SocketKind::Tcp => Probe::Tcp,
                SocketKind::Udp => Probe::Udp,
            };
            checks.push(SocketCheck {
                spec,
                timeout,
                probe,
            });
        }
        Ok(SocketChecks {
            checks,
            period: self.check_period,
            max_age: self.check_max_age,
        })
    }
}

/// How a check talks to its target.
#[derive(Debug, Clone)]
pub enum Probe {
    Tcp,
    Udp,
    Grpc(Box<grpc::GrpcProbe>),
}

/// One configured socket check.
#[derive(Debug, Clone)]
pub struct SocketCheck {
    pub spec: SocketSpec,
    pub timeout: Duration,
    pub probe: Probe,
}

impl SocketCheck {
    /// `tcp:/db`, `grpc:/api`: the name in `/all` and on the published port.
    pub fn name(&self) -> String {
        format!("{}:{}", self.spec.kind, self.spec.path)
    }

    /// One run: healthy or not, and one line saying why.
    pub async fn run_once(&self) -> Verdict {
        match &self.probe {
            Probe::Tcp => net::tcp(&self.spec, self.timeout).await,
            Probe::Udp => net::udp(&self.spec, self.timeout).await,
            Probe::Grpc(probe) => probe.check(self.timeout).await,
        }
    }
}

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub reason: String,
}

impl Verdict {
    pub fn pass(reason: impl Into<String>) -> Self {
        Self {
            healthy: true,
            reason: reason.into(),
        }
    }

    pub fn fail(reason: impl Into<String>) -> Self {
        Self {
            healthy: false,
            reason: reason.into(),
        }
    }
}

/// The last run of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub finished: Instant,
    pub finished_at: SystemTime,
    pub took: Duration,
}

/// Every socket check with its timing.
#[derive(Debug, Clone)]
pub struct SocketChecks {
    pub checks: Vec<SocketCheck>,
    pub period: Duration,
    pub max_age: Duration,
}

impl SocketChecks {
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// One runner task per check, stopped by `shutdown`.
    pub fn spawn(self, metrics: Arc<Metrics>, shutdown: CancellationToken) -> SocketHandle {
        let slots = self
            .checks
            .into_iter()
            .map(|check| {
                let (sender, results) = watch::channel(None);
                let check = Arc::new(check);
                tokio::spawn(run_periodically(
                    check.clone(),
                    sender,
                    self.period,
                    metrics.clone(),
                    shutdown.clone(),
                ));
                Slot { check, results }
            })
            .collect();
        SocketHandle {
            inner: Arc::new(Inner {
                slots,
                max_age: self.max_age,
            }),
        }
    }
}

struct Slot {
    check: Arc<SocketCheck>,
    results: watch::Receiver<Option<Outcome>>,
}

struct Inner {
    slots: Vec<Slot>,
    max_age: Duration,
}

/// Read side of the running socket checks; cheap to clone, answers from memory.
#[derive(Clone)]
pub struct SocketHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketHandle")
            .field("paths", &self.paths().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SocketHandle {
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.inner.slots.iter().map(|s| s.check.spec.path.as_str())
    }

    /// The state of the check at `path` now: unhealthy before its first result and once its result is older
    /// than the maximum age.
    pub fn result(&self, path: &str) -> Option<CheckResult> {
        let slot = self
            .inner
            .slots
            .iter()
            .find(|s| s.check.spec.path == path)?;
        Some(self.evaluate(slot, Instant::now()))
    }

    fn evaluate(&self, slot: &Slot, now: Instant) -> CheckResult {
        let name = slot.check.name();
        let last = slot.results.borrow();
        let Some(last) = last.as_ref() else {
            return CheckResult::fail(name, "no result yet");
        };
        let age = now.saturating_duration_since(last.finished);
        let result = if age > self.inner.max_age {
            CheckResult::fail(
                name,
                format!(
                    "last result is {} old (max age {}): {}",
                    format_duration(Duration::from_millis(age.as_millis() as u64)),
                    format_duration(self.inner.max_age),
                    last.verdict.reason
                ),
            )
        } else if last.verdict.healthy {
            CheckResult::pass(name, last.verdict.reason.clone())
        } else {
            CheckResult::fail(name, last.verdict.reason.clone())
        };
        result.with_latency(last.took)
    }

    /// Every check, for `/all`.
    pub fn all(&self) -> Vec<CheckResult> {
        let now = Instant::now();
        self.inner
            .slots
            .iter()
            .map(|slot| self.evaluate(slot, now))
            .collect()
    }

    /// Resolves once the check at `path` has a result newer than `after` (for tests).
    pub async fn result_after(&self, path: &str, after: Instant) -> Option<CheckResult> {
        let slot = self
            .inner
            .slots
            .iter()
            .find(|s| s.check.spec.path == path)?;
        let mut results = slot.results.clone();
        results
            .wait_for(|r| r.as_ref().is_some_and(|r| r.finished > after))
            .await
            .ok()?;
        self.result(path)
    }
}

async fn run_periodically(
    check: Arc<SocketCheck>,
    results: watch::Sender<Option<Outcome>>,
    period: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // A small random offset so checks configured together do not all fire at the same instant.
    let max_jitter = (period / 10).min(Duration::from_millis(500));
    let jitter = || max_jitter.mul_f64(fastrand::f64());
    let mut next = Instant::now() + jitter();
    let kind = check.spec.kind.as_str();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        // Each probe bounds itself by its timeout; this outer bound only guards against a bug in one.
        let verdict = tokio::select! {
            () = shutdown.cancelled() => return,
            verdict = tokio::time::timeout(check.timeout + Duration::from_secs(1), check.run_once()) => {
                verdict.unwrap_or_else(|_| Verdict::fail(format!("no answer within {}", format_duration(check.timeout))))
            }
        };
        let took = started.elapsed();
        metrics.count_check_run(kind, &check.spec.path, verdict.healthy, took);
        if !verdict.healthy {
            tracing::debug!(check = %check.name(), reason = %verdict.reason, "socket check failed");
        }
        results.send_replace(Some(Outcome {
            verdict,
            finished: Instant::now(),
            finished_at: SystemTime::now(),
            took,
        }));
        next = (started + period + jitter()).max(Instant::now());
    }
}

/// Up to 64 bytes of a reply, escaped so it cannot forge lines or terminal sequences.
pub fn show_bytes(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(64)];
    let mut text = shown.escape_ascii().to_string();
    if bytes.len() > shown.len() {
        text.push('…');
    }
    text
}
