//! The result of one round of health checks, shared by every kind of check and rendered by the HTTP layer.

use std::time::Duration;

use serde::Serialize;

/// The outcome of one named check (the pod status, one endpoint, one exec command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Stable, human-readable name: `pod`, `container:app`, `endpoint:http://…`, `exec:/healthz`.
    pub name: String,
    pub healthy: bool,
    /// One line saying why: `ready`, `container "app" is not ready (CrashLoopBackOff)`, `HTTP 500`, …
    pub reason: String,
    /// How long the check took, when it ran for this answer.
    #[serde(skip_serializing_if = "Option::is_none", with = "duration_ms")]
    pub latency: Option<Duration>,
    /// The name on the published port when `name` says too much (an endpoint's URL): `endpoint:2`.
    #[serde(skip)]
    pub public_name: Option<String>,
}

impl CheckResult {
    pub fn pass(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            healthy: true,
            reason: reason.into(),
            latency: None,
            public_name: None,
        }
    }

    pub fn fail(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            healthy: false,
            reason: reason.into(),
            latency: None,
            public_name: None,
        }
    }

    #[must_use]
    pub fn with_public_name(mut self, name: impl Into<String>) -> Self {
        self.public_name = Some(name.into());
        self
    }

    /// The name shown on the published port.
    pub fn public_name(&self) -> &str {
        self.public_name.as_deref().unwrap_or(&self.name)
    }

    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
}

/// Every check that makes up one answer; healthy only if all of them are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn new(checks: Vec<CheckResult>) -> Self {
        Self { checks }
    }

    /// An empty report is healthy: there is nothing that failed.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.healthy)
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.healthy)
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::Serializer;

    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
            None => s.serialize_none(),
        }
    }
}
