//! What Prometheus' Kubernetes service discovery (role `endpointslice`) finds, as file_sd
//! target groups carrying the same `__meta_kubernetes_*` labels. Debian's prometheus is built
//! without Kubernetes discovery, so the harness lists the objects and Prometheus does the rest:
//! which Services and ports are scraped is still decided by the relabelling that the chart's
//! ServiceMonitors turn into ([`crate::monitoring::scrape_jobs`]).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use crate::kubectl::Kubectl;
use crate::monitoring::sanitize;

/// The namespace a target group was discovered in.
pub fn namespace_of(group: &Value) -> &str {
    group["labels"]["__meta_kubernetes_namespace"]
        .as_str()
        .unwrap_or_default()
}

/// Every EndpointSlice endpoint and port in the cluster, as target groups.
pub fn endpointslice_targets(kubectl: &Kubectl) -> Result<Vec<Value>> {
    let services: BTreeMap<(String, String), Value> = list(kubectl, "/api/v1/services")?
        .into_iter()
        .map(|service| (key(&service), service))
        .collect();
    let pods: BTreeMap<(String, String), Value> = list(kubectl, "/api/v1/pods")?
        .into_iter()
        .map(|pod| (key(&pod), pod))
        .collect();
    let mut groups = Vec::new();
    for slice in list(kubectl, "/apis/discovery.k8s.io/v1/endpointslices")? {
        let namespace = slice["metadata"]["namespace"].as_str().unwrap_or_default();
        let mut common = Map::new();
        common.insert("__meta_kubernetes_namespace".into(), json!(namespace));
        common.insert(
            "__meta_kubernetes_endpointslice_name".into(),
            slice["metadata"]["name"].clone(),
        );
        add_labels(&mut common, "endpointslice", &slice["metadata"]["labels"]);
        let service_name = slice["metadata"]["labels"]["kubernetes.io/service-name"]
            .as_str()
            .unwrap_or_default();
        if let Some(service) = services.get(&(namespace.to_owned(), service_name.to_owned())) {
            common.insert("__meta_kubernetes_service_name".into(), json!(service_name));
            add_labels(&mut common, "service", &service["metadata"]["labels"]);
        }
        for port in slice["ports"].as_array().into_iter().flatten() {
            let number = port["port"].as_u64().unwrap_or_default();
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                let mut labels = common.clone();
                labels.insert(
                    "__meta_kubernetes_endpointslice_port".into(),
                    json!(number.to_string()),
                );
                labels.insert(
                    "__meta_kubernetes_endpointslice_port_name".into(),
                    json!(port["name"].as_str().unwrap_or_default()),
                );
                let target = &endpoint["targetRef"];
                labels.insert(
                    "__meta_kubernetes_endpointslice_address_target_kind".into(),
                    json!(target["kind"].as_str().unwrap_or_default()),
                );
                labels.insert(
                    "__meta_kubernetes_endpointslice_address_target_name".into(),
                    json!(target["name"].as_str().unwrap_or_default()),
                );
                labels.insert(
                    "__meta_kubernetes_endpointslice_endpoint_conditions_ready".into(),
                    json!((endpoint["conditions"]["ready"] == true).to_string()),
                );
                if target["kind"] == "Pod" {
                    let pod_name = target["name"].as_str().unwrap_or_default();
                    labels.insert("__meta_kubernetes_pod_name".into(), json!(pod_name));
                    let container = pods
                        .get(&(namespace.to_owned(), pod_name.to_owned()))
                        .and_then(|pod| container_with_port(pod, number));
                    if let Some(container) = container {
                        labels.insert(
                            "__meta_kubernetes_pod_container_name".into(),
                            json!(container),
                        );
                    }
                }
                for address in endpoint["addresses"].as_array().into_iter().flatten() {
                    let address = address.as_str().unwrap_or_default();
                    groups.push(json!({
                        "targets": [format!("{address}:{number}")],
                        "labels": labels,
                    }));
                }
            }
        }
    }
    Ok(groups)
}

fn list(kubectl: &Kubectl, path: &str) -> Result<Vec<Value>> {
    let text = kubectl.raw(path)?;
    let list: Value = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn key(object: &Value) -> (String, String) {
    let field = |name: &str| {
        object["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

fn add_labels(into: &mut Map<String, Value>, role: &str, labels: &Value) {
    for (name, value) in labels.as_object().into_iter().flatten() {
        let name = sanitize(name);
        into.insert(
            format!("__meta_kubernetes_{role}_label_{name}"),
            value.clone(),
        );
        into.insert(
            format!("__meta_kubernetes_{role}_labelpresent_{name}"),
            json!("true"),
        );
    }
}

/// The container of `pod` that declares `port`, as discovery names it.
fn container_with_port(pod: &Value, port: u64) -> Option<String> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|container| {
            container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|declared| declared["containerPort"].as_u64() == Some(port))
        })
        .and_then(|container| container["name"].as_str().map(str::to_owned))
}
