//! Running the fleet: autoscaling (the operator's HPA or KEDA), draining and the access log.

use super::*;

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
