//! HorizontalPodAutoscaler `<name>-gateway` (autoscaling/v2), present only with `spec.autoscaling`.
//! Scaling down closes live WebSocket connections, so it is slow and stabilised; scaling up is not.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::child_metadata;
use crate::crd::AutoscalingSpec;
use crate::plan::Plan;

/// The per-pod gauge the gateway exports; a metrics adapter serves it to the HPA.
pub use wsfleet_config::metric_names::ACTIVE_CONNECTIONS as CONNECTIONS_METRIC;
/// At most this many pods are removed per [`SCALE_DOWN_PERIOD_SECONDS`].
const SCALE_DOWN_PODS: i32 = 1;
const SCALE_DOWN_PERIOD_SECONDS: i32 = 60;

pub fn autoscaler(
    plan: &Plan,
    autoscaling: &AutoscalingSpec,
    owner: &OwnerReference,
) -> HorizontalPodAutoscaler {
    let names = &plan.names;
    let mut metrics = Vec::new();
    if let Some(connections) = autoscaling.target_connections_per_pod {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: CONNECTIONS_METRIC.to_owned(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(canonical_count(connections))),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    for (resource, utilization) in resource_targets(autoscaling) {
        metrics.push(MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: resource.to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(utilization),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    HorizontalPodAutoscaler {
        metadata: child_metadata(names, names.gateway(), owner),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: names.gateway(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: Some(behavior(autoscaling)),
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

/// The CPU and memory utilization targets the spec sets: `(resource name, percent)`.
pub fn resource_targets(autoscaling: &AutoscalingSpec) -> Vec<(&'static str, i32)> {
    [
        ("cpu", autoscaling.target_cpu_utilization),
        ("memory", autoscaling.target_memory_utilization),
    ]
    .into_iter()
    .filter_map(|(name, target)| target.map(|percent| (name, percent)))
    .collect()
}

/// Scale-down after the stabilization window, one pod per minute; scale-up as fast as the
/// HPA's defaults allow. The same for the operator's HPA and for the one KEDA makes.
pub fn behavior(autoscaling: &AutoscalingSpec) -> HorizontalPodAutoscalerBehavior {
    HorizontalPodAutoscalerBehavior {
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(autoscaling.scale_down_stabilization_seconds),
            select_policy: Some("Min".to_owned()),
            policies: Some(vec![HPAScalingPolicy {
                type_: "Pods".to_owned(),
                value: SCALE_DOWN_PODS,
                period_seconds: SCALE_DOWN_PERIOD_SECONDS,
            }]),
            ..HPAScalingRules::default()
        }),
        scale_up: None,
    }
}

/// `count` in the canonical quantity form the apiserver stores (`1000` is kept as `1k`), so the
/// stored HPA equals the desired one and nothing is re-applied.
fn canonical_count(count: i32) -> String {
    let mut mantissa = i64::from(count);
    let mut suffixes = ["", "k", "M", "G"].iter().peekable();
    let mut suffix = suffixes.next().expect("non-empty");
    while mantissa != 0 && mantissa % 1000 == 0 && suffixes.peek().is_some() {
        mantissa /= 1000;
        suffix = suffixes.next().expect("peeked");
    }
    format!("{mantissa}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};

    fn build(file: &str) -> HorizontalPodAutoscalerSpec {
        let wss = example(file);
        let hpa = autoscaler(
            &plan_of(&wss),
            wss.spec.autoscaling.as_ref().unwrap(),
            &owner(&wss),
        );
        assert_eq!(
            hpa.metadata.name.as_deref(),
            Some(format!("{}-gateway", wss.metadata.name.unwrap()).as_str())
        );
        assert_eq!(hpa.metadata.labels.as_ref().unwrap().len(), 4);
        hpa.spec.unwrap()
    }

    #[test]
    fn connections_target_is_a_pods_average_value() {
        let spec = build("production.yaml");
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "chat-prod-gateway");
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("apps/v1")
        );
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 20));
        let metrics = spec.metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        let pods = metrics[0].pods.as_ref().unwrap();
        assert_eq!(metrics[0].type_, "Pods");
        assert_eq!(pods.metric.name, "wsfleet_gateway_active_connections");
        assert_eq!(pods.target.type_, "AverageValue");
        assert_eq!(pods.target.average_value, Some(Quantity("1k".to_owned())));
        let down = spec.behavior.unwrap().scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(600));
        let policy = &down.policies.unwrap()[0];
        assert_eq!(
            (policy.type_.as_str(), policy.value, policy.period_seconds),
            ("Pods", 1, 60)
        );
    }

    #[test]
    fn cpu_target_is_a_resource_utilization() {
        let spec = build("hpa-cpu.yaml");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
        let metrics = spec.metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        let resource = metrics[0].resource.as_ref().unwrap();
        assert_eq!(
            (metrics[0].type_.as_str(), resource.name.as_str()),
            ("Resource", "cpu")
        );
        assert_eq!(resource.target.type_, "Utilization");
        assert_eq!(resource.target.average_utilization, Some(70));
        let down = spec.behavior.unwrap().scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(300));
    }

    #[test]
    fn memory_target_is_a_resource_utilization_beside_cpu() {
        let mut wss = example("hpa-cpu.yaml");
        wss.spec
            .autoscaling
            .as_mut()
            .unwrap()
            .target_memory_utilization = Some(80);
        let hpa = autoscaler(
            &plan_of(&wss),
            wss.spec.autoscaling.as_ref().unwrap(),
            &owner(&wss),
        );
        let metrics = hpa.spec.unwrap().metrics.unwrap();
        let targets: Vec<_> = metrics
            .iter()
            .map(|metric| {
                let resource = metric.resource.as_ref().unwrap();
                (
                    resource.name.as_str(),
                    resource.target.type_.as_str(),
                    resource.target.average_utilization,
                )
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("cpu", "Utilization", Some(70)),
                ("memory", "Utilization", Some(80))
            ]
        );
    }

    #[test]
    fn counts_take_the_canonical_quantity_form() {
        let cases = [
            (1, "1"),
            (999, "999"),
            (1000, "1k"),
            (1500, "1500"),
            (15000, "15k"),
            (2_000_000, "2M"),
        ];
        for (count, text) in cases {
            assert_eq!(canonical_count(count), text, "{count}");
        }
    }
}
