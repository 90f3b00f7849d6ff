//! Operator metrics in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The operator's counters, shared by the reconciler, the lease and the HTTP server.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        registry.register(
            "wsfleet_operator_reconciles",
            "Reconciles run",
            reconciles.clone(),
        );
        let errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "wsfleet_operator_reconcile_errors",
            "Reconciles that failed or found a problem, by reason",
            errors.clone(),
        );
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "wsfleet_operator_reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "wsfleet_operator_leader",
            "1 while this process holds the lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_match_the_contract() {
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(20));
        metrics.error("SecretNotFound");
        metrics.set_leader(true);
        let text = metrics.encode();
        assert!(
            text.contains("wsfleet_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("wsfleet_operator_reconcile_errors_total{reason=\"SecretNotFound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wsfleet_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("wsfleet_operator_leader 1"), "{text}");
    }
}
