//! Where clients connect and where the gateway forwards: the upstream, the listener, PROXY
//! protocol and TLS.

use super::*;

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
