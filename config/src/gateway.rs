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

impl GatewayConfig {
    /// A config with defaults everywhere, forwarding to `upstream_url`.
    pub fn for_upstream(upstream_url: impl Into<String>) -> Self {
        Self {
            listen: ListenConfig::default(),
            metrics: MetricsConfig::default(),
            tls: None,
            upstream: UpstreamConfig {
                url: upstream_url.into(),
                connect_timeout: default_connect_timeout(),
                handshake_timeout: default_upstream_handshake_timeout(),
                ca_file: None,
            },
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            heartbeat: default_heartbeat(),
            compression: Compression::default(),
            validation: ValidationConfig::default(),
            drain: DrainConfig::default(),
            tcp: TcpConfig::default(),
            access_log: AccessLogConfig::default(),
        }
    }

    /// Parses YAML and validates the result.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml::from_str(text).map_err(|err| {
            let field = err
                .location()
                .map(|at| format!("line {} column {}", at.line(), at.column()))
                .unwrap_or_else(|| "config".to_owned());
            ConfigError::new(field, err.to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a YAML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading gateway config {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| format!("invalid gateway config {}", path.display()))
    }

    /// Renders the config as YAML, the form the operator writes into a ConfigMap.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("gateway config always serializes")
    }

    /// Checks what the types alone cannot; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.path.starts_with('/') {
            return Err(ConfigError::new(
                "listen.path",
                format!("must start with '/', got {:?}", self.listen.path),
            ));
        }
        // Requests with such a path are refused, so this one could never match.
        if !crate::path::is_unambiguous(&self.listen.path) {
            return Err(ConfigError::new(
                "listen.path",
                format!(
                    "must not hold '.' or '..' segments, '%2f', '%5c' or '\\', got {:?}",
                    self.listen.path
                ),
            ));
        }
        if let Some(proxy_protocol) = &self.listen.proxy_protocol {
            if proxy_protocol.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    "listen.proxyProtocol.trustedProxies",
                    "must name at least one network: the load balancers that send the header",
                ));
            }
            positive(
                "listen.proxyProtocol.headerTimeout",
                proxy_protocol.header_timeout,
            )?;
        }
        if self.listen.address == self.metrics.address {
            return Err(ConfigError::new(
                "metrics.address",
                format!("must differ from listen.address {}", self.listen.address),
            ));
        }
        self.upstream.validate()?;
        if let Some(jwt) = &self.auth.jwt {
            jwt.validate()?;
        }
        for (index, origin) in self.auth.allowed_origins.iter().enumerate() {
            if origin.is_empty() || origin.ends_with('/') {
                return Err(ConfigError::new(
                    format!("auth.allowedOrigins[{index}]"),
                    format!(
                        "must be scheme://host[:port] without a trailing slash, got {origin:?}"
                    ),
                ));
            }
        }
        self.limits.validate()?;
        if self.limits.connections_per_subject.is_some() && self.auth.jwt.is_none() {
            return Err(ConfigError::new(
                "limits.connectionsPerSubject",
                "needs auth.jwt: the subject is a claim of a verified token",
            ));
        }
        if self.validation.utf8 && self.compression != Compression::Disabled {
            return Err(ConfigError::new(
                "validation.utf8",
                "needs compression: Disabled; the gateway measures compressed messages \
                 without inflating them, so it cannot check their text",
            ));
        }
        for (index, name) in self.validation.allowed_subprotocols.iter().enumerate() {
            if !is_token(name) || name.starts_with(crate::TOKEN_SUBPROTOCOL_PREFIX) {
                return Err(ConfigError::new(
                    format!("validation.allowedSubprotocols[{index}]"),
                    format!(
                        "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~) not starting with 'bearer.', got {name:?}"
                    ),
                ));
            }
        }
        if let Some(heartbeat) = &self.heartbeat {
            positive("heartbeat.interval", heartbeat.interval)?;
            positive("heartbeat.timeout", heartbeat.timeout)?;
        }
        self.tcp.validate()?;
        if self.access_log.sample_one_in == 0 {
            return Err(ConfigError::new(
                "accessLog.sampleOneIn",
                "must be at least 1 (1: every connection)",
            ));
        }
        Ok(())
    }
}

impl AccessLogConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            sample_one_in: default_sample_one_in(),
            refusals: default_log_refusals(),
        }
    }
}

impl TcpConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(keepalive) = &self.keepalive {
            // Linux takes whole seconds, from 1 to 32767.
            for (field, value) in [
                ("tcp.keepalive.idle", keepalive.idle),
                ("tcp.keepalive.interval", keepalive.interval),
            ] {
                if value.subsec_nanos() != 0 || !(1..=32767).contains(&value.as_secs()) {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "must be whole seconds from 1s to 32767s, got {}",
                            duration_text::format(value)
                        ),
                    ));
                }
            }
            if !(1..=127).contains(&keepalive.count) {
                return Err(ConfigError::new(
                    "tcp.keepalive.count",
                    format!("must be between 1 and 127, got {}", keepalive.count),
                ));
            }
        }
        for (field, bytes) in [
            ("tcp.sendBufferBytes", self.send_buffer_bytes),
            ("tcp.receiveBufferBytes", self.receive_buffer_bytes),
        ] {
            if let Some(bytes) = bytes
                && !(4096..=(64 << 20)).contains(&bytes)
            {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 4096 and 67108864, got {bytes}"),
                ));
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let rest = self
            .url
            .strip_prefix("ws://")
            .or_else(|| self.url.strip_prefix("wss://"))
            .ok_or_else(|| {
                ConfigError::new(
                    "upstream.url",
                    format!("scheme must be ws:// or wss://, got {:?}", self.url),
                )
            })?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err(ConfigError::new(
                "upstream.url",
                format!("has no host: {:?}", self.url),
            ));
        }
        positive("upstream.connectTimeout", self.connect_timeout)?;
        positive("upstream.handshakeTimeout", self.handshake_timeout)
    }
}

impl JwtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let families: BTreeSet<KeyFamily> =
            self.algorithms.iter().map(|alg| alg.key_family()).collect();
        match families.len() {
            0 => Err(ConfigError::new(
                "auth.jwt.algorithms",
                "must name at least one algorithm",
            )),
            1 => Ok(()),
            _ => Err(ConfigError::new(
                "auth.jwt.algorithms",
                format!(
                    "must share one key type (HMAC, RSA or EC) to rule out algorithm confusion, got {:?}",
                    self.algorithms
                ),
            )),
        }?;
        match (&self.key_file, &self.jwks) {
            (Some(_), None) => {}
            (None, Some(jwks)) => {
                if families.contains(&KeyFamily::Hmac) {
                    return Err(ConfigError::new(
                        "auth.jwt.algorithms",
                        "must be RSA or EC algorithms with jwks: an identity provider publishes \
                         public keys, never HMAC secrets",
                    ));
                }
                jwks.validate(self.issuer.as_deref())?;
            }
            _ => {
                return Err(ConfigError::new(
                    "auth.jwt",
                    "set exactly one of keyFile and jwks",
                ));
            }
        }
        if self.token_from.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt.tokenFrom",
                "must name at least one source",
            ));
        }
        if self.query_parameter.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt.queryParameter",
                "must not be empty",
            ));
        }
        if self.subject_claim.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt.subjectClaim",
                "must not be empty",
            ));
        }
        for (index, forwarded) in self.forward_claims.iter().enumerate() {
            let valid_header = !forwarded.header.is_empty()
                && forwarded
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid_header {
                return Err(ConfigError::new(
                    format!("auth.jwt.forwardClaims[{index}].header"),
                    format!(
                        "must be letters, digits and '-', got {:?}",
                        forwarded.header
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl JwksConfig {
    fn validate(&self, issuer: Option<&str>) -> Result<(), ConfigError> {
        match (&self.url, self.discovery) {
            (Some(url), false) => http_url("auth.jwt.jwks.url", url)?,
            (None, true) => {
                let issuer = issuer.ok_or_else(|| {
                    ConfigError::new(
                        "auth.jwt.issuer",
                        "must be set with jwks.discovery: the provider's keys are found through it",
                    )
                })?;
                http_url("auth.jwt.issuer", issuer)?;
            }
            _ => {
                return Err(ConfigError::new(
                    "auth.jwt.jwks",
                    "set exactly one of url and discovery: true",
                ));
            }
        }
        positive("auth.jwt.jwks.refreshInterval", self.refresh_interval)?;
        positive(
            "auth.jwt.jwks.minRefreshInterval",
            self.min_refresh_interval,
        )?;
        if self.min_refresh_interval > self.refresh_interval {
            return Err(ConfigError::new(
                "auth.jwt.jwks.minRefreshInterval",
                format!(
                    "must not exceed refreshInterval ({}), got {}",
                    duration_text::format(self.refresh_interval),
                    duration_text::format(self.min_refresh_interval)
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that `url` is `http://` or `https://` with a host.
fn http_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("scheme must be http:// or https://, got {url:?}"),
            )
        })?;
    if rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(ConfigError::new(field, format!("has no host: {url:?}")));
    }
    Ok(())
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "limits.maxConnections",
                "must be at least 1",
            ));
        }
        if let Some(rate) = &self.connections_per_ip {
            rate.validate("limits.connectionsPerIP")?;
        }
        if self.connections_per_subject == Some(0) {
            return Err(ConfigError::new(
                "limits.connectionsPerSubject",
                "must be at least 1",
            ));
        }
        if let Some(rate) = &self.messages_per_connection {
            rate.validate("limits.messagesPerConnection")?;
        }
        if !(125..=(1 << 30)).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "limits.maxMessageBytes",
                format!(
                    "must be between 125 and 1073741824, got {}",
                    self.max_message_bytes
                ),
            ));
        }
        if !(1024..=(1 << 20)).contains(&self.max_header_bytes) {
            return Err(ConfigError::new(
                "limits.maxHeaderBytes",
                format!(
                    "must be between 1024 and 1048576, got {}",
                    self.max_header_bytes
                ),
            ));
        }
        positive("limits.handshakeTimeout", self.handshake_timeout)
    }
}

impl Rate {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.per_second == 0 {
            return Err(ConfigError::new(
                format!("{field}.perSecond"),
                "must be at least 1",
            ));
        }
        if self.burst < self.per_second {
            return Err(ConfigError::new(
                format!("{field}.burst"),
                format!(
                    "must be at least perSecond ({}), got {}",
                    self.per_second, self.burst
                ),
            ));
        }
        Ok(())
    }
}

/// An HTTP token (RFC 9110 section 5.6.2), the form of a subprotocol name.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be longer than 0s"));
    }
    Ok(())
}

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

fn default_listen_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_LISTEN_PORT))
}
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT))
}
fn default_path() -> String {
    "/".to_owned()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_upstream_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource::Header]
}
fn default_query_parameter() -> String {
    "access_token".to_owned()
}
fn default_sample_one_in() -> u32 {
    1
}
fn default_log_refusals() -> bool {
    true
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
/// Providers rotate keys over days and publish a new key ahead of its use; five minutes
/// picks it up long before, at one small request per gateway.
fn default_jwks_refresh_interval() -> Duration {
    Duration::from_secs(300)
}
/// At most two fetches a minute per gateway from unknown `kid`s: a fleet of a hundred
/// gateways stays far below a provider's rate limits, and a key used the moment it is
/// published is accepted within half a minute.
fn default_jwks_min_refresh_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> u32 {
    10_000
}
fn default_max_message_bytes() -> u64 {
    1 << 20
}
fn default_client_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_no_delay() -> bool {
    true
}
fn default_proxy_header_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_heartbeat() -> Option<HeartbeatConfig> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "upstream:\n  url: ws://127.0.0.1:9000/ws\n";

    #[test]
    fn minimal_config_takes_defaults() {
        let config = GatewayConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(
            config,
            GatewayConfig::for_upstream("ws://127.0.0.1:9000/ws")
        );
        assert_eq!(config.limits.max_connections, 10_000);
        assert_eq!(config.heartbeat, Some(HeartbeatConfig::default()));
    }

    #[test]
    fn heartbeats_turned_off_stay_off_when_rendered() {
        // Found by the config fuzz target: `heartbeat: null` rendered without the key, which
        // loads back as the default heartbeat.
        let mut config = GatewayConfig::for_upstream("wss://chat.default.svc:8080/ws");
        config.heartbeat = None;
        let text = config.to_yaml();
        assert!(text.contains("heartbeat: null"), "{text}");
        assert_eq!(GatewayConfig::from_yaml(&text).unwrap().heartbeat, None);
    }

    #[test]
    fn rendered_yaml_reads_back_identically() {
        let mut config = GatewayConfig::for_upstream("wss://chat.default.svc:8080/ws");
        config.limits.messages_per_connection = Some(Rate {
            per_second: 100,
            burst: 200,
        });
        config.auth.ip_deny = vec!["10.1.0.0/16".parse().unwrap()];
        config.drain.grace_period = Duration::from_secs(90);
        let text = config.to_yaml();
        assert!(text.contains("gracePeriod: 1m30s"), "{text}");
        assert_eq!(GatewayConfig::from_yaml(&text).unwrap(), config);
    }

    fn error_of(yaml: &str) -> ConfigError {
        GatewayConfig::from_yaml(yaml).unwrap_err()
    }

    #[test]
    fn bad_upstream_scheme_names_the_field_and_value() {
        let err = error_of("upstream:\n  url: http://x:1/\n");
        assert_eq!(err.field, "upstream.url");
        assert!(err.message.contains("http://x:1/"), "{err}");
    }

    #[test]
    fn listen_path_with_dot_segments_is_refused() {
        let err = error_of(&format!("{MINIMAL}listen: {{path: /ws/../admin}}\n"));
        assert_eq!(err.field, "listen.path");
        assert!(err.message.contains("/ws/../admin"), "{err}");
    }

    #[test]
    fn utf8_validation_needs_compression_disabled() {
        let err = error_of(&format!("{MINIMAL}validation: {{utf8: true}}\n"));
        assert_eq!(err.field, "validation.utf8");
        let config = GatewayConfig::from_yaml(&format!(
            "{MINIMAL}validation: {{utf8: true}}\ncompression: Disabled\n"
        ))
        .unwrap();
        assert!(config.validation.utf8);
    }

    #[test]
    fn allowed_subprotocols_are_tokens_and_not_token_carriers() {
        for bad in ["\"\"", "\"chat v2\"", "bearer.x", "\"a,b\""] {
            let err = error_of(&format!(
                "{MINIMAL}validation: {{allowedSubprotocols: [chat, {bad}]}}\n"
            ));
            assert_eq!(err.field, "validation.allowedSubprotocols[1]", "{bad}");
        }
    }

    #[test]
    fn burst_below_rate_is_refused() {
        let err = error_of(&format!(
            "{MINIMAL}limits:\n  connectionsPerIP: {{perSecond: 10, burst: 5}}\n"
        ));
        assert_eq!(err.field, "limits.connectionsPerIP.burst");
    }

    #[test]
    fn connections_per_subject_needs_jwt_and_at_least_one() {
        let jwt = "auth:\n  jwt: {algorithms: [HS256], keyFile: /k}\n";
        let err = error_of(&format!("{MINIMAL}limits: {{connectionsPerSubject: 3}}\n"));
        assert_eq!(err.field, "limits.connectionsPerSubject");
        assert!(err.message.contains("auth.jwt"), "{err}");
        let err = error_of(&format!(
            "{MINIMAL}{jwt}limits: {{connectionsPerSubject: 0}}\n"
        ));
        assert_eq!(err.field, "limits.connectionsPerSubject");
        let config = GatewayConfig::from_yaml(&format!(
            "{MINIMAL}{jwt}limits: {{connectionsPerSubject: 3}}\n"
        ))
        .unwrap();
        assert_eq!(config.limits.connections_per_subject, Some(3));
        assert_eq!(config.auth.jwt.as_ref().unwrap().subject_claim, "sub");
        assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
    }

    #[test]
    fn mixed_jwt_key_families_are_refused() {
        let err = error_of(&format!(
            "{MINIMAL}auth:\n  jwt: {{algorithms: [HS256, RS256], keyFile: /k}}\n"
        ));
        assert_eq!(err.field, "auth.jwt.algorithms");
    }

    #[test]
    fn jwt_keys_come_from_exactly_one_source() {
        let jwt =
            |fields: &str| format!("{MINIMAL}auth:\n  jwt: {{algorithms: [RS256]{fields}}}\n");
        assert_eq!(error_of(&jwt("")).field, "auth.jwt");
        assert_eq!(
            error_of(&jwt(", keyFile: /k, jwks: {url: https://id.test/keys}")).field,
            "auth.jwt"
        );
        assert_eq!(
            error_of(&jwt(", jwks: {url: https://id.test/keys, discovery: true}")).field,
            "auth.jwt.jwks"
        );
        assert_eq!(
            error_of(&jwt(", jwks: {url: ftp://id.test/keys}")).field,
            "auth.jwt.jwks.url"
        );
        assert_eq!(
            error_of(&jwt(", jwks: {discovery: true}")).field,
            "auth.jwt.issuer"
        );
        assert_eq!(
            error_of(&jwt(
                ", jwks: {url: https://id.test/keys, refreshInterval: 10s, minRefreshInterval: 1m}"
            ))
            .field,
            "auth.jwt.jwks.minRefreshInterval"
        );
        let hmac = format!(
            "{MINIMAL}auth:\n  jwt: {{algorithms: [HS256], jwks: {{url: https://id.test/keys}}}}\n"
        );
        assert_eq!(error_of(&hmac).field, "auth.jwt.algorithms");
    }

    #[test]
    fn jwks_settings_take_defaults_and_read_back() {
        let config = GatewayConfig::from_yaml(&format!(
            "{MINIMAL}auth:\n  jwt:\n    issuer: https://id.test/realms/chat\n    algorithms: [ES256]\n    jwks: {{discovery: true, caFile: /ca.pem}}\n"
        ))
        .unwrap();
        let jwks = config.auth.jwt.as_ref().unwrap().jwks.as_ref().unwrap();
        assert_eq!(jwks.refresh_interval, Duration::from_secs(300));
        assert_eq!(jwks.min_refresh_interval, Duration::from_secs(30));
        assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
    }

    #[test]
    fn unknown_fields_and_none_algorithm_are_refused() {
        assert!(
            error_of(&format!("{MINIMAL}colour: blue\n"))
                .message
                .contains("colour")
        );
        let err = error_of(&format!(
            "{MINIMAL}auth:\n  jwt: {{algorithms: [none], keyFile: /k}}\n"
        ));
        assert!(err.message.contains("none"), "{err}");
    }

    #[test]
    fn bad_duration_and_cidr_name_the_value() {
        let err = error_of(&format!("{MINIMAL}drain: {{gracePeriod: soon}}\n"));
        assert!(err.message.contains("soon"), "{err}");
        let err = error_of(&format!("{MINIMAL}auth: {{ipAllow: [10.0.0.0/33]}}\n"));
        assert!(
            err.message.contains("10.0.0.0/33") || err.message.contains("invalid"),
            "{err}"
        );
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies_and_a_timeout() {
        let config = GatewayConfig::from_yaml(&format!(
            "{MINIMAL}listen:\n  proxyProtocol: {{trustedProxies: [10.0.0.0/8]}}\n"
        ))
        .unwrap();
        let proxy_protocol = config.listen.proxy_protocol.unwrap();
        assert_eq!(proxy_protocol.header_timeout, Duration::from_secs(5));
        let err = error_of(&format!(
            "{MINIMAL}listen:\n  proxyProtocol: {{trustedProxies: []}}\n"
        ));
        assert_eq!(err.field, "listen.proxyProtocol.trustedProxies");
        let err = error_of(&format!(
            "{MINIMAL}listen:\n  proxyProtocol: {{trustedProxies: [10.0.0.0/8], headerTimeout: 0s}}\n"
        ));
        assert_eq!(err.field, "listen.proxyProtocol.headerTimeout");
    }

    #[test]
    fn tcp_options_are_bounded_and_left_out_when_default() {
        assert!(
            !GatewayConfig::for_upstream("ws://b:1/")
                .to_yaml()
                .contains("tcp")
        );
        let config = GatewayConfig::from_yaml(&format!(
            "{MINIMAL}tcp:\n  noDelay: false\n  keepalive: {{idle: 1m, interval: 10s, count: 5}}\n  sendBufferBytes: 65536\n"
        ))
        .unwrap();
        assert_eq!(
            config.tcp.keepalive.map(|k| (k.idle, k.count)),
            Some((Duration::from_secs(60), 5))
        );
        assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
        for (tcp, field) in [
            (
                "keepalive: {idle: 1500ms, interval: 10s, count: 5}",
                "tcp.keepalive.idle",
            ),
            (
                "keepalive: {idle: 1m, interval: 10h, count: 5}",
                "tcp.keepalive.interval",
            ),
            (
                "keepalive: {idle: 1m, interval: 10s, count: 0}",
                "tcp.keepalive.count",
            ),
            ("receiveBufferBytes: 100", "tcp.receiveBufferBytes"),
        ] {
            assert_eq!(error_of(&format!("{MINIMAL}tcp: {{{tcp}}}\n")).field, field);
        }
    }

    #[test]
    fn access_log_defaults_and_sampling() {
        let config =
            GatewayConfig::from_yaml(&format!("{MINIMAL}accessLog: {{enabled: true}}\n")).unwrap();
        assert_eq!(
            config.access_log,
            AccessLogConfig {
                enabled: true,
                sample_one_in: 1,
                refusals: true,
            }
        );
        assert_eq!(GatewayConfig::from_yaml(&config.to_yaml()).unwrap(), config);
        assert!(
            !GatewayConfig::for_upstream("ws://b:1/")
                .to_yaml()
                .contains("accessLog")
        );
        let err = error_of(&format!(
            "{MINIMAL}accessLog: {{enabled: true, sampleOneIn: 0}}\n"
        ));
        assert_eq!(err.field, "accessLog.sampleOneIn");
    }

    #[test]
    fn compression_speaks_the_crds_words() {
        let config =
            GatewayConfig::from_yaml(&format!("{MINIMAL}compression: Disabled\n")).unwrap();
        assert_eq!(config.compression, Compression::Disabled);
        let err = error_of(&format!("{MINIMAL}compression: Off\n"));
        assert!(
            err.message.contains("Off") && err.message.contains("Disabled"),
            "{err}"
        );
    }

    #[test]
    fn durations_format_without_spaces() {
        assert_eq!(
            duration_text::format(Duration::from_secs(2160 * 3600)),
            "2160h"
        );
        assert_eq!(
            duration_text::format(Duration::from_millis(1500)),
            "1s500ms"
        );
        assert_eq!(
            duration_text::parse("2160h").unwrap(),
            Duration::from_secs(2160 * 3600)
        );
    }
}
