//! The `WebSocketService` resource (`wsfleet.io/v1alpha1`): spec, status and the schema rules
//! that make the apiserver refuse a bad manifest with a message naming the field.
//!
//! Defaults live in the schema (serde defaults become OpenAPI `default`s), so stored objects
//! carry them and the operator reads the same values the user sees in `kubectl get -o yaml`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go-style duration text as `duration()` in CEL and the gateway both read it: `30s`, `1h30m`.
/// No `us` or `ns`: the gateway config holds whole milliseconds, so `500us` would reach the
/// gateway as `0s` (which it refuses to start with) and `1500us` as `1ms`.
const DURATION_RE: &str = "^([0-9]+(ms|s|m|h))+$";

/// A fleet of WebSocket gateways in front of one upstream.
// Each `printcolumn(...)` below is its own column; repeated `type_` values are not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wsfleet.io",
    version = "v1alpha1",
    kind = "WebSocketService",
    plural = "websocketservices",
    shortname = "wss",
    namespaced,
    status = "WebSocketServiceStatus",
    derive = "PartialEq",
    doc = "A fleet of WebSocket gateways: TLS, auth, limits, heartbeats, draining and autoscaling in front of one upstream.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the gateways serve traffic"
    ),
    printcolumn(
        name = "REPLICAS",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Gateway pods ready"
    ),
    printcolumn(
        name = "ENDPOINT",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "Where clients connect inside the cluster"
    ),
    printcolumn(
        name = "CERT-EXPIRES",
        // A date column would print "<invalid>" for a time in the future.
        type_ = "string",
        json_path = ".status.tls.notAfter",
        description = "When the serving certificate expires"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.validation) || !has(self.validation.utf8) || !self.validation.utf8 || (has(self.compression) && self.compression == 'Disabled')").message("validation.utf8 needs compression: Disabled; compressed messages are measured, never inflated, so their text cannot be checked"),
    validation = Rule::new("!has(self.limits) || !has(self.limits.connectionsPerSubject) || (has(self.auth) && has(self.auth.jwt))").message("limits.connectionsPerSubject needs auth.jwt: the subject is a claim of a verified token"),
)]
pub struct WebSocketServiceSpec {
    /// The WebSocket server the gateways forward to.
    pub upstream: UpstreamSpec,
    /// Gateway pods while `autoscaling` is unset.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Where clients connect on each gateway pod.
    #[serde(default)]
    pub listen: ListenSpec,
    /// Absent: plain `ws://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Who may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Admission and relay limits, per gateway pod.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Pings to idle clients.
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,
    /// What happens to permessage-deflate.
    #[serde(default)]
    pub compression: Compression,
    /// Checks on what clients send, beyond RFC 6455 framing.
    #[serde(default)]
    pub validation: ValidationSpec,
    /// Stickiness of clients to gateway pods at the Service.
    #[serde(default)]
    pub session_affinity: SessionAffinitySpec,
    /// How the fleet's Service is exposed: inside the cluster, on every node, or through a
    /// cloud load balancer.
    #[serde(default)]
    pub service: ServiceExposureSpec,
    /// Present: a HorizontalPodAutoscaler owns the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Shutdown of a gateway pod.
    #[serde(default)]
    pub drain: DrainSpec,
    /// Options of the gateways' TCP sockets, towards clients and towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSpec>,
    /// JSON lines on the gateways' stdout, one per connection and per refused handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// Gateway image; absent: the operator's `--gateway-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Gateway container resources; absent: small requests (cpu 100m, memory 64Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Added to the gateway pod template (for example scrape hints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// The upstream: a Service in the same namespace, or a URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.service) != has(self.url)").message("upstream: set exactly one of upstream.service or upstream.url"),
    validation = Rule::new("!has(self.service) || has(self.port)").message("upstream.port is required with upstream.service"),
    validation = Rule::new("!has(self.url) || (!has(self.port) && !has(self.path))").message("upstream.port and upstream.path apply only to upstream.service; put them in upstream.url"),
)]
pub struct UpstreamSpec {
    /// Name of a Service in the WebSocketService's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("upstream.service must be a Service name: a lowercase DNS label such as chat-backend"))]
    pub service: Option<String>,
    /// Port of `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Path on `service`; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("upstream.path must start with '/'"))]
    pub path: Option<String>,
    /// `ws://host:port/path` or `wss://host:port/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^wss?://[^/?#]+')").message("upstream.url must be ws://host[:port][/path] or wss://host[:port][/path]"))]
    pub url: Option<String>,
}

/// Where clients connect on a gateway pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenSpec {
    /// Container port for WebSocket clients (9090 is the metrics port).
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1024, max = 65535))]
    #[x_kube(validation = Rule::new("self != 9090").message("listen.port must not be 9090, the gateway's metrics port"))]
    pub port: i32,
    /// Only upgrades on this path are accepted. A request path holding a `.` or `..` segment
    /// (also percent-encoded, `%2e`), `%2f`, `%5c` or a backslash is refused with 400 (reason
    /// `unsafe_path`) before it is matched: no WebSocket client sends one, and an upstream could
    /// resolve it outside this path.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("listen.path must start with '/'"))]
    #[x_kube(validation = Rule::new(r"!self.matches('(^|/)(\\.|%2[eE]){1,2}(/|$)') && !self.matches('%2[fF]|%5[cC]|\\\\')").message("listen.path must not hold '.' or '..' segments, '%2f', '%5c' or a backslash"))]
    pub path: String,
    /// Present: clients arrive through a load balancer that starts each connection with a
    /// PROXY protocol header (v1 or v2, such as an AWS NLB with proxy protocol v2), and the
    /// client it names is the one admitted, limited, logged and sent upstream in
    /// `X-Forwarded-For`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolSpec>,
}

/// The PROXY protocol on the gateway's client port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocolSpec {
    /// Networks of the load balancers that send the header (for an NLB, its subnets); a
    /// connection from anywhere else is refused, and so is one without a header.
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new(cidr_list_rule()).message("listen.proxyProtocol.trustedProxies entries must be CIDRs such as 10.0.0.0/8"))]
    pub trusted_proxies: Vec<String>,
    /// Budget for the header to arrive once the connection is open.
    #[serde(default = "default_proxy_header_timeout")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("listen.proxyProtocol.headerTimeout must be a positive duration in h, m, s or ms such as 5s"))]
    pub header_timeout: String,
}

/// How a TLS certificate is obtained.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// The operator issues a CA and a serving certificate and renews it.
    #[default]
    SelfSigned,
    /// The user provides a `kubernetes.io/tls` Secret; the operator only reads it.
    Secret,
    /// cert-manager issues and renews the certificate: the operator writes a cert-manager
    /// `Certificate` for `tls.issuerRef` and serves the Secret cert-manager fills.
    CertManager,
}

/// The cert-manager issuer that signs a `CertManager` certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The Issuer or ClusterIssuer's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in the fleet's namespace), `ClusterIssuer`, or an external issuer's kind.
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// The issuer's API group; external issuers have their own.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

/// Serving TLS for clients (`wss://`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode != 'Secret' || has(self.secretName)").message("tls.secretName is required when tls.mode is Secret"),
    validation = Rule::new("(self.mode == 'CertManager') == has(self.issuerRef)").message("tls.issuerRef is required when tls.mode is CertManager, and allowed only then"),
    validation = Rule::new(renew_before_rule()).message("tls.renewBefore must be shorter than tls.duration"),
)]
pub struct TlsSpec {
    #[serde(default)]
    pub mode: TlsMode,
    /// The `kubernetes.io/tls` Secret; default `<name>-tls` (SelfSigned and CertManager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Extra names on a SelfSigned or CertManager certificate; the Service's cluster names are
    /// always added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new(r"self.all(n, n.matches('^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("tls.dnsNames entries must be lowercase DNS names (a leading '*.' is allowed)"))]
    pub dns_names: Option<Vec<String>>,
    /// Lifetime of a SelfSigned or CertManager certificate.
    #[serde(default = "default_cert_duration")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("tls.duration must be a positive duration in h, m, s or ms such as 2160h"))]
    pub duration: String,
    /// A SelfSigned or CertManager certificate is renewed this long before it expires.
    #[serde(default = "default_renew_before")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("tls.renewBefore must be a positive duration in h, m, s or ms such as 360h"))]
    pub renew_before: String,
    /// CertManager: the issuer cert-manager asks for the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// Who may connect.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Exact `Origin` values accepted; absent: any origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new("self.all(o, o.matches('^https?://[^/]+$'))").message("auth.allowedOrigins entries must be scheme://host[:port] without a path or trailing slash"))]
    pub allowed_origins: Option<Vec<String>>,
    /// Client networks allowed; absent: all not denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new(cidr_list_rule()).message("auth.ipAllow entries must be CIDRs such as 10.0.0.0/8"))]
    pub ip_allow: Option<Vec<String>>,
    /// Client networks refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new(cidr_list_rule()).message("auth.ipDeny entries must be CIDRs such as 192.0.2.0/24"))]
    pub ip_deny: Option<Vec<String>>,
    /// Peers whose `X-Forwarded-For` is believed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new(cidr_list_rule()).message("auth.trustedProxies entries must be CIDRs such as 10.0.0.0/8"))]
    pub trusted_proxies: Option<Vec<String>>,
}

/// JSON Web Token checks on the upgrade request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.algorithms.all(a, a.startsWith('HS')) || self.algorithms.all(a, a.startsWith('RS') || a.startsWith('PS')) || self.algorithms.all(a, a.startsWith('ES'))").message("auth.jwt.algorithms must all use one key type (HMAC, RSA or EC)"),
    validation = Rule::new("has(self.keySecretRef) != has(self.jwks)").message("auth.jwt must set exactly one of keySecretRef and jwks"),
    validation = Rule::new("!has(self.jwks) || self.algorithms.all(a, !a.startsWith('HS'))").message("auth.jwt.algorithms must be RSA or EC algorithms with auth.jwt.jwks: identity providers publish public keys, never HMAC secrets"),
    validation = Rule::new("!has(self.jwks) || !has(self.jwks.discovery) || !self.jwks.discovery || has(self.issuer)").message("auth.jwt.issuer must be set with auth.jwt.jwks.discovery: the provider's keys are found through it"),
)]
pub struct JwtSpec {
    /// Required `iss`; absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// `aud` must contain one of these; absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 1024)))]
    pub audiences: Option<Vec<String>>,
    /// Accepted algorithms, all of one key type.
    #[schemars(length(min = 1, max = 11))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// The Secret key holding the HMAC secret or the PEM public key; or use `jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
    /// Public keys fetched from an identity provider and refreshed as it rotates them; or
    /// use `keySecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSpec>,
    /// Where the token may be carried, tried in this order.
    #[serde(default = "default_token_sources")]
    #[schemars(length(min = 1, max = 3))]
    pub token_from: Vec<TokenSource>,
    /// Query parameter carrying the token when `Query` is a source.
    #[serde(default = "default_query_parameter")]
    #[schemars(length(min = 1, max = 64))]
    pub query_parameter: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(non_negative_duration_rule()).message("auth.jwt.leeway must be a duration in h, m, s or ms such as 30s"))]
    pub leeway: String,
    /// Claims copied into request headers for the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub forward_claims: Option<Vec<ForwardedClaim>>,
    /// The claim whose string value names the user, for `limits.connectionsPerSubject` and
    /// the access log.
    #[serde(default = "default_subject_claim")]
    #[schemars(length(min = 1, max = 253))]
    pub subject_claim: String,
}

/// Where the gateways fetch an identity provider's JWK set: `url`, or `discovery` through
/// `auth.jwt.issuer` (`{issuer}/.well-known/openid-configuration`, its `jwks_uri`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.url) != (has(self.discovery) && self.discovery)").message("auth.jwt.jwks must set exactly one of url and discovery: true"),
)]
pub struct JwksSpec {
    /// The JWK set document, such as Keycloak's
    /// `https://id.example.com/realms/chat/protocol/openid-connect/certs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("auth.jwt.jwks.url must be an http:// or https:// URL with a host"))]
    pub url: Option<String>,
    /// Find the JWK set through the discovery document of `auth.jwt.issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<bool>,
    /// The Secret key holding the PEM CA bundle an `https://` provider's certificate must
    /// chain to; absent: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Time between scheduled fetches.
    #[serde(default = "default_jwks_refresh_interval")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("auth.jwt.jwks.refreshInterval must be a positive duration in h, m, s or ms such as 5m"))]
    pub refresh_interval: String,
    /// Least time between fetches started by tokens with an unknown `kid`.
    #[serde(default = "default_jwks_min_refresh_interval")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(positive_duration_rule()).message("auth.jwt.jwks.minRefreshInterval must be a positive duration in h, m, s or ms such as 30s"))]
    pub min_refresh_interval: String,
}

/// A key in a Secret of the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A signing algorithm; `none` is deliberately absent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
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

/// Where a client may carry its token.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Query,
    Subprotocol,
}

/// One claim forwarded upstream as a request header.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedClaim {
    #[schemars(length(min = 1, max = 253))]
    pub claim: String,
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub header: String,
}

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

/// Service session affinity.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AffinityType {
    /// A client IP sticks to one gateway pod for `timeoutSeconds`.
    #[default]
    ClientIP,
    None,
}

/// Stickiness of clients to gateway pods at the Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinitySpec {
    #[serde(default, rename = "type")]
    pub type_: AffinityType,
    #[serde(default = "default_affinity_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

/// The Service's type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a load balancer the cloud provides.
    LoadBalancer,
}

/// Where external traffic may be routed: `Local` keeps the client's source address and avoids
/// a second hop, at the cost of uneven spreading over nodes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalTrafficPolicy {
    Cluster,
    Local,
}

/// The fleet's Service as clients outside the cluster reach it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'").message("service.externalTrafficPolicy applies only to service.type NodePort or LoadBalancer"),
    validation = Rule::new("!has(self.loadBalancerSourceRanges) || self.type == 'LoadBalancer'").message("service.loadBalancerSourceRanges applies only to service.type LoadBalancer"),
    validation = Rule::new("!has(self.loadBalancerClass) || self.type == 'LoadBalancer'").message("service.loadBalancerClass applies only to service.type LoadBalancer"),
    validation = Rule::new("self.type != 'LoadBalancer' || oldSelf.type != 'LoadBalancer' || (has(self.loadBalancerClass) ? has(oldSelf.loadBalancerClass) && self.loadBalancerClass == oldSelf.loadBalancerClass : !has(oldSelf.loadBalancerClass))").message("service.loadBalancerClass cannot be set, changed or removed while service.type stays LoadBalancer: Kubernetes refuses it on the Service; recreate the WebSocketService to change it"),
)]
pub struct ServiceExposureSpec {
    /// Changing it patches the Service in place: its clusterIP and UID stay.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Set on the Service, for the cloud's load balancer controller (for example
    /// `service.beta.kubernetes.io/aws-load-balancer-type: external`); removing one here
    /// removes it from the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,
    /// Client networks the cloud's load balancer admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new(cidr_list_rule()).message("service.loadBalancerSourceRanges entries must be CIDRs such as 203.0.113.0/24"))]
    pub load_balancer_source_ranges: Option<Vec<String>>,
    /// The load balancer implementation (such as `service.k8s.aws/nlb`); Kubernetes refuses
    /// to change it once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,
}

/// Options of the gateways' TCP sockets, towards clients and towards the upstream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpSpec {
    /// TCP_NODELAY: frames leave as written instead of waiting to be coalesced.
    #[serde(default = "default_no_delay")]
    pub no_delay: bool,
    /// Keepalive probes on idle connections, which notice a peer that vanished; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepaliveSpec>,
    /// SO_SNDBUF; absent: the kernel tunes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096, max = 67_108_864))]
    pub send_buffer_bytes: Option<i32>,
    /// SO_RCVBUF; absent: the kernel tunes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096, max = 67_108_864))]
    pub receive_buffer_bytes: Option<i32>,
}

/// TCP keepalive probes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeepaliveSpec {
    /// Idle time before the first probe, in whole seconds.
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(whole_seconds_rule()).message("tcp.keepalive.idle must be whole seconds from 1s to 32767s such as 60s"))]
    pub idle: String,
    /// Time between probes, in whole seconds.
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = Rule::new(whole_seconds_rule()).message("tcp.keepalive.interval must be whole seconds from 1s to 32767s such as 10s"))]
    pub interval: String,
    /// Unanswered probes before the connection is dropped.
    #[schemars(range(min = 1, max = 127))]
    pub count: i32,
}

/// A HorizontalPodAutoscaler for the gateway Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    validation = Rule::new("has(self.targetConnectionsPerPod) || has(self.targetCPUUtilization) || has(self.targetMemoryUtilization)").message("autoscaling needs targetConnectionsPerPod, targetCPUUtilization or targetMemoryUtilization"),
    validation = Rule::new("!has(self.keda) || has(self.targetConnectionsPerPod)").message("autoscaling.keda needs autoscaling.targetConnectionsPerPod, the Prometheus trigger's threshold per pod"),
)]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average `wsfleet_gateway_active_connections` per pod to aim for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub target_connections_per_pod: Option<i32>,
    /// Average CPU utilization (percent of the request) to aim for.
    #[serde(
        default,
        rename = "targetCPUUtilization",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// Average memory utilization (percent of the request) to aim for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization: Option<i32>,
    /// How long load must stay low before pods are removed (closing their connections).
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
    /// Present: a KEDA ScaledObject `<name>-gateway` scales the gateways (KEDA makes the HPA)
    /// instead of the operator's own HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda: Option<KedaSpec>,
}

/// Scaling through KEDA, which queries Prometheus itself: no custom-metrics adapter is needed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KedaSpec {
    /// Where KEDA reads the connection count from.
    pub prometheus: KedaPrometheusSpec,
}

/// The Prometheus trigger of the ScaledObject.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KedaPrometheusSpec {
    /// Prometheus' HTTP address as KEDA's operator reaches it, such as
    /// `http://prometheus-operated.monitoring.svc:9090`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("autoscaling.keda.prometheus.serverAddress must be http://host[:port][/path] or https://host[:port][/path]"))]
    pub server_address: String,
    /// The fleet's total connections; default
    /// `sum(wsfleet_gateway_active_connections{namespace="<namespace>",service="<name>"})`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,
}

/// The gateways' access log: one JSON line on stdout per connection when it ends (with
/// `"type":"access"`), and one per refused handshake.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogSpec {
    #[serde(default)]
    pub enabled: bool,
    /// One connection in this many is logged; 1: every one.
    #[serde(default = "default_sample_one_in")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub sample_one_in: i32,
    /// Every refused handshake is logged too, unsampled.
    #[serde(default = "default_log_refusals")]
    pub refusals: bool,
}

/// Shutdown of a gateway pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Live connections are closed 1001, spread over this period, before the pod exits.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period_seconds: i32,
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Gateway pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Gateway pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the gateway pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Where clients connect inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The serving certificate in use.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the operator renews a SelfSigned certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
}

fn positive_duration_rule() -> String {
    format!("self.matches('{DURATION_RE}') && duration(self) > duration('0s')")
}

fn renew_before_rule() -> String {
    // Unparsable durations are reported by their own field rules; only compare valid ones.
    format!(
        "!self.duration.matches('{DURATION_RE}') || !self.renewBefore.matches('{DURATION_RE}') || duration(self.renewBefore) < duration(self.duration)"
    )
}

/// TCP keepalive times: the kernel takes whole seconds up to 32767.
fn whole_seconds_rule() -> String {
    format!(
        "self.matches('{DURATION_RE}') && duration(self) >= duration('1s') && duration(self) <= duration('32767s') && duration(self).getMilliseconds() % 1000 == 0"
    )
}

fn non_negative_duration_rule() -> String {
    format!("self.matches('{DURATION_RE}')")
}

fn cidr_list_rule() -> &'static str {
    "self.all(c, isCIDR(c))"
}

fn default_replicas() -> i32 {
    2
}
fn default_listen_port() -> i32 {
    8080
}
fn default_path() -> String {
    "/".to_owned()
}
fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}
fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}
fn default_no_delay() -> bool {
    true
}
fn default_proxy_header_timeout() -> String {
    "5s".to_owned()
}
fn default_cert_duration() -> String {
    "2160h".to_owned()
}
fn default_renew_before() -> String {
    "360h".to_owned()
}
fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource::Header]
}
fn default_query_parameter() -> String {
    "access_token".to_owned()
}
fn default_sample_one_in() -> i32 {
    1
}
fn default_log_refusals() -> bool {
    true
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_leeway() -> String {
    "30s".to_owned()
}
fn default_jwks_refresh_interval() -> String {
    "5m".into()
}
fn default_jwks_min_refresh_interval() -> String {
    "30s".into()
}
fn default_max_connections() -> i32 {
    10_000
}
fn default_max_message_bytes() -> i64 {
    1 << 20
}
fn default_heartbeat_interval() -> String {
    "30s".to_owned()
}
fn default_heartbeat_timeout() -> String {
    "10s".to_owned()
}
fn default_affinity_timeout() -> i32 {
    10800
}
fn default_min_replicas() -> i32 {
    2
}
fn default_scale_down_stabilization() -> i32 {
    300
}
fn default_drain_seconds() -> i32 {
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

#[cfg(test)]
pub(crate) mod admission {
    //! What the apiserver would say about a manifest, judged by the CRD's CEL rules as kube's
    //! CEL evaluator runs them. OpenAPI bounds (`minimum`, `maxLength`, ...) are not checked.

    use kube::CustomResourceExt;
    use kube::core::cel::{CompiledSchema, Validator, apply_defaults, compile_schema};
    use serde_json::{Value, json};

    use super::WebSocketService;

    /// The CRD's `openAPIV3Schema`.
    pub fn schema() -> Value {
        let crd = serde_json::to_value(WebSocketService::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// The CRD's schema with its CEL rules compiled once, for judging many manifests.
    pub struct Admission {
        schema: Value,
        compiled: CompiledSchema,
        validator: Validator,
    }

    impl Admission {
        pub fn new() -> Self {
            let schema = schema();
            Self {
                compiled: compile_schema(&schema),
                schema,
                validator: Validator::new(),
            }
        }

        /// The CEL messages the apiserver would answer `manifest` with, after applying
        /// schema defaults.
        pub fn cel_errors(&self, manifest: &Value) -> Vec<String> {
            match self
                .validator
                .validate_compiled(&self.compiled, manifest, None)
            {
                Ok(()) => Vec::new(),
                Err(errors) => errors.iter().map(|err| err.message.clone()).collect(),
            }
        }

        /// The CEL messages the apiserver would answer an update from `old` to `new` with,
        /// transition rules (`oldSelf`) included.
        pub fn update_errors(&self, old: &Value, new: &Value) -> Vec<String> {
            let old = self.stored(old);
            match self
                .validator
                .validate_compiled(&self.compiled, new, Some(&old))
            {
                Ok(()) => Vec::new(),
                Err(errors) => errors.iter().map(|err| err.message.clone()).collect(),
            }
        }

        /// `manifest` as the apiserver stores it: schema defaults applied.
        pub fn stored(&self, manifest: &Value) -> Value {
            apply_defaults(&self.schema, manifest)
        }
    }

    /// The CEL messages the apiserver would answer `manifest` with.
    pub fn cel_errors(manifest: &Value) -> Vec<String> {
        Admission::new().cel_errors(manifest)
    }

    /// A manifest of WebSocketService `team-a/chat` with `spec`.
    pub fn with_spec(spec: Value) -> Value {
        json!({"apiVersion": "wsfleet.io/v1alpha1", "kind": "WebSocketService",
               "metadata": {"name": "chat", "namespace": "team-a"}, "spec": spec})
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::admission::{cel_errors, schema, with_spec};
    use super::*;

    fn service_upstream() -> Value {
        json!({"service": "chat-backend", "port": 8080})
    }

    fn refused_with(spec: Value, message: &str) {
        let errors = cel_errors(&with_spec(spec.clone()));
        assert!(
            errors.iter().any(|err| err.contains(message)),
            "expected {message:?} for {spec}, got {errors:?}"
        );
    }

    #[test]
    fn every_example_is_accepted_and_parses() {
        let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let manifest: Value = serde_yaml::from_str(&text).unwrap();
            assert_eq!(
                cel_errors(&manifest),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
            let _: WebSocketService = serde_yaml::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            seen += 1;
        }
        assert!(seen >= 4);
    }

    #[test]
    fn upstream_needs_exactly_one_of_service_and_url() {
        refused_with(
            json!({"upstream": {}}),
            "exactly one of upstream.service or upstream.url",
        );
        refused_with(
            json!({"upstream": {"service": "b", "port": 1, "url": "ws://b:1/"}}),
            "exactly one of upstream.service or upstream.url",
        );
        refused_with(
            json!({"upstream": {"service": "b"}}),
            "upstream.port is required",
        );
        refused_with(
            json!({"upstream": {"url": "ws://b:1/", "port": 80}}),
            "apply only to upstream.service",
        );
    }

    #[test]
    fn upstream_url_must_be_websocket() {
        refused_with(
            json!({"upstream": {"url": "http://b:1/"}}),
            "upstream.url must be ws://",
        );
        refused_with(
            json!({"upstream": {"url": "ws://"}}),
            "upstream.url must be ws://",
        );
        assert!(
            cel_errors(&with_spec(
                json!({"upstream": {"url": "wss://b.example:443/x"}})
            ))
            .is_empty()
        );
    }

    #[test]
    fn paths_start_with_a_slash() {
        refused_with(
            json!({"upstream": {"service": "b", "port": 1, "path": "ws"}}),
            "upstream.path must start with '/'",
        );
        refused_with(
            json!({"upstream": service_upstream(), "listen": {"path": "ws"}}),
            "listen.path must start with '/'",
        );
    }

    #[test]
    fn listen_path_has_no_dot_segments_nor_encoded_separators() {
        for path in [
            "/ws/..",
            "/ws/./x",
            "/%2E%2e/x",
            "/ws%2fx",
            "/ws%5Cx",
            "/ws\\x",
        ] {
            refused_with(
                json!({"upstream": service_upstream(), "listen": {"path": path}}),
                "listen.path must not hold '.' or '..' segments",
            );
        }
        for path in ["/", "/ws", "/ws/.well-known", "/a..b/..."] {
            let spec = json!({"upstream": service_upstream(), "listen": {"path": path}});
            assert_eq!(cel_errors(&with_spec(spec)), Vec::<String>::new(), "{path}");
        }
    }

    #[test]
    fn utf8_validation_needs_compression_disabled() {
        refused_with(
            json!({"upstream": service_upstream(), "validation": {"utf8": true}}),
            "validation.utf8 needs compression: Disabled",
        );
        for spec in [
            json!({"upstream": service_upstream(), "validation": {"utf8": true}, "compression": "Disabled"}),
            json!({"upstream": service_upstream(), "validation": {"utf8": false}}),
            json!({"upstream": service_upstream(), "validation": {}}),
        ] {
            assert_eq!(
                cel_errors(&with_spec(spec.clone())),
                Vec::<String>::new(),
                "{spec}"
            );
        }
    }

    #[test]
    fn allowed_subprotocols_are_tokens_and_not_token_carriers() {
        for bad in ["chat v2", "bearer.x", "a,b"] {
            refused_with(
                json!({"upstream": service_upstream(), "validation": {"allowedSubprotocols": ["chat", bad]}}),
                "validation.allowedSubprotocols entries must be HTTP tokens",
            );
        }
        let spec = json!({"upstream": service_upstream(), "validation": {"allowedSubprotocols": ["chat.v2", "mqtt", "x'y"]}});
        assert_eq!(cel_errors(&with_spec(spec)), Vec::<String>::new());
    }

    #[test]
    fn listen_port_cannot_take_the_metrics_port() {
        refused_with(
            json!({"upstream": service_upstream(), "listen": {"port": 9090}}),
            "listen.port must not be 9090",
        );
    }

    #[test]
    fn secret_mode_needs_a_secret_name() {
        refused_with(
            json!({"upstream": service_upstream(), "tls": {"mode": "Secret"}}),
            "tls.secretName is required when tls.mode is Secret",
        );
        assert!(
            cel_errors(&with_spec(
                json!({"upstream": service_upstream(), "tls": {}})
            ))
            .is_empty()
        );
    }

    #[test]
    fn tls_durations_parse_are_positive_and_ordered() {
        for (tls, message) in [
            (
                json!({"duration": "90 days"}),
                "tls.duration must be a positive duration",
            ),
            (
                json!({"duration": "0s", "renewBefore": "0h"}),
                "tls.duration must be a positive duration",
            ),
            (
                json!({"renewBefore": "-1h"}),
                "tls.renewBefore must be a positive duration",
            ),
            (
                json!({"duration": "24h", "renewBefore": "48h"}),
                "tls.renewBefore must be shorter than tls.duration",
            ),
            (
                json!({"duration": "24h", "renewBefore": "24h"}),
                "tls.renewBefore must be shorter than tls.duration",
            ),
            (
                json!({"dnsNames": ["Chat.Example.com"]}),
                "tls.dnsNames entries must be lowercase DNS names",
            ),
        ] {
            refused_with(json!({"upstream": service_upstream(), "tls": tls}), message);
        }
        let fine =
            json!({"duration": "1h30m", "renewBefore": "30m", "dnsNames": ["*.example.com"]});
        assert!(
            cel_errors(&with_spec(
                json!({"upstream": service_upstream(), "tls": fine})
            ))
            .is_empty()
        );
    }

    #[test]
    fn connections_per_subject_needs_jwt() {
        let message = "limits.connectionsPerSubject needs auth.jwt";
        refused_with(
            json!({"upstream": service_upstream(), "limits": {"connectionsPerSubject": 3}}),
            message,
        );
        refused_with(
            json!({"upstream": service_upstream(), "limits": {"connectionsPerSubject": 3},
                   "auth": {"allowedOrigins": ["https://chat.example.com"]}}),
            message,
        );
        let jwt = json!({"algorithms": ["HS256"], "keySecretRef": {"name": "k", "key": "key"}, "subjectClaim": "user_id"});
        for spec in [
            json!({"upstream": service_upstream(), "limits": {"connectionsPerSubject": 3}, "auth": {"jwt": jwt}}),
            json!({"upstream": service_upstream(), "limits": {"maxConnections": 10}}),
            json!({"upstream": service_upstream()}),
        ] {
            assert_eq!(
                cel_errors(&with_spec(spec.clone())),
                Vec::<String>::new(),
                "{spec}"
            );
        }
        let limits = &schema()["properties"]["spec"]["properties"]["limits"]["properties"];
        assert_eq!(limits["connectionsPerSubject"]["minimum"], json!(1.0));
    }

    #[test]
    fn the_access_log_takes_defaults_and_samples_at_least_one_in_one() {
        let admission = super::admission::Admission::new();
        let manifest =
            with_spec(json!({"upstream": service_upstream(), "accessLog": {"enabled": true}}));
        assert_eq!(admission.cel_errors(&manifest), Vec::<String>::new());
        let stored = admission.stored(&manifest);
        assert_eq!(
            stored["spec"]["accessLog"],
            json!({"enabled": true, "sampleOneIn": 1, "refusals": true})
        );
        let access_log = &schema()["properties"]["spec"]["properties"]["accessLog"]["properties"];
        assert_eq!(access_log["sampleOneIn"]["minimum"], json!(1.0));
    }

    #[test]
    fn heartbeat_durations_must_be_positive() {
        refused_with(
            json!({"upstream": service_upstream(), "heartbeat": {"interval": "0s"}}),
            "heartbeat.interval must be a positive duration",
        );
        refused_with(
            json!({"upstream": service_upstream(), "heartbeat": {"timeout": "soon"}}),
            "heartbeat.timeout must be a positive duration",
        );
    }

    #[test]
    fn durations_are_whole_milliseconds() {
        let jwt = |leeway: &str| json!({"algorithms": ["HS256"], "keySecretRef": {"name": "k", "key": "key"}, "leeway": leeway});
        for (spec, message) in [
            (
                json!({"heartbeat": {"interval": "500us"}}),
                "heartbeat.interval must be a positive duration in h, m, s or ms",
            ),
            (
                json!({"heartbeat": {"timeout": "1s1500us"}}),
                "heartbeat.timeout must be a positive duration in h, m, s or ms",
            ),
            (
                json!({"auth": {"jwt": jwt("1000000ns")}}),
                "auth.jwt.leeway must be a duration in h, m, s or ms",
            ),
            (
                json!({"tls": {"renewBefore": "360h1us"}}),
                "tls.renewBefore must be a positive duration in h, m, s or ms",
            ),
        ] {
            let mut spec = spec;
            spec["upstream"] = service_upstream();
            refused_with(spec, message);
        }
        let fine = json!({"upstream": service_upstream(), "heartbeat": {"interval": "1s500ms", "timeout": "1ms"},
                          "auth": {"jwt": jwt("0s")}});
        assert_eq!(cel_errors(&with_spec(fine)), Vec::<String>::new());
    }

    #[test]
    fn upstream_service_is_a_service_name() {
        for name in ["/", "Chat", "chat.backend", "-chat", "1chat", "chat-"] {
            refused_with(
                json!({"upstream": {"service": name, "port": 80}}),
                "upstream.service must be a Service name",
            );
        }
        for name in ["c", "chat-backend", "b2"] {
            let spec = json!({"upstream": {"service": name, "port": 80}});
            assert_eq!(cel_errors(&with_spec(spec)), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn cidrs_must_be_well_formed() {
        for (field, message) in [
            ("ipAllow", "auth.ipAllow entries must be CIDRs"),
            ("ipDeny", "auth.ipDeny entries must be CIDRs"),
            (
                "trustedProxies",
                "auth.trustedProxies entries must be CIDRs",
            ),
        ] {
            refused_with(
                json!({"upstream": service_upstream(), "auth": {field: ["10.0.0.0/33"]}}),
                message,
            );
            refused_with(
                json!({"upstream": service_upstream(), "auth": {field: ["not-a-network"]}}),
                message,
            );
        }
        let fine = json!({"ipAllow": ["10.0.0.0/8", "2001:db8::/32"]});
        assert!(
            cel_errors(&with_spec(
                json!({"upstream": service_upstream(), "auth": fine})
            ))
            .is_empty()
        );
    }

    #[test]
    fn proxy_protocol_needs_cidrs_and_a_positive_timeout() {
        let listen = |proxy_protocol: Value| json!({"upstream": service_upstream(), "listen": {"proxyProtocol": proxy_protocol}});
        refused_with(
            listen(json!({"trustedProxies": ["10.0.0.0/33"]})),
            "listen.proxyProtocol.trustedProxies entries must be CIDRs",
        );
        refused_with(
            listen(json!({"trustedProxies": ["10.0.0.0/8"], "headerTimeout": "0s"})),
            "listen.proxyProtocol.headerTimeout must be a positive duration",
        );
        assert_eq!(
            cel_errors(&with_spec(listen(
                json!({"trustedProxies": ["10.0.0.0/8", "fd00::/8"], "headerTimeout": "2s"})
            ))),
            Vec::<String>::new()
        );
        let schema = schema();
        let proxy_protocol =
            &schema["properties"]["spec"]["properties"]["listen"]["properties"]["proxyProtocol"];
        assert_eq!(proxy_protocol["required"], json!(["trustedProxies"]));
        assert_eq!(
            proxy_protocol["properties"]["trustedProxies"]["minItems"],
            1
        );
    }

    #[test]
    fn service_fields_fit_the_service_type() {
        let service = |service: Value| json!({"upstream": service_upstream(), "service": service});
        for (fields, message) in [
            (
                json!({"externalTrafficPolicy": "Local"}),
                "service.externalTrafficPolicy applies only to service.type NodePort or LoadBalancer",
            ),
            (
                json!({"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]}),
                "service.loadBalancerSourceRanges applies only to service.type LoadBalancer",
            ),
            (
                json!({"type": "NodePort", "loadBalancerClass": "service.k8s.aws/nlb"}),
                "service.loadBalancerClass applies only to service.type LoadBalancer",
            ),
            (
                json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.1"]}),
                "service.loadBalancerSourceRanges entries must be CIDRs",
            ),
        ] {
            refused_with(service(fields), message);
        }
        let fine = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                          "loadBalancerSourceRanges": ["203.0.113.0/24"], "loadBalancerClass": "service.k8s.aws/nlb",
                          "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"}});
        assert_eq!(cel_errors(&with_spec(service(fine))), Vec::<String>::new());
        let node_port = json!({"type": "NodePort", "externalTrafficPolicy": "Cluster"});
        assert_eq!(
            cel_errors(&with_spec(service(node_port))),
            Vec::<String>::new()
        );
        assert_eq!(
            schema()["properties"]["spec"]["properties"]["service"]["properties"]["type"]["enum"],
            json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
    }

    #[test]
    fn load_balancer_class_is_fixed_while_the_type_stays_load_balancer() {
        let manifest =
            |service: Value| with_spec(json!({"upstream": service_upstream(), "service": service}));
        let nlb =
            manifest(json!({"type": "LoadBalancer", "loadBalancerClass": "service.k8s.aws/nlb"}));
        let plain_lb = manifest(json!({"type": "LoadBalancer"}));
        let other_class =
            manifest(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}));
        let cluster_ip = manifest(json!({}));
        let admission = super::admission::Admission::new();
        let message = "service.loadBalancerClass cannot be set, changed or removed";
        for (old, new) in [(&nlb, &other_class), (&nlb, &plain_lb), (&plain_lb, &nlb)] {
            let errors = admission.update_errors(old, new);
            assert!(
                errors.iter().any(|err| err.contains(message)),
                "{old} -> {new}: {errors:?}"
            );
        }
        // Unchanged, or with a type change on either side, Kubernetes allows it.
        for (old, new) in [(&nlb, &nlb), (&cluster_ip, &nlb), (&nlb, &cluster_ip)] {
            assert_eq!(
                admission.update_errors(old, new),
                Vec::<String>::new(),
                "{old} -> {new}"
            );
        }
        assert_eq!(
            cel_errors(&nlb),
            Vec::<String>::new(),
            "a create has no old class"
        );
    }

    #[test]
    fn keepalive_times_are_whole_seconds_in_range() {
        let keepalive = |idle: &str, interval: &str| json!({"upstream": service_upstream(), "tcp": {"keepalive": {"idle": idle, "interval": interval, "count": 5}}});
        refused_with(
            keepalive("1500ms", "10s"),
            "tcp.keepalive.idle must be whole seconds",
        );
        refused_with(
            keepalive("0s", "10s"),
            "tcp.keepalive.idle must be whole seconds",
        );
        refused_with(
            keepalive("60s", "10h"),
            "tcp.keepalive.interval must be whole seconds",
        );
        assert_eq!(
            cel_errors(&with_spec(keepalive("2m", "10s"))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn origins_are_bare_scheme_and_host() {
        refused_with(
            json!({"upstream": service_upstream(), "auth": {"allowedOrigins": ["https://a.example/"]}}),
            "auth.allowedOrigins entries must be scheme://host[:port]",
        );
    }

    #[test]
    fn jwt_algorithms_share_one_key_type() {
        let jwt = |algorithms: Value| {
            json!({"upstream": service_upstream(), "auth": {"jwt": {
                "algorithms": algorithms, "keySecretRef": {"name": "k", "key": "key"}}}})
        };
        refused_with(
            jwt(json!(["HS256", "RS256"])),
            "auth.jwt.algorithms must all use one key type",
        );
        assert!(cel_errors(&with_spec(jwt(json!(["RS256", "PS512"])))).is_empty());
    }

    #[test]
    fn jwt_keys_come_from_a_secret_or_a_provider() {
        let jwt = |fields: Value| {
            let mut jwt = json!({"algorithms": ["RS256"]});
            jwt.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            json!({"upstream": service_upstream(), "auth": {"jwt": jwt}})
        };
        let secret = json!({"name": "k", "key": "key"});
        refused_with(
            jwt(json!({})),
            "auth.jwt must set exactly one of keySecretRef and jwks",
        );
        refused_with(
            jwt(json!({"keySecretRef": secret, "jwks": {"url": "https://id.example/keys"}})),
            "auth.jwt must set exactly one of keySecretRef and jwks",
        );
        refused_with(
            jwt(json!({"jwks": {"url": "https://id.example/keys", "discovery": true}})),
            "auth.jwt.jwks must set exactly one of url and discovery: true",
        );
        refused_with(
            jwt(json!({"jwks": {}})),
            "auth.jwt.jwks must set exactly one of url and discovery: true",
        );
        refused_with(
            jwt(json!({"jwks": {"url": "ftp://id.example/keys"}})),
            "auth.jwt.jwks.url must be an http:// or https:// URL",
        );
        refused_with(
            jwt(json!({"jwks": {"discovery": true}})),
            "auth.jwt.issuer must be set with auth.jwt.jwks.discovery",
        );
        refused_with(
            jwt(json!({"jwks": {"url": "https://id.example/keys", "refreshInterval": "0s"}})),
            "auth.jwt.jwks.refreshInterval must be a positive duration",
        );
        let mut hmac = jwt(json!({"jwks": {"url": "https://id.example/keys"}}));
        hmac["auth"]["jwt"]["algorithms"] = json!(["HS256"]);
        refused_with(
            hmac,
            "auth.jwt.algorithms must be RSA or EC algorithms with auth.jwt.jwks",
        );
        for accepted in [
            jwt(json!({"keySecretRef": secret})),
            jwt(
                json!({"jwks": {"url": "http://keycloak.auth.svc:8080/realms/chat/protocol/openid-connect/certs"}}),
            ),
            jwt(
                json!({"issuer": "https://id.example", "jwks": {"discovery": true,
                "caSecretRef": {"name": "id-ca", "key": "ca.crt"}, "refreshInterval": "10m"}}),
            ),
        ] {
            assert!(
                cel_errors(&with_spec(accepted.clone())).is_empty(),
                "{accepted}"
            );
        }
    }

    #[test]
    fn burst_must_cover_the_rate() {
        refused_with(
            json!({"upstream": service_upstream(), "limits": {"connectionsPerIP": {"perSecond": 10, "burst": 5}}}),
            "burst must be at least perSecond",
        );
        refused_with(
            json!({"upstream": service_upstream(), "limits": {"messagesPerConnection": {"perSecond": 10, "burst": 9}}}),
            "burst must be at least perSecond",
        );
    }

    #[test]
    fn autoscaling_bounds_are_ordered_and_need_a_target() {
        refused_with(
            json!({"upstream": service_upstream(), "autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilization": 50}}),
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        );
        refused_with(
            json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4}}),
            "autoscaling needs targetConnectionsPerPod, targetCPUUtilization or targetMemoryUtilization",
        );
        assert!(
            cel_errors(&with_spec(
                json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetMemoryUtilization": 80}})
            ))
            .is_empty()
        );
    }

    #[test]
    fn keda_needs_a_connection_target_and_a_prometheus_url() {
        let keda = |address: &str| json!({"prometheus": {"serverAddress": address}});
        refused_with(
            json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetCPUUtilization": 50, "keda": keda("http://prometheus:9090")}}),
            "autoscaling.keda needs autoscaling.targetConnectionsPerPod",
        );
        for address in [
            "prometheus:9090",
            "ftp://prometheus",
            "http://",
            "http:///x",
        ] {
            refused_with(
                json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetConnectionsPerPod": 50, "keda": keda(address)}}),
                "autoscaling.keda.prometheus.serverAddress must be http://host",
            );
        }
        let fine = json!({"upstream": service_upstream(), "autoscaling": {"maxReplicas": 4, "targetConnectionsPerPod": 50,
                          "keda": {"prometheus": {"serverAddress": "https://prometheus.monitoring.svc:9090/prom", "query": "sum(x)"}}}});
        assert_eq!(cel_errors(&with_spec(fine)), Vec::<String>::new());
        let keda =
            &schema()["properties"]["spec"]["properties"]["autoscaling"]["properties"]["keda"];
        assert_eq!(keda["required"], json!(["prometheus"]));
        assert_eq!(
            keda["properties"]["prometheus"]["required"],
            json!(["serverAddress"])
        );
    }

    #[test]
    fn openapi_bounds_and_closed_enums_are_in_the_schema() {
        let spec = &schema()["properties"]["spec"]["properties"];
        assert_eq!(spec["listen"]["properties"]["port"]["minimum"], 1024.0);
        assert_eq!(spec["listen"]["properties"]["port"]["maximum"], 65535.0);
        assert_eq!(spec["upstream"]["properties"]["port"]["maximum"], 65535.0);
        let max_message = &spec["limits"]["properties"]["maxMessageBytes"];
        assert_eq!(
            (
                max_message["minimum"].clone(),
                max_message["maximum"].clone()
            ),
            (json!(125.0), json!(1073741824.0))
        );
        assert_eq!(
            spec["limits"]["properties"]["connectionsPerIP"]["properties"]["perSecond"]["minimum"],
            1.0
        );
        assert_eq!(
            spec["tls"]["properties"]["mode"]["enum"],
            json!(["SelfSigned", "Secret", "CertManager"])
        );
        assert_eq!(
            spec["compression"]["enum"],
            json!(["Passthrough", "Disabled"])
        );
        let affinity = &spec["sessionAffinity"]["properties"];
        assert_eq!(affinity["type"]["enum"].as_array().unwrap().len(), 2);
        assert_eq!(affinity["timeoutSeconds"]["maximum"], 86400.0);
        let algorithms =
            &spec["auth"]["properties"]["jwt"]["properties"]["algorithms"]["items"]["enum"];
        assert!(!algorithms.as_array().unwrap().contains(&json!("none")));
        assert_eq!(
            spec["drain"]["properties"]["gracePeriodSeconds"]["maximum"],
            3600.0
        );
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let schema = schema();
        let defaulted = kube::core::cel::apply_defaults(
            &schema,
            &with_spec(
                json!({"upstream": service_upstream(), "tls": {}, "autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 60}}),
            ),
        );
        let wss: WebSocketService = serde_json::from_value(defaulted).unwrap();
        let spec = wss.spec;
        assert_eq!(spec.replicas, 2);
        assert_eq!(
            spec.listen,
            ListenSpec {
                port: 8080,
                path: "/".into(),
                proxy_protocol: None,
            }
        );
        assert_eq!(spec.limits, LimitsSpec::default());
        assert_eq!(spec.heartbeat, HeartbeatSpec::default());
        assert_eq!(spec.session_affinity.type_, AffinityType::ClientIP);
        assert_eq!(spec.session_affinity.timeout_seconds, 10800);
        assert_eq!(spec.drain.grace_period_seconds, 60);
        let tls = spec.tls.unwrap();
        assert_eq!(
            (tls.mode, tls.duration.as_str(), tls.renew_before.as_str()),
            (TlsMode::SelfSigned, "2160h", "360h")
        );
        let autoscaling = spec.autoscaling.unwrap();
        assert_eq!(
            (
                autoscaling.min_replicas,
                autoscaling.scale_down_stabilization_seconds
            ),
            (2, 300)
        );
    }

    #[test]
    fn conditions_are_a_list_map_keyed_by_type() {
        let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }
}
