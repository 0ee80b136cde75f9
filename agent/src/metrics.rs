//! Prometheus metrics of the agent: answers by route and result, watch restarts by cause, age of the pod status.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckRunLabels {
    pub kind: &'static str,
    pub path: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub kind: &'static str,
    pub path: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub route: String,
    pub result: &'static str,
}

/// The two counters of one route, looked up once so that answering costs one atomic add.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    healthy: Counter,
    unhealthy: Counter,
}

impl RouteCounters {
    pub fn count(&self, healthy: bool) {
        if healthy {
            self.healthy.inc()
        } else {
            self.unhealthy.inc()
        };
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub answers: Family<AnswerLabels, Counter>,
    pub health: RouteCounters,
    pub all: RouteCounters,
    pub self_check: RouteCounters,
    pub watch_restarts: Family<RestartLabels, Counter>,
    pub seconds_since_pod_update: Gauge<f64, AtomicU64>,
    pub seconds_since_confirmed_contact: Gauge<f64, AtomicU64>,
    pub check_runs: Family<CheckRunLabels, Counter>,
    pub check_duration: Family<CheckLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("healthbridge_agent");
        let answers = Family::<AnswerLabels, Counter>::default();
        registry.register(
            "health_answers",
            "Health answers given, by route and result (healthy or unhealthy)",
            answers.clone(),
        );
        let watch_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "watch_restarts",
            "Pod GETs retried and watches restarted, by cause: scheduled (a watch ran its timeoutSeconds and \
             resumed), resource_expired (410), closed (stream ended early), timeout (no answer in time), \
             api_error (an error status), transport (connection failed), invalid (undecodable answer), \
             behind (a GET found a pod version the open watch had not delivered)",
            watch_restarts.clone(),
        );
        // Every cause is exported from the start, so a rate() sees the first restart.
        for cause in RESTART_CAUSES {
            drop(watch_restarts.get_or_create(&RestartLabels { cause }));
        }
        let seconds_since_pod_update = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "seconds_since_pod_update",
            "Seconds since the API server last reported on the watched pod (-1 before the first report or without a watch)",
            seconds_since_pod_update.clone(),
        );
        let seconds_since_confirmed_contact = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "seconds_since_confirmed_contact",
            "Seconds since a GET of the pod last succeeded, the only confirmation of the pod status; \
             beyond MAX_STALENESS the status is unknown or stale (-1 before the first contact or without a watch)",
            seconds_since_confirmed_contact.clone(),
        );
        let check_runs = Family::<CheckRunLabels, Counter>::default();
        registry.register(
            "check_runs",
            "Runs of the exec and socket checks, by kind (exec, tcp, udp, grpc), path and result (healthy or unhealthy)",
            check_runs.clone(),
        );
        let check_duration = Family::<CheckLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "check_duration_seconds",
            "How long the last run of each exec and socket check took, by kind and path",
            check_duration.clone(),
        );
        // Each lookup's read guard must be dropped before the next lookup may need the write lock.
        let counter = |route: &str, result: &'static str| -> Counter {
            let labels = AnswerLabels {
                route: route.to_owned(),
                result,
            };
            // Edition 2024 drops the tail expression's guard before the closure returns.
            answers.get_or_create(&labels).clone()
        };
        let route = |route: &str| RouteCounters {
            healthy: counter(route, "healthy"),
            unhealthy: counter(route, "unhealthy"),
        };
        let (health, all, self_check) = (route("/health"), route("/all"), route("/self"));
        Self {
            registry,
            answers,
            health,
            all,
            self_check,
            watch_restarts,
            seconds_since_pod_update,
            seconds_since_confirmed_contact,
            check_runs,
            check_duration,
        }
    }
}

/// The values of the `cause` label of `watch_restarts`.
pub const RESTART_CAUSES: [&str; 8] = [
    "scheduled",
    "resource_expired",
    "closed",
    "timeout",
    "api_error",
    "transport",
    "invalid",
    "behind",
];

impl Metrics {
    pub fn count_restart(&self, cause: &'static str) {
        self.watch_restarts
            .get_or_create(&RestartLabels { cause })
            .inc();
    }

    /// Restarts so far for one cause.
    pub fn restarts(&self, cause: &'static str) -> u64 {
        self.watch_restarts
            .get_or_create(&RestartLabels { cause })
            .get()
    }

    /// For routes known only at run time (exec URLs).
    pub fn count_answer(&self, route: &str, healthy: bool) {
        let result = if healthy { "healthy" } else { "unhealthy" };
        self.answers
            .get_or_create(&AnswerLabels {
                route: route.to_owned(),
                result,
            })
            .inc();
    }

    /// One run of an exec or socket check: its result and how long it took.
    pub fn count_check_run(
        &self,
        kind: &'static str,
        path: &str,
        healthy: bool,
        took: std::time::Duration,
    ) {
        let result = if healthy { "healthy" } else { "unhealthy" };
        self.check_runs
            .get_or_create(&CheckRunLabels {
                kind,
                path: path.to_owned(),
                result,
            })
            .inc();
        self.check_duration
            .get_or_create(&CheckLabels {
                kind,
                path: path.to_owned(),
            })
            .set(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
