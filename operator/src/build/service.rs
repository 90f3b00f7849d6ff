//! Service `<name>`: the fleet's stable address, sticky per client IP when asked.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::child_metadata;
use super::deployment::listen_port_name;
use crate::crd::{AffinityType, WebSocketServiceSpec};
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
    Service {
        metadata: child_metadata(names, names.service(), owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
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
    fn affinity_none_drops_the_affinity_config() {
        let mut wss = example("minimal.yaml");
        wss.spec.session_affinity.type_ = AffinityType::None;
        let spec = build(&wss);
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.session_affinity_config, None);
    }
}
