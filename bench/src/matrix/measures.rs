//! What each scenario measures per run, and the metrics of the report table.

use super::*;

/// The metrics of one stream shape.
pub(super) struct StreamMetrics {
    pub(super) round_trips: Metric,
    pub(super) p50: Metric,
    pub(super) p99: Metric,
    pub(super) p999: Metric,
    pub(super) cpu_paced: Metric,
    pub(super) cpu_closed: Metric,
}

impl StreamMetrics {
    pub(super) fn of(shape: &StreamShape) -> Self {
        let label = shape.label();
        let rate = shape.paced_rate;
        Self {
            round_trips: Metric::new(
                format!("{label}: round trips/s, closed loop"),
                Goal::AtLeastBoth(1.0),
            ),
            p50: Metric::new(format!("{label}: p50 µs at {rate}/s"), Goal::None),
            p99: Metric::new(
                format!("{label}: p99 µs at {rate}/s"),
                Goal::AtMostBoth(1.0),
            ),
            p999: Metric::new(format!("{label}: p999 µs at {rate}/s"), Goal::None),
            cpu_paced: Metric::new(
                format!("{label}: proxy CPU µs/msg at {rate}/s"),
                Goal::AtMostNginx(0.8),
            ),
            cpu_closed: Metric::new(
                format!("{label}: proxy CPU µs/msg, closed loop"),
                Goal::None,
            ),
        }
    }
}

/// The metrics of the idle and handshake scenarios.
pub(super) struct ConnectionMetrics {
    pub(super) idle_bytes: Metric,
    pub(super) handshakes: Metric,
    pub(super) cpu_per_handshake: Metric,
}

impl ConnectionMetrics {
    pub(super) fn of(plan: &Plan) -> Self {
        Self {
            idle_bytes: Metric::new(
                format!("idle: proxy RSS bytes/conn at {}", plan.idle_connections),
                Goal::AtMostHaproxy(1.0),
            ),
            handshakes: Metric::new(
                format!(
                    "handshakes/s, {} concurrent (JWT checked by gateway)",
                    plan.handshake_concurrency
                ),
                Goal::None,
            ),
            cpu_per_handshake: Metric::new("proxy CPU µs/handshake".to_owned(), Goal::None),
        }
    }
}

/// The metrics of one storm.
pub(super) struct StormMetrics {
    pub(super) per_sec: Metric,
    pub(super) per_cpu_sec: Metric,
    pub(super) p50: Metric,
    pub(super) p99: Metric,
    pub(super) p999: Metric,
    pub(super) cpu: Metric,
    pub(super) overflows: Metric,
}

impl StormMetrics {
    pub(super) fn of(shape: &StormShape) -> Self {
        let label = shape.label();
        Self {
            per_sec: Metric::new(format!("{label}: upgrades/s"), Goal::None),
            per_cpu_sec: Metric::new(
                format!("{label}: upgrades per proxy CPU-second"),
                Goal::AtLeastNginx(1.2),
            ),
            p50: Metric::new(format!("{label}: p50 ms to upgrade"), Goal::None),
            p99: Metric::new(
                format!("{label}: p99 ms to upgrade"),
                Goal::AtMostNginx(1.0),
            ),
            p999: Metric::new(format!("{label}: p999 ms to upgrade"), Goal::None),
            cpu: Metric::new(format!("{label}: proxy CPU µs/upgrade"), Goal::None),
            overflows: Metric::new(format!("{label}: listen queue overflows"), Goal::None),
        }
    }

    pub(super) fn all(self) -> [Metric; 7] {
        [
            self.per_sec,
            self.per_cpu_sec,
            self.p50,
            self.p99,
            self.p999,
            self.cpu,
            self.overflows,
        ]
    }
}

/// The metrics of the TLS scenario for one key type.
pub(super) struct TlsMetrics {
    pub(super) idle_bytes: Metric,
    pub(super) full_per_sec: Metric,
    pub(super) full_per_cpu_sec: Metric,
    pub(super) full_cpu: Metric,
    pub(super) resumed_per_sec: Metric,
    pub(super) resumed_cpu: Metric,
    pub(super) resumed_share: Metric,
    pub(super) cpu_per_message: Metric,
    pub(super) p99: Metric,
}

impl TlsMetrics {
    pub(super) fn of(plan: &Plan, key: KeyKind) -> Self {
        let label = format!("wss {}", key.title());
        let loops = plan.handshake_concurrency;
        let shape = &plan.tls_shape;
        let stream = format!("{}: {}", label, shape.label());
        let rate = shape.paced_rate;
        Self {
            idle_bytes: Metric::new(
                format!("{label}: idle RSS bytes/conn at {}", plan.idle_connections),
                Goal::AtMostHaproxy(0.5),
            ),
            full_per_sec: Metric::new(
                format!("{label}: full handshakes/s, {loops} concurrent"),
                Goal::None,
            ),
            full_per_cpu_sec: Metric::new(
                format!("{label}: full handshakes per proxy CPU-second"),
                Goal::AtLeastNginx(1.0),
            ),
            full_cpu: Metric::new(format!("{label}: proxy CPU µs/full handshake"), Goal::None),
            resumed_per_sec: Metric::new(
                format!("{label}: resumed handshakes/s, {loops} concurrent"),
                Goal::None,
            ),
            resumed_cpu: Metric::new(
                format!("{label}: proxy CPU µs/resumed handshake"),
                Goal::None,
            ),
            resumed_share: Metric::new(
                format!("{label}: share of offered sessions resumed"),
                Goal::None,
            ),
            cpu_per_message: Metric::new(
                format!("{stream}: proxy CPU µs/msg at {rate}/s"),
                Goal::AtMostNginx(1.0),
            ),
            p99: Metric::new(format!("{stream}: p99 µs at {rate}/s"), Goal::None),
        }
    }

    pub(super) fn all(self) -> [Metric; 9] {
        [
            self.idle_bytes,
            self.full_per_sec,
            self.full_per_cpu_sec,
            self.full_cpu,
            self.resumed_per_sec,
            self.resumed_cpu,
            self.resumed_share,
            self.cpu_per_message,
            self.p99,
        ]
    }
}

/// Every scenario's metrics, in the order the report lists them.
pub fn metrics(plan: &Plan) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for shape in plan.stream_shapes() {
        let m = StreamMetrics::of(shape);
        metrics.extend([
            m.round_trips,
            m.p50,
            m.p99,
            m.p999,
            m.cpu_paced,
            m.cpu_closed,
        ]);
    }
    let m = ConnectionMetrics::of(plan);
    if plan.runs(ScenarioKind::Idle) {
        metrics.push(m.idle_bytes);
    }
    if plan.runs(ScenarioKind::Handshakes) {
        metrics.extend([m.handshakes, m.cpu_per_handshake]);
    }
    for shape in plan.storm_shapes() {
        metrics.extend(StormMetrics::of(shape).all());
    }
    if plan.runs(ScenarioKind::Tls) {
        for &key in &plan.tls_keys {
            metrics.extend(TlsMetrics::of(plan, key).all());
        }
    }
    metrics
}
