//! Prometheus metrics of the admission server: admissions by result and reason, and their latency.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How one admission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped(&'static str),
    Denied(&'static str),
    /// The request could not be read (undecodable, wrong kind, too large).
    Error(&'static str),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    result: &'static str,
    reason: &'static str,
}

/// Handles to every metric; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    latency: Histogram,
    cert_reloads: Family<ReloadLabels, Counter>,
    cert_not_after: Gauge<i64, AtomicI64>,
    native_sidecars: Gauge<i64, AtomicI64>,
    node_versions_known: Gauge<i64, AtomicI64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The admission server's metrics alone (`serve`).
    pub fn new() -> Self {
        Self::build(false)
    }

    /// The admission server's metrics and the controller's, on one `/metrics` (`run`).
    pub fn with_controller() -> Self {
        Self::build(true)
    }

    fn build(with_controller: bool) -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("healthbridge_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by result and reason",
            admissions.clone(),
        );
        // Buckets from 50µs to ~1.6s: admissions are expected well under a millisecond.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.00005, 2.0, 16,
        ));
        registry.register_with_unit(
            "admission_duration",
            "Time to decode, decide and encode one admission review",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let cert_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads, by result",
            cert_reloads.clone(),
        );
        let cert_not_after = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "certificate_not_after_timestamp",
            "Unix time at which the current serving certificate expires (0 when unknown)",
            cert_not_after.clone(),
        );
        // Exported from the start, so a dashboard has the series and a rate() sees the first increment.
        drop(admissions.get_or_create(&AdmissionLabels {
            result: "injected",
            reason: "",
        }));
        let native_sidecars = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "native_sidecars",
            "1 while nativeSidecar auto injects the agent as a native sidecar, 0 while as a regular container",
            native_sidecars.clone(),
        );
        let node_versions_known = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "node_versions_known",
            "1 while the nodes' kubelet versions are known (the native-sidecar decision follows them); 0: they cannot be read, regular containers",
            node_versions_known.clone(),
        );
        if with_controller {
            crate::controller::register(&mut root);
            init_controller_series();
        }
        Self {
            registry: root,
            admissions,
            latency,
            cert_reloads,
            cert_not_after,
            native_sidecars,
            node_versions_known,
        }
    }

    /// Counts one admission and its duration.
    pub fn observe(&self, outcome: Outcome, elapsed: Duration) {
        let (result, reason) = match outcome {
            Outcome::Injected => ("injected", ""),
            Outcome::Skipped(reason) => ("skipped", reason),
            Outcome::Denied(reason) => ("denied", reason),
            Outcome::Error(reason) => ("error", reason),
        };
        self.admissions
            .get_or_create(&AdmissionLabels { result, reason })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a certificate reload attempt.
    pub fn cert_reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.cert_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Records when the serving certificate expires.
    pub fn set_cert_not_after(&self, unix_seconds: i64) {
        self.cert_not_after.set(unix_seconds);
    }

    /// Records the native-sidecar decision of `auto`.
    pub fn set_native_sidecars(&self, native: bool) {
        self.native_sidecars.set(i64::from(native));
    }

    /// Records whether the nodes' kubelet versions are known.
    pub fn set_node_versions_known(&self, known: bool) {
        self.node_versions_known.set(i64::from(known));
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Number of admissions counted with `result` (any reason); for tests and the bench.
    pub fn count(&self, result: &str) -> u64 {
        self.render()
            .lines()
            .filter(|l| {
                l.starts_with("healthbridge_webhook_admissions_total{")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// Every result of a reconcile and every kind and verb of a write, at zero until the first one happens.
fn init_controller_series() {
    use crate::controller::metrics::Outcome::{
        Error, Forbidden, Invalid, NodePortConflict, Skipped, Success,
    };
    use crate::controller::metrics::{Kind, OutcomeLabels, Verb, WriteLabels, metrics};
    let metrics = metrics();
    for result in [
        Success,
        Skipped,
        Invalid,
        NodePortConflict,
        Forbidden,
        Error,
    ] {
        drop(metrics.reconciles.get_or_create(&OutcomeLabels { result }));
    }
    for kind in [Kind::Role, Kind::RoleBinding, Kind::Service, Kind::Pod] {
        for verb in [Verb::Apply, Verb::Delete] {
            drop(metrics.writes.get_or_create(&WriteLabels { kind, verb }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_exposes_the_controller_metrics_beside_the_admission_metrics() {
        let metrics = Metrics::with_controller();
        metrics.observe(Outcome::Injected, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("healthbridge_webhook_admissions_total{result=\"injected\""));
        assert!(
            text.contains("healthbridge_controller_reconciles"),
            "{text}"
        );
        assert!(text.contains("healthbridge_uninjected_pods"), "{text}");
        assert_eq!(metrics.count("injected"), 1);
    }

    #[test]
    fn the_series_alerts_and_dashboards_rate_exist_before_the_first_event() {
        let text = Metrics::with_controller().render();
        for series in [
            "healthbridge_webhook_admissions_total{result=\"injected\",reason=\"\"} ",
            "healthbridge_controller_reconciles_total{result=\"error\"} ",
            "healthbridge_controller_reconciles_total{result=\"forbidden\"} ",
            "healthbridge_controller_api_writes_total{kind=\"service\",verb=\"apply\"} ",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn serve_exposes_only_the_admission_metrics() {
        let text = Metrics::new().render();
        assert!(text.contains("healthbridge_webhook_admission_duration_seconds"));
        assert!(!text.contains("healthbridge_controller"), "{text}");
    }
}
