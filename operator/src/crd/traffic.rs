//! What a connection may do: limits, rates, heartbeats, compression and message checks.

use super::*;

/// Admission and relay limits, per gateway pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Beyond this many live connections per pod, handshakes are refused with 503.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections: i32,
    /// New connections per client IP; beyond it handshakes are refused with 429.
    #[serde(
        default,
        rename = "connectionsPerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub connections_per_ip: Option<RateSpec>,
    /// Handshakes one client address may have in progress at once on each gateway pod
    /// (slowloris guard); beyond it handshakes are refused with 429. Raise it when many
    /// clients share one address: behind a NAT, or behind a load balancer that sends no PROXY
    /// header (then every client has the balancer's address), a reconnect storm after a drain
    /// is otherwise refused beyond this many at once.
    #[serde(
        default = "default_pending_handshakes_per_ip",
        rename = "pendingHandshakesPerIP"
    )]
    #[schemars(range(min = 1, max = 100_000))]
    pub pending_handshakes_per_ip: i32,
    /// Live connections per token subject (`auth.jwt.subjectClaim`) on each gateway pod;
    /// beyond it handshakes are refused with 429. Needs `auth.jwt`; a token without the
    /// subject claim is then refused with 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub connections_per_subject: Option<i32>,
    /// Messages per connection; beyond it the connection is closed 1008.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_connection: Option<RateSpec>,
    /// Largest message, either direction; beyond it the connection is closed 1009. A message
    /// compressed with permessage-deflate counts by its inflated size.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = 125, max = 1_073_741_824))]
    pub max_message_bytes: i64,
}

/// A token bucket: `perSecond` refill, `burst` capacity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.burst >= self.perSecond").message("burst must be at least perSecond").field_path(".burst"))]
pub struct RateSpec {
    #[schemars(range(min = 1, max = 1_000_000))]
    pub per_second: i32,
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: i32,
}

/// Pings to idle clients.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatSpec {
    /// A client silent this long is pinged.
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("heartbeat.interval must be a positive duration in h, m, s or ms such as 30s"))]
    pub interval: String,
    /// A pinged client silent this much longer is closed.
    #[serde(default = "default_heartbeat_timeout")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("heartbeat.timeout must be a positive duration in h, m, s or ms such as 10s"))]
    pub timeout: String,
}

/// What happens to permessage-deflate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// Negotiated end to end; compressed frames pass through.
    #[default]
    Passthrough,
    /// The offer is removed from the forwarded handshake. (Not `Off`: YAML 1.1 readers such as
    /// kubectl turn an unquoted `Off` into `false`.)
    Disabled,
}

/// Checks on what clients send, beyond RFC 6455 framing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSpec {
    /// A text message from a client that is not UTF-8 closes its connection with 1007, and
    /// the upstream hears 1001 instead of the message (checked incrementally, so a character
    /// may straddle frames). Costs 0.2 (ASCII) to 1.5 (mostly non-ASCII) ns of CPU per byte
    /// of text; see docs/operations.md. Needs `compression: Disabled`: compressed messages
    /// are measured without being inflated, so their text cannot be checked.
    #[serde(default)]
    pub utf8: bool,
    /// `Sec-WebSocket-Protocol` values the fleet speaks. A client that offers none of them,
    /// or no subprotocol at all, is refused with 400 (reason `subprotocol_denied`); offered
    /// values not listed are not forwarded, so the upstream can only select a listed one.
    /// Absent: any offer, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 128)))]
    #[x_kube(validation = Rule::new(r#"self.all(p, p.matches("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$") && !p.startsWith('bearer.'))"#).message("validation.allowedSubprotocols entries must be HTTP tokens (letters, digits and !#$%&'*+-.^_`|~) not starting with 'bearer.'"))]
    pub allowed_subprotocols: Option<Vec<String>>,
}
