//! Who may connect: tokens, keys from an identity provider, origins and addresses.

use super::*;

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
