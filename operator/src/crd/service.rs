//! How the fleet is exposed: the Service, session affinity and TCP settings.

use super::*;

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
    /// Connections the kernel queues on each gateway's client listener until the gateway
    /// accepts them (capped by the pod's `net.core.somaxconn`); absent: 4096. A reconnect storm
    /// that overflows the queue costs every dropped client a one-second retransmit. A change
    /// reaches running gateways without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_backlog: Option<i32>,
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
