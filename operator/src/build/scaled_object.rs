//! KEDA ScaledObject `<name>-gateway` (keda.sh/v1alpha1), present only with
//! `spec.autoscaling.keda`. KEDA then makes and owns the HorizontalPodAutoscaler
//! (`keda-hpa-<name>-gateway`); the operator's own HPA is removed.
//!
//! Only the fields the operator sets are modelled: an observed ScaledObject parses into this
//! type with KEDA's additions (status, defaults) ignored, and the apply step compares the rest.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::autoscaler::{CONNECTIONS_METRIC, behavior, resource_targets};
use super::child_metadata;
use crate::crd::{AutoscalingSpec, KedaSpec};
use crate::plan::Plan;

/// The part of KEDA's ScaledObject spec that the operator writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Advanced>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
}

/// What KEDA scales.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
}

/// Settings KEDA copies into the HPA it makes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// One scaler: its type, how its value is compared, and its settings (all strings in KEDA).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The ScaledObject for `autoscaling` with `keda` set.
pub fn scaled_object(
    plan: &Plan,
    autoscaling: &AutoscalingSpec,
    keda: &KedaSpec,
    owner: &OwnerReference,
) -> ScaledObject {
    let names = &plan.names;
    let mut triggers = Vec::new();
    if let Some(connections) = autoscaling.target_connections_per_pod {
        let query = keda
            .prometheus
            .query
            .clone()
            .unwrap_or_else(|| default_query(&names.namespace, &names.service()));
        triggers.push(Trigger {
            type_: "prometheus".to_owned(),
            // The query is the fleet's total; KEDA's HPA divides it by the pod count.
            metric_type: Some("AverageValue".to_owned()),
            metadata: BTreeMap::from([
                (
                    "serverAddress".to_owned(),
                    keda.prometheus.server_address.clone(),
                ),
                ("query".to_owned(), query),
                ("threshold".to_owned(), connections.to_string()),
            ]),
        });
    }
    for (resource, utilization) in resource_targets(autoscaling) {
        triggers.push(Trigger {
            type_: resource.to_owned(),
            metric_type: Some("Utilization".to_owned()),
            metadata: BTreeMap::from([("value".to_owned(), utilization.to_string())]),
        });
    }
    let spec = ScaledObjectSpec {
        scale_target_ref: ScaleTargetRef {
            api_version: Some("apps/v1".to_owned()),
            kind: Some("Deployment".to_owned()),
            name: names.gateway(),
        },
        min_replica_count: Some(autoscaling.min_replicas),
        max_replica_count: Some(autoscaling.max_replicas),
        advanced: Some(Advanced {
            horizontal_pod_autoscaler_config: Some(HorizontalPodAutoscalerConfig {
                behavior: Some(behavior(autoscaling)),
            }),
        }),
        triggers,
    };
    ScaledObject {
        metadata: child_metadata(names, names.gateway(), owner),
        spec,
    }
}

/// The fleet's live connections as the chart's ServiceMonitor labels them: `namespace` and
/// `service` (the Service, named after the WebSocketService).
pub fn default_query(namespace: &str, service: &str) -> String {
    format!(r#"sum({CONNECTIONS_METRIC}{{namespace="{namespace}",service="{service}"}})"#)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::{owner, plan_of, wss};

    const KEDA_FLEET: &str = "metadata: {name: chat}
spec:
  upstream: {url: 'ws://b:1/'}
  autoscaling:
    minReplicas: 1
    maxReplicas: 4
    targetConnectionsPerPod: 50
    targetCPUUtilization: 70
    targetMemoryUtilization: 80
    scaleDownStabilizationSeconds: 30
    keda:
      prometheus: {serverAddress: 'http://prometheus.monitoring:9090'}
";

    fn build(manifest: &str) -> ScaledObject {
        let wss = wss(manifest);
        let autoscaling = wss.spec.autoscaling.as_ref().unwrap();
        scaled_object(
            &plan_of(&wss),
            autoscaling,
            autoscaling.keda.as_ref().unwrap(),
            &owner(&wss),
        )
    }

    #[test]
    fn the_scaled_object_targets_the_gateway_deployment_with_three_triggers() {
        let object = build(KEDA_FLEET);
        let value = serde_json::to_value(&object).unwrap();
        assert_eq!(value["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(value["kind"], "ScaledObject");
        assert_eq!(value["metadata"]["name"], "chat-gateway");
        assert_eq!(value["metadata"]["namespace"], "team-a");
        assert_eq!(
            value["metadata"]["ownerReferences"][0]["kind"],
            "WebSocketService"
        );
        assert_eq!(
            value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "wsfleet-operator"
        );
        assert_eq!(
            value["spec"],
            json!({
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-gateway"},
                "minReplicaCount": 1,
                "maxReplicaCount": 4,
                "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                    "stabilizationWindowSeconds": 30,
                    "selectPolicy": "Min",
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }}}},
                "triggers": [
                    {"type": "prometheus", "metricType": "AverageValue", "metadata": {
                        "serverAddress": "http://prometheus.monitoring:9090",
                        "query": r#"sum(wsfleet_gateway_active_connections{namespace="team-a",service="chat"})"#,
                        "threshold": "50",
                    }},
                    {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}},
                    {"type": "memory", "metricType": "Utilization", "metadata": {"value": "80"}},
                ],
            })
        );
    }

    #[test]
    fn the_behavior_is_the_operators_own_hpa_behavior() {
        let wss = wss(KEDA_FLEET);
        let autoscaling = wss.spec.autoscaling.as_ref().unwrap();
        let hpa = crate::build::autoscaler::autoscaler(&plan_of(&wss), autoscaling, &owner(&wss));
        let object = build(KEDA_FLEET);
        assert_eq!(
            object
                .spec
                .advanced
                .unwrap()
                .horizontal_pod_autoscaler_config
                .unwrap()
                .behavior,
            hpa.spec.unwrap().behavior
        );
    }

    #[test]
    fn a_query_of_the_users_replaces_the_default() {
        let manifest = KEDA_FLEET.replace(
            "{serverAddress: 'http://prometheus.monitoring:9090'}",
            "{serverAddress: 'http://p:9090', query: 'sum(my_connections)'}",
        );
        let object = build(&manifest);
        let prometheus = &object.spec.triggers[0];
        assert_eq!(prometheus.metadata["query"], "sum(my_connections)");
        assert_eq!(prometheus.metadata["serverAddress"], "http://p:9090");
    }

    #[test]
    fn a_stored_scaled_object_with_keda_additions_parses() {
        let stored = json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "chat-gateway", "namespace": "team-a",
                         "finalizers": ["finalizer.keda.sh"], "labels": {"scaledobject.keda.sh/name": "chat-gateway"}},
            "spec": {"scaleTargetRef": {"name": "chat-gateway"}, "pollingInterval": 30,
                     "triggers": [{"type": "prometheus", "metadata": {"threshold": "50"}, "useCachedMetrics": false}]},
            "status": {"hpaName": "keda-hpa-chat-gateway", "conditions": [{"type": "Ready", "status": "True"}]},
        });
        let object: ScaledObject = serde_json::from_value(stored).unwrap();
        assert_eq!(object.spec.triggers[0].metadata["threshold"], "50");
    }
}
