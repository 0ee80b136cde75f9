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

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub answers: Family<AnswerLabels, Counter>,
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
        Self {
            registry,
            answers,
            watch_restarts,
            seconds_since_pod_update,
        }
    }
}

impl Metrics {
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
