//! The controller's Prometheus metrics, process-wide so the webhook's `/metrics` can expose them via [`register`].

use std::sync::LazyLock;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Everything matched or was applied.
    Success,
    /// The pod is not ours (no marker) or not ready to be reconciled.
    Skipped,
    /// A bad annotation; an Event tells the user what to fix.
    Invalid,
    /// A pinned nodePort is allocated to another Service.
    NodePortConflict,
    /// The controller's ClusterRole lacks a permission.
    Forbidden,
    /// The marker is there but the pod is not one the webhook injected: nothing is created for it.
    Untrusted,
    /// The object to write exists and is not ours, or the group belongs to another owner: left unchanged.
    Conflict,
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub result: Outcome,
}

/// Kind of object the controller manages or writes.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Kind {
    Role,
    RoleBinding,
    Service,
    Pod,
}

impl Kind {
    /// The Kubernetes kind.
    pub fn as_kind(self) -> &'static str {
        match self {
            Self::Role => "Role",
            Self::RoleBinding => "RoleBinding",
            Self::Service => "Service",
            Self::Pod => "Pod",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: Kind,
}

/// Write verbs counted by `healthbridge_controller_api_writes`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Verb {
    Apply,
    Delete,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: Kind,
    pub verb: Verb,
}

/// Every metric of the controller.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: Family<OutcomeLabels, Counter>,
    pub in_flight: Gauge,
    pub managed: Family<KindLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub uninjected_pods: Gauge,
    pub leader: Gauge,
}

impl Metrics {
    pub fn reconciled(&self, result: Outcome) {
        self.reconciles
            .get_or_create(&OutcomeLabels { result })
            .inc();
    }

    pub fn wrote(&self, kind: Kind, verb: Verb) {
        self.writes.get_or_create(&WriteLabels { kind, verb }).inc();
    }

    /// Writes so far, across kinds and verbs: the benchmark checks that a steady-state resync adds none.
    pub fn total_writes(&self) -> u64 {
        [Kind::Role, Kind::RoleBinding, Kind::Service, Kind::Pod]
            .into_iter()
            .flat_map(|kind| [Verb::Apply, Verb::Delete].map(|verb| WriteLabels { kind, verb }))
            .map(|labels| self.writes.get_or_create(&labels).get())
            .sum()
    }
}

/// The process-wide metrics the controller updates.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);
    &METRICS
}

/// Registers the controller's metrics into the registry served on `/metrics`; call once at startup.
pub fn register(registry: &mut Registry) {
    let metrics = metrics();
    registry.register(
        "healthbridge_controller_reconciles",
        "Reconciles of pods by result",
        metrics.reconciles.clone(),
    );
    registry.register(
        "healthbridge_controller_reconciles_in_flight",
        "Reconciles running now (kube-runtime keeps its queue private; this is its visible depth)",
        metrics.in_flight.clone(),
    );
    registry.register(
        "healthbridge_controller_managed_objects",
        "Objects carrying app.kubernetes.io/managed-by=healthbridge, by kind",
        metrics.managed.clone(),
    );
    registry.register(
        "healthbridge_controller_api_writes",
        "Writes the controller made to the API server, by kind and verb",
        metrics.writes.clone(),
    );
    registry.register(
        "healthbridge_uninjected_pods",
        "Pods annotated healthbridge.io/inject=true that the webhook did not inject",
        metrics.uninjected_pods.clone(),
    );
    registry.register(
        "healthbridge_controller_leader",
        "1 while this replica holds the controller Lease",
        metrics.leader.clone(),
    );
}

/// Label values in snake_case, as Prometheus users expect (the derive would write the Rust variant name).
macro_rules! snake_case_label_value {
    ($type:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self {
                    $(Self::$variant => $text),+
                })
            }
        }
    };
}

snake_case_label_value!(Outcome {
    Success => "success",
    Skipped => "skipped",
    Invalid => "invalid",
    NodePortConflict => "node_port_conflict",
    Forbidden => "forbidden",
    Untrusted => "untrusted",
    Conflict => "conflict",
    Error => "error",
});
snake_case_label_value!(Kind { Role => "role", RoleBinding => "role_binding", Service => "service", Pod => "pod" });
snake_case_label_value!(Verb { Apply => "apply", Delete => "delete" });

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_snake_case_labels() {
        let metrics = Metrics::default();
        metrics.reconciled(Outcome::NodePortConflict);
        metrics.wrote(Kind::RoleBinding, Verb::Apply);
        let mut registry = Registry::default();
        registry.register(
            "healthbridge_controller_reconciles",
            "",
            metrics.reconciles.clone(),
        );
        registry.register(
            "healthbridge_controller_api_writes",
            "",
            metrics.writes.clone(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        assert!(
            text.contains(
                "healthbridge_controller_reconciles_total{result=\"node_port_conflict\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "healthbridge_controller_api_writes_total{kind=\"role_binding\",verb=\"apply\"} 1"
            ),
            "{text}"
        );
        assert_eq!(metrics.total_writes(), 1);
    }
}
