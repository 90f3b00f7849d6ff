//! Gateway metrics: prometheus-client handles, one per series, created at start.
//!
//! Every label value is a fixed enum, so each series' handle is fetched from its family once
//! and recording is a single relaxed add on it, cheap enough for the relay's hot path. The
//! histograms (see [`Histogram`]) are observed once per handshake or connection, never per
//! message.
//!
//! No series names a fleet or a pod: one gateway serves one fleet, and the scrape adds
//! `namespace`, `service` and `pod`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::telemetry::histogram::Histogram;

mod held;
mod register;

use held::Held;

/// Outcome of a client handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeOutcome {
    /// Upgraded and relaying.
    Success,
    /// Refused by policy (IP, rate, origin, token, limits, malformed request).
    Refused,
    /// The upstream could not be reached or refused the upgrade.
    UpstreamFailed,
}

impl HandshakeOutcome {
    const ALL: [Self; 3] = [Self::Success, Self::Refused, Self::UpstreamFailed];
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Refused => "refused",
            Self::UpstreamFailed => "upstream_failed",
        }
    }
}

/// A step of a successful handshake; together they make up its whole duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeStep {
    /// From accept until the connection's task first ran: the runtime's queue.
    Queued,
    /// The PROXY header, the TLS handshake and the request head.
    ClientRequest,
    /// The request's checks: origin, limits, the token.
    Admission,
    /// The upstream's address, TCP connect and TLS.
    UpstreamConnect,
    /// The upgrade request sent upstream and its answer read.
    UpstreamAnswer,
    /// The 101 written to the client.
    ClientAnswer,
}

impl HandshakeStep {
    pub(crate) const ALL: [Self; 6] = [
        Self::Queued,
        Self::ClientRequest,
        Self::Admission,
        Self::UpstreamConnect,
        Self::UpstreamAnswer,
        Self::ClientAnswer,
    ];
    fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::ClientRequest => "client_request",
            Self::Admission => "admission",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamAnswer => "upstream_answer",
            Self::ClientAnswer => "client_answer",
        }
    }
}

/// The steps of one handshake, each timed from the end of the one before. Reported only once
/// the handshake succeeded, so that every step counts the same handshakes.
#[derive(Debug)]
pub(crate) struct HandshakeSteps {
    accepted: Instant,
    last: Instant,
    took: [Duration; HandshakeStep::ALL.len()],
}

impl HandshakeSteps {
    /// Steps of the connection accepted at `accepted`.
    pub(crate) fn since(accepted: Instant) -> Self {
        Self {
            accepted,
            last: accepted,
            took: [Duration::ZERO; HandshakeStep::ALL.len()],
        }
    }

    /// From accept to the end of the last step ended.
    pub(crate) fn whole(&self) -> Duration {
        self.last.saturating_duration_since(self.accepted)
    }

    /// The upstream's part: its connect and its answer to the upgrade.
    pub(crate) fn upstream(&self) -> Duration {
        self.took[HandshakeStep::UpstreamConnect as usize]
            + self.took[HandshakeStep::UpstreamAnswer as usize]
    }

    /// `step` ended now.
    pub(crate) fn ended(&mut self, step: HandshakeStep) {
        self.ended_at(step, Instant::now());
    }

    /// `step` ended at `at`.
    pub(crate) fn ended_at(&mut self, step: HandshakeStep, at: Instant) {
        self.took[step as usize] = at.saturating_duration_since(self.last);
        self.last = at;
    }
}

/// Direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

impl Direction {
    const ALL: [Self; 2] = [Self::ClientToUpstream, Self::UpstreamToClient];
    fn label(self) -> &'static str {
        match self {
            Self::ClientToUpstream => "client_to_upstream",
            Self::UpstreamToClient => "upstream_to_client",
        }
    }
}

/// What went wrong with an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// TCP connect or TLS handshake failed.
    Connect,
    /// The connect or handshake budget ran out.
    Timeout,
    /// The upstream answered the upgrade with something other than 101.
    Rejected,
    /// The upstream broke the connection or the protocol while relaying.
    Relay,
}

impl UpstreamError {
    const ALL: [Self; 4] = [Self::Connect, Self::Timeout, Self::Rejected, Self::Relay];
    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Rejected => "rejected",
            Self::Relay => "relay",
        }
    }
}

/// What was reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadKind {
    Config,
    Certificate,
}

impl ReloadKind {
    const ALL: [Self; 2] = [Self::Config, Self::Certificate];
    fn label(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Certificate => "certificate",
        }
    }
}

/// Which side closed a relayed connection first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClosedBy {
    /// The client sent a close frame, or vanished without one.
    Client,
    /// The upstream sent a close frame, or vanished without one.
    Upstream,
    /// The gateway closed: drain, heartbeat timeout, a limit or a protocol violation.
    Gateway,
}

impl ClosedBy {
    const ALL: [Self; 3] = [Self::Client, Self::Upstream, Self::Gateway];
    /// The `by` label, and the access log's `closed_by`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Gateway => "gateway",
        }
    }
}

/// Close codes with a `code` label of their own (RFC 6455 section 7.4.1 and the IANA
/// registry); any other code, application codes 4000-4999 included, is `other`. 1005: a close
/// frame without a code; 1006: a connection cut without a close frame.
const CLOSE_CODES: [u16; 14] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
];
/// [`CLOSE_CODES`] and `other`.
const CLOSE_CODE_LABELS: usize = CLOSE_CODES.len() + 1;

/// The `code` label's index: a known code's place in [`CLOSE_CODES`], or the last for `other`
/// (and for a close whose code could not be read).
fn close_code_index(code: Option<u16>) -> usize {
    code.and_then(|code| CLOSE_CODES.iter().position(|&known| known == code))
        .unwrap_or(CLOSE_CODES.len())
}

/// Bounds of `wsfleet_gateway_handshake_duration_seconds`, in microseconds: 1 ms to 10 s.
/// TLS and an upstream in the cluster take milliseconds; 1 s, the default alert threshold, is
/// a bound, so whether the p99 is above it does not depend on interpolation.
const HANDSHAKE_BOUNDS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
/// Bounds of `wsfleet_gateway_upstream_connect_duration_seconds`, in microseconds: 0.5 ms
/// (a connection within the node) to 10 s (the default upstream handshake timeout).
const UPSTREAM_CONNECT_BOUNDS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
/// Bounds of `wsfleet_gateway_handshake_step_duration_seconds`, in microseconds: 50 µs (a
/// step that did not wait) to 10 s.
const HANDSHAKE_STEP_BOUNDS: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Bounds of `wsfleet_gateway_connection_duration_seconds`, in microseconds: 100 ms (a
/// connection that fails at once) to a day.
const CONNECTION_BOUNDS: [u64; 13] = [
    100_000,
    1_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    1_800_000_000,
    3_600_000_000,
    7_200_000_000,
    14_400_000_000,
    43_200_000_000,
    86_400_000_000,
];

/// Every counter, gauge and histogram the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    active_connections: Gauge,
    handshakes: [Counter; 3],
    refusals: [Counter; crate::wire::refusal::Refusal::ALL.len()],
    messages: [Counter; 2],
    bytes: [Counter; 2],
    upstream_errors: [Counter; 4],
    /// Indexed by kind, then success (0) or failure (1).
    reloads: [[Counter; 2]; 2],
    handshake_duration: Histogram,
    /// Indexed by [`HandshakeStep`].
    handshake_steps: [Histogram; HandshakeStep::ALL.len()],
    upstream_connect_duration: Histogram,
    connection_duration: Histogram,
    /// Indexed by [`ClosedBy`], then by [`close_code_index`].
    closes: [[Counter; CLOSE_CODE_LABELS]; 3],
    access_log_dropped: Counter,
    /// JWK set fetches: success (0) and error (1).
    jwks_fetches: [Counter; 2],
    /// The gauges that exist only while there is something to report.
    held: Arc<Held>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::registered()
    }
}

impl Metrics {
    /// The OpenMetrics text exposition of every series.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn connection_opened(&self) {
        self.active_connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.active_connections.dec();
    }

    pub(crate) fn handshake(&self, outcome: HandshakeOutcome) {
        self.handshakes[outcome as usize].inc();
    }

    pub(crate) fn refusal(&self, refusal: crate::wire::refusal::Refusal) {
        self.refusals[refusal as usize].inc();
    }

    pub(crate) fn relayed(&self, direction: Direction, messages: u64, bytes: u64) {
        if messages > 0 {
            self.messages[direction as usize].inc_by(messages);
        }
        if bytes > 0 {
            self.bytes[direction as usize].inc_by(bytes);
        }
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].inc();
    }

    pub(crate) fn reload(&self, kind: ReloadKind, success: bool) {
        self.reloads[kind as usize][usize::from(!success)].inc();
    }

    /// A successful handshake: from accept until the 101 was written to the client.
    pub(crate) fn handshake_took(&self, took: Duration) {
        self.handshake_duration.observe(took);
    }

    /// The steps of a successful handshake.
    pub(crate) fn handshake_steps_took(&self, steps: &HandshakeSteps) {
        for (histogram, took) in self.handshake_steps.iter().zip(steps.took) {
            histogram.observe(took);
        }
    }

    /// A successful upstream connect and upgrade.
    pub(crate) fn upstream_connect_took(&self, took: Duration) {
        self.upstream_connect_duration.observe(took);
    }

    /// A relayed connection ended after `lifetime`, from accept to close.
    pub(crate) fn connection_lasted(&self, lifetime: Duration) {
        self.connection_duration.observe(lifetime);
    }

    /// A relayed connection was closed first by `by` with `code`; `None`: a code that could
    /// not be read, counted as `other`.
    pub(crate) fn closed(&self, code: Option<u16>, by: ClosedBy) {
        self.closes[by as usize][close_code_index(code)].inc();
    }

    /// An access log line was dropped: the writer had fallen behind.
    pub(crate) fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// The certificate now served expires at `not_after` (Unix seconds); `None` removes the
    /// series.
    pub(crate) fn certificate_served(&self, not_after: Option<i64>) {
        self.held.certificate_served(not_after);
    }

    /// A JWK set with `keys` usable keys was fetched at `at`.
    pub(crate) fn jwks_fetched(&self, keys: usize, at: SystemTime) {
        self.jwks_fetches[0].inc();
        self.held.jwks_fetched(keys, unix_millis(at));
    }

    /// A JWK set fetch failed; the keys held stay.
    pub(crate) fn jwks_fetch_failed(&self) {
        self.jwks_fetches[1].inc();
    }

    /// The policy in use takes no keys from an identity provider (any more): the key gauges go.
    pub(crate) fn jwks_not_in_use(&self) {
        self.held.jwks_not_in_use();
    }
}

fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::refusal::Refusal;

    #[test]
    fn renders_every_family_with_labels() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.refusal(Refusal::RateLimited);
        metrics.relayed(Direction::UpstreamToClient, 3, 120);
        metrics.reload(ReloadKind::Certificate, false);
        let text = metrics.render();
        assert!(
            text.contains("wsfleet_gateway_active_connections 1\n"),
            "{text}"
        );
        assert!(text.contains("wsfleet_gateway_refusals_total{reason=\"rate_limited\"} 1\n"));
        assert!(
            text.contains("wsfleet_gateway_messages_total{direction=\"upstream_to_client\"} 3\n")
        );
        assert!(text.contains("wsfleet_gateway_bytes_total{direction=\"client_to_upstream\"} 0\n"));
        assert!(text.contains(
            "wsfleet_gateway_reloads_total{kind=\"certificate\",outcome=\"failure\"} 1\n"
        ));
    }

    #[test]
    fn renders_the_histograms_in_seconds() {
        let metrics = Metrics::default();
        metrics.handshake_took(Duration::from_millis(3));
        metrics.upstream_connect_took(Duration::from_micros(700));
        metrics.connection_lasted(Duration::from_secs(90));
        let text = metrics.render();
        for (name, bucket) in [
            ("wsfleet_gateway_handshake_duration_seconds", "0.005"),
            ("wsfleet_gateway_upstream_connect_duration_seconds", "0.001"),
            ("wsfleet_gateway_connection_duration_seconds", "300.0"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{name}_bucket{{le=\"{bucket}\"}} 1\n")),
                "{text}"
            );
            assert!(text.contains(&format!("{name}_count 1\n")), "{text}");
        }
        assert!(
            text.contains("wsfleet_gateway_handshake_duration_seconds_bucket{le=\"0.0025\"} 0\n")
        );
        assert!(text.contains("wsfleet_gateway_connection_duration_seconds_sum 90.0\n"));
    }

    #[test]
    fn closes_are_counted_by_code_and_side_with_unknown_codes_as_other() {
        let metrics = Metrics::default();
        metrics.closed(Some(1000), ClosedBy::Client);
        metrics.closed(Some(4001), ClosedBy::Upstream);
        metrics.closed(Some(999), ClosedBy::Upstream);
        metrics.closed(None, ClosedBy::Upstream);
        metrics.closed(Some(1009), ClosedBy::Gateway);
        let text = metrics.render();
        assert!(text.contains("wsfleet_gateway_closes_total{code=\"1000\",by=\"client\"} 1\n"));
        assert!(text.contains("wsfleet_gateway_closes_total{code=\"other\",by=\"upstream\"} 3\n"));
        assert!(text.contains("wsfleet_gateway_closes_total{code=\"1009\",by=\"gateway\"} 1\n"));
        assert!(text.contains("wsfleet_gateway_closes_total{code=\"1006\",by=\"client\"} 0\n"));
        // Every code and side from the start, so that rates exist before the first close.
        assert_eq!(
            text.matches("wsfleet_gateway_closes_total{").count(),
            CLOSE_CODE_LABELS * ClosedBy::ALL.len()
        );
    }

    #[test]
    fn the_certificate_gauge_exists_only_while_a_certificate_is_served() {
        let metrics = Metrics::default();
        assert!(!metrics.render().contains("certificate_not_after"));
        metrics.certificate_served(Some(1_893_542_400));
        assert!(
            metrics
                .render()
                .contains("wsfleet_gateway_certificate_not_after_seconds 1893542400\n")
        );
        metrics.certificate_served(None);
        assert!(!metrics.render().contains("certificate_not_after"));
    }

    #[test]
    fn jwks_key_gauges_exist_only_while_keys_are_held() {
        let metrics = Metrics::default();
        let text = metrics.render();
        assert!(text.contains("wsfleet_gateway_jwks_fetches_total{outcome=\"error\"} 0\n"));
        assert!(!text.contains("jwks_key_age"), "{text}");
        metrics.jwks_fetched(3, SystemTime::now());
        metrics.jwks_fetch_failed();
        let text = metrics.render();
        assert!(
            text.contains("wsfleet_gateway_jwks_key_age_seconds "),
            "{text}"
        );
        assert!(text.contains("wsfleet_gateway_jwks_keys 3\n"));
        assert!(text.contains("wsfleet_gateway_jwks_fetches_total{outcome=\"success\"} 1\n"));
        assert!(text.contains("wsfleet_gateway_jwks_fetches_total{outcome=\"error\"} 1\n"));
        metrics.jwks_not_in_use();
        assert!(!metrics.render().contains("jwks_key_age"));
    }

    #[test]
    fn the_exposition_is_openmetrics_with_one_family_per_name() {
        let text = Metrics::default().render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE wsfleet_gateway_handshakes counter\n"),
            "{text}"
        );
        let families = text.matches("# TYPE ").count();
        // 14 families, without the certificate and key gauges that nothing set yet.
        assert_eq!(families, 14, "{text}");
        assert!(
            text.contains(
                "wsfleet_gateway_handshake_step_duration_seconds_count{step=\"upstream_answer\"} 0\n"
            ),
            "every step is exposed before its first handshake: {text}"
        );
    }
}
