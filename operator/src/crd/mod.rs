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

#[cfg(test)]
pub(crate) mod admission;
mod auth;
mod defaults;
mod edge;
mod operations;
mod service;
#[cfg(test)]
mod tests;
mod traffic;

pub use auth::*;
use defaults::*;
pub use edge::*;
pub use operations::*;
pub use service::*;
pub use traffic::*;

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
