//! Gateway metrics: plain atomics, rendered in the Prometheus text format on request.
//!
//! Every label value is a fixed enum, so each series is one counter and recording is a single
//! relaxed add, cheap enough for the relay's hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Outcome of a client handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOutcome {
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

/// Direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
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
pub enum UpstreamError {
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
pub enum ReloadKind {
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

/// Every counter and gauge the gateway exports.
#[derive(Debug, Default)]
pub struct Metrics {
    active_connections: AtomicI64,
    handshakes: [AtomicU64; 3],
    refusals: [AtomicU64; crate::refusal::Refusal::ALL.len()],
    messages: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    upstream_errors: [AtomicU64; 4],
    /// Indexed by kind, then success (0) or failure (1).
    reloads: [[AtomicU64; 2]; 2],
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.active_connections.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.active_connections.fetch_sub(1, Relaxed);
    }

    pub fn active_connections(&self) -> i64 {
        self.active_connections.load(Relaxed)
    }

    pub fn handshake(&self, outcome: HandshakeOutcome) {
        self.handshakes[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn refusal(&self, refusal: crate::refusal::Refusal) {
        self.refusals[refusal as usize].fetch_add(1, Relaxed);
    }

    pub fn relayed(&self, direction: Direction, messages: u64, bytes: u64) {
        if messages > 0 {
            self.messages[direction as usize].fetch_add(messages, Relaxed);
        }
        if bytes > 0 {
            self.bytes[direction as usize].fetch_add(bytes, Relaxed);
        }
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn reload(&self, kind: ReloadKind, success: bool) {
        self.reloads[kind as usize][usize::from(!success)].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "wsfleet_gateway_active_connections",
            "gauge",
            "Client connections being relayed.",
        );
        series(
            &mut out,
            "wsfleet_gateway_active_connections",
            "",
            self.active_connections.load(Relaxed),
        );
        family(
            &mut out,
            "wsfleet_gateway_handshakes_total",
            "counter",
            "Client upgrade requests by outcome.",
        );
        for outcome in HandshakeOutcome::ALL {
            let value = self.handshakes[outcome as usize].load(Relaxed);
            series(
                &mut out,
                "wsfleet_gateway_handshakes_total",
                &format!("outcome=\"{}\"", outcome.label()),
                value,
            );
        }
        family(
            &mut out,
            "wsfleet_gateway_refusals_total",
            "counter",
            "Refused upgrade requests by reason.",
        );
        for refusal in crate::refusal::Refusal::ALL {
            let value = self.refusals[refusal as usize].load(Relaxed);
            series(
                &mut out,
                "wsfleet_gateway_refusals_total",
                &format!("reason=\"{}\"", refusal.reason()),
                value,
            );
        }
        for (name, help, values) in [
            (
                "wsfleet_gateway_messages_total",
                "WebSocket messages relayed.",
                &self.messages,
            ),
            (
                "wsfleet_gateway_bytes_total",
                "WebSocket bytes (frames with headers) relayed.",
                &self.bytes,
            ),
        ] {
            family(&mut out, name, "counter", help);
            for direction in Direction::ALL {
                let value = values[direction as usize].load(Relaxed);
                series(
                    &mut out,
                    name,
                    &format!("direction=\"{}\"", direction.label()),
                    value,
                );
            }
        }
        family(
            &mut out,
            "wsfleet_gateway_upstream_errors_total",
            "counter",
            "Upstream failures by kind.",
        );
        for kind in UpstreamError::ALL {
            let value = self.upstream_errors[kind as usize].load(Relaxed);
            series(
                &mut out,
                "wsfleet_gateway_upstream_errors_total",
                &format!("kind=\"{}\"", kind.label()),
                value,
            );
        }
        family(
            &mut out,
            "wsfleet_gateway_reloads_total",
            "counter",
            "Reloads of the config and the certificate by outcome.",
        );
        for kind in ReloadKind::ALL {
            for (index, outcome) in ["success", "failure"].into_iter().enumerate() {
                let value = self.reloads[kind as usize][index].load(Relaxed);
                series(
                    &mut out,
                    "wsfleet_gateway_reloads_total",
                    &format!("kind=\"{}\",outcome=\"{outcome}\"", kind.label()),
                    value,
                );
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn series(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Refusal;

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
        assert!(text.contains("# TYPE wsfleet_gateway_handshakes_total counter\n"));
    }
}
