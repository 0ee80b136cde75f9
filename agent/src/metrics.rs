//! Prometheus metrics of the agent: answers by route and result, watch restarts, age of the pod status.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    pub watch_restarts: Counter,
    pub seconds_since_pod_update: Gauge<f64, AtomicU64>,
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
        let watch_restarts = Counter::default();
        registry.register(
            "watch_restarts",
            "Times the pod watch failed and was restarted",
            watch_restarts.clone(),
        );
        let seconds_since_pod_update = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "seconds_since_pod_update",
            "Seconds since the API server last reported on the watched pod (-1 before the first report or without a watch)",
            seconds_since_pod_update.clone(),
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
        }
    }
}

impl Metrics {
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

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
