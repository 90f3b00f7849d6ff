//! The Prometheus text exposition of every series in [`Metrics`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use wsfleet_config::metric_names as names;

use super::*;

impl Metrics {
    /// The Prometheus text exposition of every series.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        family(
            &mut out,
            names::ACTIVE_CONNECTIONS,
            "gauge",
            "Client connections being relayed.",
        );
        series(
            &mut out,
            names::ACTIVE_CONNECTIONS,
            "",
            self.active_connections.load(Relaxed),
        );
        family(
            &mut out,
            names::HANDSHAKES_TOTAL,
            "counter",
            "Client upgrade requests by outcome.",
        );
        for outcome in HandshakeOutcome::ALL {
            let value = self.handshakes[outcome as usize].load(Relaxed);
            series(
                &mut out,
                names::HANDSHAKES_TOTAL,
                &format!("outcome=\"{}\"", outcome.label()),
                value,
            );
        }
        family(
            &mut out,
            names::REFUSALS_TOTAL,
            "counter",
            "Refused upgrade requests by reason.",
        );
        for refusal in crate::wire::refusal::Refusal::ALL {
            let value = self.refusals[refusal as usize].load(Relaxed);
            series(
                &mut out,
                names::REFUSALS_TOTAL,
                &format!("reason=\"{}\"", refusal.reason()),
                value,
            );
        }
        for (name, help, values) in [
            (
                names::MESSAGES_TOTAL,
                "WebSocket messages relayed.",
                &self.messages,
            ),
            (
                names::BYTES_TOTAL,
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
            names::UPSTREAM_ERRORS_TOTAL,
            "counter",
            "Upstream failures by kind.",
        );
        for kind in UpstreamError::ALL {
            let value = self.upstream_errors[kind as usize].load(Relaxed);
            series(
                &mut out,
                names::UPSTREAM_ERRORS_TOTAL,
                &format!("kind=\"{}\"", kind.label()),
                value,
            );
        }
        family(
            &mut out,
            names::RELOADS_TOTAL,
            "counter",
            "Reloads of the config and the certificate by outcome.",
        );
        for kind in ReloadKind::ALL {
            for (index, outcome) in ["success", "failure"].into_iter().enumerate() {
                let value = self.reloads[kind as usize][index].load(Relaxed);
                series(
                    &mut out,
                    names::RELOADS_TOTAL,
                    &format!("kind=\"{}\",outcome=\"{outcome}\"", kind.label()),
                    value,
                );
            }
        }
        for (name, help, histogram) in [
            (
                names::HANDSHAKE_DURATION_SECONDS,
                "Successful client handshakes, from accept (TLS, auth, upstream) to the 101 written.",
                &self.handshake_duration,
            ),
            (
                names::UPSTREAM_CONNECT_DURATION_SECONDS,
                "Successful upstream connects: lookup, TCP, TLS and the upgrade exchange.",
                &self.upstream_connect_duration,
            ),
            (
                names::CONNECTION_DURATION_SECONDS,
                "Lifetime of relayed connections, from accept to close.",
                &self.connection_duration,
            ),
        ] {
            family(&mut out, name, "histogram", help);
            histogram.render(&mut out, name);
        }
        family(
            &mut out,
            names::CLOSES_TOTAL,
            "counter",
            "Relayed connections by close code and the side that closed first.",
        );
        for by in ClosedBy::ALL {
            let codes = CLOSE_CODES.iter().map(|code| code.to_string());
            for (index, code) in codes.chain(["other".to_owned()]).enumerate() {
                let value = self.closes[by as usize][index].load(Relaxed);
                series(
                    &mut out,
                    names::CLOSES_TOTAL,
                    &format!("code=\"{code}\",by=\"{}\"", by.label()),
                    value,
                );
            }
        }
        family(
            &mut out,
            names::ACCESS_LOG_DROPPED_TOTAL,
            "counter",
            "Access log lines dropped because stdout was not keeping up.",
        );
        series(
            &mut out,
            names::ACCESS_LOG_DROPPED_TOTAL,
            "",
            self.access_log_dropped.load(Relaxed),
        );
        let not_after = self.certificate_not_after.load(Relaxed);
        if not_after != NO_CERTIFICATE {
            family(
                &mut out,
                names::CERTIFICATE_NOT_AFTER_SECONDS,
                "gauge",
                "notAfter of the certificate served to new clients, in Unix seconds.",
            );
            series(
                &mut out,
                names::CERTIFICATE_NOT_AFTER_SECONDS,
                "",
                not_after,
            );
        }
        self.render_jwks(&mut out, SystemTime::now());
        out
    }

    pub(super) fn render_jwks(&self, out: &mut String, now: SystemTime) {
        family(
            out,
            names::JWKS_FETCHES_TOTAL,
            "counter",
            "Fetches of the identity provider's JWK set by outcome.",
        );
        for (index, outcome) in ["success", "error"].into_iter().enumerate() {
            series(
                out,
                names::JWKS_FETCHES_TOTAL,
                &format!("outcome=\"{outcome}\""),
                self.jwks_fetches[index].load(Relaxed),
            );
        }
        let fetched_at = self.jwks_fetched_at.load(Relaxed);
        if fetched_at == NO_KEYS {
            return;
        }
        family(
            out,
            names::JWKS_KEY_AGE_SECONDS,
            "gauge",
            "Seconds since the JWK set in use was fetched; grows while the provider fails.",
        );
        let age_millis = (unix_millis(now) - fetched_at).max(0);
        series(
            out,
            names::JWKS_KEY_AGE_SECONDS,
            "",
            age_millis as f64 / 1000.0,
        );
        family(
            out,
            names::JWKS_KEYS,
            "gauge",
            "Usable keys in the JWK set in use.",
        );
        series(out, names::JWKS_KEYS, "", self.jwks_keys.load(Relaxed));
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
