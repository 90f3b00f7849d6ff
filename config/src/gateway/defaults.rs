//! The defaults of every field, and the text form of durations.

use super::*;

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            address: default_listen_address(),
            path: default_path(),
            proxy_protocol: None,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: default_metrics_address(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            connections_per_ip: None,
            pending_handshakes_per_ip: default_pending_handshakes_per_ip(),
            connections_per_subject: None,
            messages_per_connection: None,
            max_message_bytes: default_max_message_bytes(),
            handshake_timeout: default_client_handshake_timeout(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            no_delay: default_no_delay(),
            keepalive: None,
            send_buffer_bytes: None,
            receive_buffer_bytes: None,
            listen_backlog: default_listen_backlog(),
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(60),
        }
    }
}

/// Port the gateway listens on when nothing else is said.
pub const DEFAULT_LISTEN_PORT: u16 = 8443;
/// Port of the metrics and health endpoints when nothing else is said.
pub const DEFAULT_METRICS_PORT: u16 = 9090;

pub(super) fn default_listen_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_LISTEN_PORT))
}
pub(super) fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT))
}
pub(super) fn default_path() -> String {
    "/".to_owned()
}
pub(super) fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn default_upstream_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource::Header]
}
pub(super) fn default_query_parameter() -> String {
    "access_token".to_owned()
}
pub(super) fn default_sample_one_in() -> u32 {
    1
}
pub(super) fn default_log_refusals() -> bool {
    true
}
pub(super) fn default_subject_claim() -> String {
    "sub".to_owned()
}
pub(super) fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
/// Providers rotate keys over days and publish a new key ahead of its use; five minutes
/// picks it up long before, at one small request per gateway.
pub(super) fn default_jwks_refresh_interval() -> Duration {
    Duration::from_secs(300)
}
/// At most two fetches a minute per gateway from unknown `kid`s: a fleet of a hundred
/// gateways stays far below a provider's rate limits, and a key used the moment it is
/// published is accepted within half a minute.
pub(super) fn default_jwks_min_refresh_interval() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_max_connections() -> u32 {
    10_000
}
/// Generous for browsers, which open a handful of sockets per host at most.
pub(super) fn default_pending_handshakes_per_ip() -> u32 {
    32
}
pub(super) fn default_max_message_bytes() -> u64 {
    1 << 20
}
pub(super) fn default_client_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_max_header_bytes() -> usize {
    16 * 1024
}
pub(super) fn default_no_delay() -> bool {
    true
}
/// What nginx and HAProxy were measured with, and Linux's default `net.core.somaxconn` since
/// 5.4. The standard library's 128 overflowed in the storm benchmark.
pub(super) fn default_listen_backlog() -> u32 {
    4096
}
pub(super) fn default_proxy_header_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn default_heartbeat() -> Option<HeartbeatConfig> {
    Some(HeartbeatConfig::default())
}

/// Durations as text such as `30s`, `1m30s` or `2160h`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Parses `30s`, `1h30m`, `250ms` (the Go / Kubernetes duration shapes in common use).
    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text)
            .map_err(|err| format!("invalid duration {text:?} (use e.g. 30s, 5m, 2160h): {err}"))
    }

    /// Formats a duration in hours, minutes, seconds and milliseconds (`2160h`, `1m30s`),
    /// the Go shape that both [`parse`] and Kubernetes tools read.
    pub fn format(value: Duration) -> String {
        let millis = value.as_millis();
        let parts = [
            (millis / 3_600_000, "h"),
            (millis / 60_000 % 60, "m"),
            (millis / 1000 % 60, "s"),
            (millis % 1000, "ms"),
        ];
        let text: String = parts
            .iter()
            .filter(|(amount, _)| *amount > 0)
            .map(|(amount, unit)| format!("{amount}{unit}"))
            .collect();
        if text.is_empty() {
            "0s".to_owned()
        } else {
            text
        }
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(D::Error::custom)
    }
}
