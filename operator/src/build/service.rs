//! Service `<name>`: the fleet's stable address, sticky per client IP when asked, and exposed
//! as `spec.service` says. Only the fields the operator sets are applied, so a change of type
//! patches the Service in place and the apiserver keeps its clusterIP.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::child_metadata;
use super::deployment::listen_port_name;
use crate::crd::{AffinityType, ExternalTrafficPolicy, ServiceType, WebSocketServiceSpec};
use crate::names::METRICS_PORT;
use crate::plan::Plan;

pub fn service(plan: &Plan, spec: &WebSocketServiceSpec, owner: &OwnerReference) -> Service {
    let names = &plan.names;
    let port_name = listen_port_name(plan);
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    let affinity = &spec.session_affinity;
    let sticky = affinity.type_ == AffinityType::ClientIP;
    let exposure = &spec.service;
    let mut metadata = child_metadata(names, names.service(), owner);
    metadata.annotations = exposure.annotations.clone();
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(
                match exposure.type_ {
                    ServiceType::ClusterIP => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                }
                .to_owned(),
            ),
            external_traffic_policy: exposure.external_traffic_policy.map(|policy| {
                match policy {
                    ExternalTrafficPolicy::Cluster => "Cluster",
                    ExternalTrafficPolicy::Local => "Local",
                }
                .to_owned()
            }),
            load_balancer_source_ranges: exposure.load_balancer_source_ranges.clone(),
            load_balancer_class: exposure.load_balancer_class.clone(),
            selector: Some(names.selector_labels()),
            ports: Some(vec![
                port(port_name, if plan.tls.is_some() { 443 } else { 80 }),
                port("metrics", METRICS_PORT),
            ]),
            session_affinity: Some(if sticky { "ClientIP" } else { "None" }.to_owned()),
            session_affinity_config: sticky.then_some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(affinity.timeout_seconds),
                }),
            }),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};
    use crate::crd::WebSocketService;

    fn build(wss: &WebSocketService) -> ServiceSpec {
        let service = service(&plan_of(wss), &wss.spec, &owner(wss));
        assert_eq!(service.metadata.labels.as_ref().unwrap().len(), 4);
        assert_eq!(service.metadata.owner_references.as_ref().unwrap().len(), 1);
        service.spec.unwrap()
    }

    fn ports(spec: &ServiceSpec) -> Vec<(String, i32, IntOrString)> {
        spec.ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap(),
                    p.port,
                    p.target_port.clone().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn plain_service_exposes_ws_on_80_and_metrics() {
        let wss = example("minimal.yaml");
        let spec = build(&wss);
        assert_eq!(
            ports(&spec),
            [
                ("ws".to_owned(), 80, IntOrString::String("ws".to_owned())),
                (
                    "metrics".to_owned(),
                    9090,
                    IntOrString::String("metrics".to_owned())
                )
            ]
        );
        assert_eq!(spec.selector.as_ref().unwrap().len(), 2);
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
        let timeout = spec
            .session_affinity_config
            .unwrap()
            .client_ip
            .unwrap()
            .timeout_seconds;
        assert_eq!(timeout, Some(10800));
    }

    #[test]
    fn tls_service_exposes_wss_on_443() {
        let spec = build(&example("production.yaml"));
        assert_eq!(
            ports(&spec)[0],
            ("wss".to_owned(), 443, IntOrString::String("wss".to_owned()))
        );
    }

    #[test]
    fn exposure_fields_reach_the_service() {
        let wss = example("minimal.yaml");
        let built = service(&plan_of(&wss), &wss.spec, &owner(&wss));
        assert_eq!(built.metadata.annotations, None);
        let spec = built.spec.unwrap();
        assert_eq!(
            (
                spec.external_traffic_policy,
                spec.load_balancer_source_ranges,
                spec.load_balancer_class
            ),
            (None, None, None)
        );

        let mut wss = example("minimal.yaml");
        wss.spec.service = crate::crd::ServiceExposureSpec {
            type_: ServiceType::LoadBalancer,
            annotations: Some(
                [(
                    "service.beta.kubernetes.io/aws-load-balancer-type",
                    "external",
                )]
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .into(),
            ),
            external_traffic_policy: Some(ExternalTrafficPolicy::Local),
            load_balancer_source_ranges: Some(vec!["203.0.113.0/24".into()]),
            load_balancer_class: Some("service.k8s.aws/nlb".into()),
        };
        let built = service(&plan_of(&wss), &wss.spec, &owner(&wss));
        assert_eq!(
            built.metadata.annotations.unwrap()["service.beta.kubernetes.io/aws-load-balancer-type"],
            "external"
        );
        let spec = built.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(
            spec.load_balancer_source_ranges,
            Some(vec!["203.0.113.0/24".to_owned()])
        );
        assert_eq!(
            spec.load_balancer_class.as_deref(),
            Some("service.k8s.aws/nlb")
        );
        assert_eq!(spec.cluster_ip, None, "the apiserver's to keep");
        wss.spec.service = crate::crd::ServiceExposureSpec {
            type_: ServiceType::NodePort,
            ..Default::default()
        };
        let spec = build(&wss);
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    }

    #[test]
    fn affinity_none_drops_the_affinity_config() {
        let mut wss = example("minimal.yaml");
        wss.spec.session_affinity.type_ = AffinityType::None;
        let spec = build(&wss);
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.session_affinity_config, None);
    }
}
