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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::setting;
use crate::metrics::Metrics;
use crate::periodic::{CheckState, PeriodicCheck, PeriodicChecks, RunResult, Timing, stale_reason};
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
            timeout: self.check_timeout,
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
    /// The timeout of a check whose URL does not say `?timeout=` (each check already holds its own).
    pub timeout: Duration,
}

impl SocketChecks {
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// One runner task per check (the shared periodic runner), stopped by `shutdown`.
    pub fn spawn(self, metrics: Arc<Metrics>, shutdown: CancellationToken) -> SocketHandle {
        let timing = Timing {
            period: self.period,
            timeout: self.timeout,
            max_age: self.max_age,
        };
        PeriodicChecks::spawn(self.checks, timing, metrics, shutdown)
    }
}

/// Read side of the running socket checks; cheap to clone, answers from memory: unhealthy before a check's first
/// result and once its result is older than the maximum age.
pub type SocketHandle = PeriodicChecks<SocketCheck>;

impl PeriodicCheck for SocketCheck {
    type Outcome = Outcome;
    type Status = CheckResult;

    fn kind(&self) -> &'static str {
        self.spec.kind.as_str()
    }

    fn path(&self) -> &str {
        &self.spec.path
    }

    fn name(&self) -> String {
        SocketCheck::name(self)
    }

    /// Bounded by the check's own timeout (its URL's `?timeout=`, else the default it was validated with).
    async fn run(&self, _default_timeout: Duration) -> Outcome {
        let started = Instant::now();
        // Each probe bounds itself by its timeout; this outer bound only guards against a bug in one.
        let verdict = tokio::time::timeout(self.timeout + Duration::from_secs(1), self.run_once())
            .await
            .unwrap_or_else(|_| {
                Verdict::fail(format!(
                    "no answer within {}",
                    format_duration(self.timeout)
                ))
            });
        let took = started.elapsed();
        Outcome {
            verdict,
            finished: Instant::now(),
            finished_at: SystemTime::now(),
            took,
        }
    }

    fn status(&self, state: CheckState<Outcome>) -> CheckResult {
        let name = SocketCheck::name(self);
        match state {
            CheckState::NoResultYet => CheckResult::fail(name, "no result yet"),
            CheckState::Stale { age, max_age, last } => CheckResult::fail(
                name,
                format!("{}: {}", stale_reason(age, max_age), last.verdict.reason),
            )
            .with_latency(last.took),
            CheckState::Fresh(Outcome { verdict, took, .. }) => if verdict.healthy {
                CheckResult::pass(name, verdict.reason)
            } else {
                CheckResult::fail(name, verdict.reason)
            }
            .with_latency(took),
        }
    }
}

impl RunResult for Outcome {
    fn healthy(&self) -> bool {
        self.verdict.healthy
    }

    fn reason(&self) -> String {
        self.verdict.reason.clone()
    }

    fn finished(&self) -> Instant {
        self.finished
    }

    fn took(&self) -> Duration {
        self.took
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
