//! The gateway configuration: one typed struct, validated once.
//!
//! The operator renders this type into the `<name>-gateway` ConfigMap; a standalone gateway
//! reads it from `--config gateway.yaml`. Field names are camelCase like the Kubernetes
//! resource they come from, and durations are strings such as `30s` or `2160h`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod defaults;
#[cfg(test)]
mod tests;
mod validate;

use defaults::*;
pub use defaults::{DEFAULT_LISTEN_PORT, DEFAULT_METRICS_PORT, duration_text};

/// Everything a gateway process needs to know, validated by [`GatewayConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Absent: clients speak plain `ws://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Omitted: the defaults (30s, 10s). `null`: the gateway never pings clients on its own.
    /// Rendered as `null` when off, since an omitted key would turn it back on.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Option<HeartbeatConfig>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub validation: ValidationConfig,
    #[serde(default)]
    pub drain: DrainConfig,
    /// Options of client and upstream TCP sockets.
    #[serde(default, skip_serializing_if = "TcpConfig::is_default")]
    pub tcp: TcpConfig,
    /// JSON lines on stdout for connections and refused handshakes.
    #[serde(default, skip_serializing_if = "AccessLogConfig::is_default")]
    pub access_log: AccessLogConfig,
}

/// Where clients connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(default = "default_listen_address")]
    pub address: SocketAddr,
    /// Only upgrades on this path are accepted; others get 404.
    #[serde(default = "default_path")]
    pub path: String,
    /// Present: every connection starts with a PROXY protocol header (v1 or v2) from a
    /// trusted load balancer, and the client it names is the one admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolConfig>,
}

/// The PROXY protocol on the client listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// The load balancers allowed to connect; a connection from anywhere else is refused.
    pub trusted_proxies: Vec<IpNet>,
    /// Budget for the header to arrive after the connection is accepted.
    #[serde(default = "default_proxy_header_timeout", with = "duration_text")]
    pub header_timeout: Duration,
}

/// Where Prometheus metrics, `/healthz` and `/readyz` are served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_address")]
    pub address: SocketAddr,
}

/// The serving certificate; both files are re-read when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The WebSocket server that the gateway forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `ws://host:port/path` or `wss://host:port/path`; the client's query string is appended.
    pub url: String,
    /// TCP (and TLS) connect budget; exceeding it answers the client 504.
    #[serde(default = "default_connect_timeout", with = "duration_text")]
    pub connect_timeout: Duration,
    /// Budget for the upstream's handshake answer; exceeding it answers the client 504.
    #[serde(default = "default_upstream_handshake_timeout", with = "duration_text")]
    pub handshake_timeout: Duration,
    /// PEM bundle that `wss://` upstream certificates must chain to; absent: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Who may connect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Exact `Origin` values accepted; empty: any origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Empty: every address not denied is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allow: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_deny: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` header is believed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<IpNet>,
}

/// JSON Web Token checks on the upgrade request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`; absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `aud` must contain one of these; empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted algorithms; all must share one key family (HMAC, RSA or EC).
    pub algorithms: Vec<JwtAlgorithm>,
    /// HMAC secret (raw bytes) or PEM public key, re-read when it changes. Exactly one of
    /// `keyFile` and `jwks` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Public keys fetched from an identity provider and refreshed as it rotates them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksConfig>,
    /// Where the token may be carried, tried in this order.
    #[serde(default = "default_token_sources")]
    pub token_from: Vec<TokenSource>,
    /// Query parameter that carries the token when `Query` is a source.
    #[serde(default = "default_query_parameter")]
    pub query_parameter: String,
    /// Claims copied into request headers for the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_claims: Vec<ForwardedClaim>,
    /// The claim whose string value names the user, for `limits.connectionsPerSubject` and
    /// the access log.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "duration_text")]
    pub leeway: Duration,
}

/// Where the gateway fetches a JWK set: `url`, or `discovery` through `auth.jwt.issuer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwksConfig {
    /// The JWK set document, `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The JWK set is the `jwks_uri` of `{auth.jwt.issuer}/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discovery: bool,
    /// PEM bundle that an `https://` provider's certificate must chain to; absent: the
    /// system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Time between scheduled fetches.
    #[serde(default = "default_jwks_refresh_interval", with = "duration_text")]
    pub refresh_interval: Duration,
    /// Least time between fetches started by tokens with an unknown `kid`, so that made-up
    /// `kid`s cannot make the gateway flood the provider.
    #[serde(default = "default_jwks_min_refresh_interval", with = "duration_text")]
    pub min_refresh_interval: Duration,
}

/// A signing algorithm; `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

/// The kind of key an algorithm verifies with; one config uses one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyFamily {
    Hmac,
    Rsa,
    Ec,
}

impl JwtAlgorithm {
    pub fn key_family(self) -> KeyFamily {
        use JwtAlgorithm::*;
        match self {
            HS256 | HS384 | HS512 => KeyFamily::Hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyFamily::Rsa,
            ES256 | ES384 => KeyFamily::Ec,
        }
    }
}

/// Where a client may carry its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `?<queryParameter>=<token>`.
    Query,
    /// A `Sec-WebSocket-Protocol` entry `bearer.<token>`; it is removed before forwarding.
    Subprotocol,
}

/// One claim forwarded upstream as a request header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardedClaim {
    pub claim: String,
    pub header: String,
}

/// Admission and relay limits, per gateway process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Beyond this many live connections, handshakes are refused with 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// New connections per client IP; beyond it handshakes are refused with 429.
    #[serde(
        default,
        rename = "connectionsPerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub connections_per_ip: Option<Rate>,
    /// Handshakes one client address may have in progress at once (slowloris guard); beyond it
    /// handshakes are refused with 429. Clients behind one NAT address, or behind a load
    /// balancer that sends no PROXY header, all count as that one address.
    #[serde(
        default = "default_pending_handshakes_per_ip",
        rename = "pendingHandshakesPerIP"
    )]
    pub pending_handshakes_per_ip: u32,
    /// Live connections per token subject (`auth.jwt.subjectClaim`) on this gateway; beyond it
    /// handshakes are refused with 429. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_subject: Option<u32>,
    /// Messages, pings and pongs per connection in either direction; beyond it the connection
    /// is closed 1008.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_connection: Option<Rate>,
    /// Largest message in either direction; beyond it the connection is closed 1009. A
    /// compressed (permessage-deflate) message counts by its inflated size.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Budget for a client to send its whole upgrade request (slowloris guard).
    #[serde(default = "default_client_handshake_timeout", with = "duration_text")]
    pub handshake_timeout: Duration,
    /// Largest upgrade request head accepted; beyond it the answer is 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

/// A token bucket: `perSecond` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Pings sent to idle clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// A client silent this long is pinged.
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// A pinged client silent this much longer is closed.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

/// What happens to permessage-deflate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// Negotiated between client and upstream; compressed frames pass through untouched.
    #[default]
    Passthrough,
    /// The offer is removed from the forwarded handshake. (Not `Off`: YAML 1.1 readers such as
    /// kubectl turn an unquoted `Off` into `false`, and the CRD uses the same words.)
    Disabled,
}

/// Checks on what clients send, beyond what RFC 6455 framing requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationConfig {
    /// A text message from a client that is not UTF-8 closes the connection with 1007.
    /// Needs `compression: Disabled`: compressed messages are measured, never inflated.
    #[serde(default)]
    pub utf8: bool,
    /// `Sec-WebSocket-Protocol` values the fleet speaks; a client offering none of them (or
    /// no subprotocol at all) is refused with 400, and other offered values are not
    /// forwarded. Empty: any offer, or none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_subprotocols: Vec<String>,
}

/// Shutdown on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainConfig {
    /// Live connections are closed 1001, spread over this period.
    #[serde(with = "duration_text")]
    pub grace_period: Duration,
}

/// The largest `tcp.listenBacklog`: Linux kept a listener's backlog in 16 bits before 4.x, and
/// no `net.core.somaxconn` in use is higher.
pub const MAX_LISTEN_BACKLOG: u32 = 65535;

/// Options of client and upstream TCP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpConfig {
    /// TCP_NODELAY: frames leave as written instead of waiting to be coalesced.
    #[serde(default = "default_no_delay")]
    pub no_delay: bool,
    /// Absent: no keepalive probes (the kernel's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepaliveConfig>,
    /// SO_SNDBUF; absent: the kernel's autotuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_buffer_bytes: Option<u32>,
    /// SO_RCVBUF; absent: the kernel's autotuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_buffer_bytes: Option<u32>,
    /// Connections the kernel queues on the client listener until the gateway accepts them,
    /// capped by `net.core.somaxconn`. A reconnect storm that overflows it costs each dropped
    /// client a one-second SYN retransmit. A reload applies a change to the open listener.
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
}

/// The access log: one JSON line on stdout per connection when it ends, and one per refused
/// handshake (the gateway's `access_log` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub enabled: bool,
    /// One connection in this many is logged, counted in the order they end; 1: every one.
    #[serde(default = "default_sample_one_in")]
    pub sample_one_in: u32,
    /// Every refused handshake is logged too, unsampled: refusals are what an incident is
    /// read from, and a flood of them is bounded by the log's queue.
    #[serde(default = "default_log_refusals")]
    pub refusals: bool,
}

/// TCP keepalive probes on an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Idle time before the first probe (TCP_KEEPIDLE), whole seconds.
    #[serde(with = "duration_text")]
    pub idle: Duration,
    /// Time between probes (TCP_KEEPINTVL), whole seconds.
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT).
    pub count: u32,
}

/// A configuration problem, naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
