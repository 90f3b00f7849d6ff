//! The schema's defaults and the CEL rules that several fields share.

use super::*;

pub(super) fn positive_duration_rule() -> String {
    format!("self.matches('{DURATION_RE}') && duration(self) > duration('0s')")
}

pub(super) fn renew_before_rule() -> String {
    // Unparsable durations are reported by their own field rules; only compare valid ones.
    format!(
        "!self.duration.matches('{DURATION_RE}') || !self.renewBefore.matches('{DURATION_RE}') || duration(self.renewBefore) < duration(self.duration)"
    )
}

/// TCP keepalive times: the kernel takes whole seconds up to 32767.
pub(super) fn whole_seconds_rule() -> String {
    format!(
        "self.matches('{DURATION_RE}') && duration(self) >= duration('1s') && duration(self) <= duration('32767s') && duration(self).getMilliseconds() % 1000 == 0"
    )
}

pub(super) fn non_negative_duration_rule() -> String {
    format!("self.matches('{DURATION_RE}')")
}

pub(super) fn cidr_list_rule() -> &'static str {
    "self.all(c, isCIDR(c))"
}

pub(super) fn default_replicas() -> i32 {
    2
}
pub(super) fn default_listen_port() -> i32 {
    8080
}
pub(super) fn default_path() -> String {
    "/".to_owned()
}
pub(super) fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}
pub(super) fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}
pub(super) fn default_no_delay() -> bool {
    true
}
pub(super) fn default_proxy_header_timeout() -> String {
    "5s".to_owned()
}
pub(super) fn default_cert_duration() -> String {
    "2160h".to_owned()
}
pub(super) fn default_renew_before() -> String {
    "360h".to_owned()
}
pub(super) fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource::Header]
}
pub(super) fn default_query_parameter() -> String {
    "access_token".to_owned()
}
pub(super) fn default_sample_one_in() -> i32 {
    1
}
pub(super) fn default_log_refusals() -> bool {
    true
}
pub(super) fn default_subject_claim() -> String {
    "sub".to_owned()
}
pub(super) fn default_leeway() -> String {
    "30s".to_owned()
}
pub(super) fn default_jwks_refresh_interval() -> String {
    "5m".into()
}
pub(super) fn default_jwks_min_refresh_interval() -> String {
    "30s".into()
}
pub(super) fn default_max_connections() -> i32 {
    10_000
}
pub(super) fn default_pending_handshakes_per_ip() -> i32 {
    32
}
pub(super) fn default_max_message_bytes() -> i64 {
    1 << 20
}
pub(super) fn default_heartbeat_interval() -> String {
    "30s".to_owned()
}
pub(super) fn default_heartbeat_timeout() -> String {
    "10s".to_owned()
}
pub(super) fn default_affinity_timeout() -> i32 {
    10800
}
pub(super) fn default_min_replicas() -> i32 {
    2
}
pub(super) fn default_scale_down_stabilization() -> i32 {
    300
}
pub(super) fn default_drain_seconds() -> i32 {
    60
}

impl Default for ListenSpec {
    fn default() -> Self {
        Self {
            port: default_listen_port(),
            path: default_path(),
            proxy_protocol: None,
        }
    }
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            connections_per_ip: None,
            pending_handshakes_per_ip: default_pending_handshakes_per_ip(),
            connections_per_subject: None,
            messages_per_connection: None,
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        Self {
            interval: default_heartbeat_interval(),
            timeout: default_heartbeat_timeout(),
        }
    }
}

impl Default for SessionAffinitySpec {
    fn default() -> Self {
        Self {
            type_: AffinityType::default(),
            timeout_seconds: default_affinity_timeout(),
        }
    }
}

impl Default for DrainSpec {
    fn default() -> Self {
        Self {
            grace_period_seconds: default_drain_seconds(),
        }
    }
}
