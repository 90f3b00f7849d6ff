//! Building [`Metrics`]: one family per metric in one registry, and a handle per label value
//! taken from its family once, so that recording never looks a label set up.

use std::hash::Hash;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wsfleet_config::metric_names as names;

use super::*;
use crate::wire::refusal::Refusal;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    code: String,
    by: &'static str,
}

/// The `outcome` of a reload, by its index in [`Metrics::reloads`].
const RELOAD_OUTCOMES: [&str; 2] = ["success", "failure"];
/// The `outcome` of a JWK set fetch, by its index in [`Metrics::jwks_fetches`].
const FETCH_OUTCOMES: [&str; 2] = ["success", "error"];

impl Metrics {
    pub(super) fn registered() -> Self {
        let mut registry = Registry::default();
        let active_connections = Gauge::default();
        registry.register(
            names::ACTIVE_CONNECTIONS,
            "Client connections being relayed",
            active_connections.clone(),
        );
        let handshakes = counters(
            &mut registry,
            names::HANDSHAKES_TOTAL,
            "Client upgrade requests by outcome",
        );
        let refusals = counters(
            &mut registry,
            names::REFUSALS_TOTAL,
            "Refused upgrade requests by reason",
        );
        let messages = counters(
            &mut registry,
            names::MESSAGES_TOTAL,
            "WebSocket messages relayed",
        );
        let bytes = counters(
            &mut registry,
            names::BYTES_TOTAL,
            "WebSocket bytes (frames with headers) relayed",
        );
        let upstream_errors = counters(
            &mut registry,
            names::UPSTREAM_ERRORS_TOTAL,
            "Upstream failures by kind",
        );
        let reloads = counters(
            &mut registry,
            names::RELOADS_TOTAL,
            "Reloads of the config and the certificate by outcome",
        );
        let closes = counters(
            &mut registry,
            names::CLOSES_TOTAL,
            "Relayed connections by close code and the side that closed first",
        );
        let access_log_dropped = Counter::default();
        registry.register(
            counter_name(names::ACCESS_LOG_DROPPED_TOTAL),
            "Access log lines dropped because stdout was not keeping up",
            access_log_dropped.clone(),
        );
        let jwks_fetches = counters(
            &mut registry,
            names::JWKS_FETCHES_TOTAL,
            "Fetches of the identity provider's JWK set by outcome",
        );
        let histogram = |registry: &mut Registry, name: &str, help: &str, bounds| {
            let histogram = Histogram::new(bounds);
            registry.register(name, help, histogram.clone());
            histogram
        };
        let handshake_duration = histogram(
            &mut registry,
            names::HANDSHAKE_DURATION_SECONDS,
            "Successful client handshakes, from accept (TLS, auth, upstream) to the 101 written",
            &HANDSHAKE_BOUNDS,
        );
        let handshake_steps = Family::<StepLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(&HANDSHAKE_STEP_BOUNDS)) as fn() -> Histogram,
        );
        registry.register(
            names::HANDSHAKE_STEP_DURATION_SECONDS,
            "Steps of successful handshakes: queued, client_request (PROXY header, TLS, request \
             head), admission, upstream_connect, upstream_answer, client_answer (the 101)",
            handshake_steps.clone(),
        );
        let upstream_connect_duration = histogram(
            &mut registry,
            names::UPSTREAM_CONNECT_DURATION_SECONDS,
            "Successful upstream connects: lookup, TCP, TLS and the upgrade exchange",
            &UPSTREAM_CONNECT_BOUNDS,
        );
        let connection_duration = histogram(
            &mut registry,
            names::CONNECTION_DURATION_SECONDS,
            "Lifetime of relayed connections, from accept to close",
            &CONNECTION_BOUNDS,
        );
        let held = Arc::new(Held::default());
        registry.register_collector(Box::new(held.clone()));
        Self {
            registry,
            active_connections,
            handshakes: handshakes.by(HandshakeOutcome::ALL.map(|outcome| OutcomeLabel {
                outcome: outcome.label(),
            })),
            refusals: refusals.by(Refusal::ALL.map(|refusal| ReasonLabel {
                reason: refusal.reason(),
            })),
            messages: messages.by(Direction::ALL.map(|direction| DirectionLabel {
                direction: direction.label(),
            })),
            bytes: bytes.by(Direction::ALL.map(|direction| DirectionLabel {
                direction: direction.label(),
            })),
            upstream_errors: upstream_errors
                .by(UpstreamError::ALL.map(|kind| KindLabel { kind: kind.label() })),
            reloads: ReloadKind::ALL.map(|kind| {
                reloads.by(RELOAD_OUTCOMES.map(|outcome| ReloadLabels {
                    kind: kind.label(),
                    outcome,
                }))
            }),
            handshake_duration,
            handshake_steps: HandshakeStep::ALL.map(|step| {
                handshake_steps
                    .get_or_create(&StepLabel { step: step.label() })
                    .clone()
            }),
            upstream_connect_duration,
            connection_duration,
            closes: ClosedBy::ALL.map(|by| {
                closes.by(close_code_labels().map(|code| CloseLabels {
                    code,
                    by: by.label(),
                }))
            }),
            access_log_dropped,
            jwks_fetches: jwks_fetches.by(FETCH_OUTCOMES.map(|outcome| OutcomeLabel { outcome })),
            held,
        }
    }
}

/// A registered counter family, from which each series' handle is taken once.
struct Counters<S: LabelSet>(Family<S, Counter>);

/// What a family's label set needs to be registered.
trait LabelSet: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static {}
impl<S: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> LabelSet
    for S
{
}

impl<S: LabelSet> Counters<S> {
    /// The handles of the series labelled `labels`, in that order. Each series is exposed
    /// from now on, at zero until counted, so that rates exist before the first event.
    fn by<const N: usize>(&self, labels: [S; N]) -> [Counter; N] {
        labels.map(|label| self.0.get_or_create(&label).clone())
    }
}

/// Registers the counter family `total_name`.
fn counters<S: LabelSet>(registry: &mut Registry, total_name: &str, help: &str) -> Counters<S> {
    let family = Family::default();
    registry.register(counter_name(total_name), help, family.clone());
    Counters(family)
}

/// The name a counter is registered under: the encoder appends `_total` to its series.
fn counter_name(total_name: &str) -> &str {
    total_name
        .strip_suffix("_total")
        .expect("counter names end in _total")
}

/// The `code` label's values, in [`close_code_index`] order.
fn close_code_labels() -> [String; CLOSE_CODE_LABELS] {
    std::array::from_fn(|index| match CLOSE_CODES.get(index) {
        Some(code) => code.to_string(),
        None => "other".to_owned(),
    })
}
