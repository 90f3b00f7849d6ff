//! The Helm chart, linted and rendered by the real `helm` (built with the control plane) for
//! the default values and for charts/wsfleet/ci/all-features-values.yaml, with assertions on
//! what a cluster would receive.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use wsfleet_e2e::binaries::{control_plane_bin_dir, workspace_root};

const RELEASE: &str = "wsfleet";
const NAMESPACE: &str = "wsfleet-system";

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/wsfleet")
}

fn all_features_values() -> PathBuf {
    chart_dir().join("ci/all-features-values.yaml")
}

fn helm(args: &[&str]) -> String {
    let helm = control_plane_bin_dir()
        .expect("control-plane bin dir")
        .join("helm");
    let output = Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", helm.display()));
    assert!(
        output.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("helm prints UTF-8")
}

/// Every object `helm template` renders, as JSON values.
fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "-n",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let text = helm(&args);
    text.split("\n---")
        .map(|document| serde_yaml::from_str::<Value>(document).expect("rendered YAML parses"))
        .filter(|object| !object.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn operator_container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// (apiGroup, resource, verbs) for every group/resource pair a rule list grants.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut grants = BTreeSet::new();
    for rule in rules.as_array().unwrap() {
        let mut verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        verbs.sort();
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                grants.insert((
                    group.as_str().unwrap().to_string(),
                    resource.as_str().unwrap().to_string(),
                    verbs.join(","),
                ));
            }
        }
    }
    grants
}

fn expected_operator_grants() -> BTreeSet<(String, String, String)> {
    // Server-side apply of a child, plus delete: OwnerReferencesPermissionEnforcement asks for
    // it before an apply may change the child's owner references.
    let child = "create,delete,get,list,patch,watch";
    [
        ("wsfleet.io", "websocketservices", "get,list,watch"),
        ("wsfleet.io", "websocketservices/status", "patch"),
        ("wsfleet.io", "websocketservices/finalizers", "update"),
        ("", "configmaps", child),
        ("", "secrets", child),
        ("", "services", child),
        ("apps", "deployments", child),
        ("policy", "poddisruptionbudgets", child),
        ("autoscaling", "horizontalpodautoscalers", child),
        // spec.autoscaling.keda
        ("keda.sh", "scaledobjects", child),
        // tls.mode CertManager
        ("cert-manager.io", "certificates", child),
        ("events.k8s.io", "events", "create,patch"),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect()
}

#[test]
fn lint_passes_for_default_and_all_features_values() {
    let chart = chart_dir();
    helm(&["lint", "--strict", chart.to_str().unwrap()]);
    helm(&[
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "-f",
        all_features_values().to_str().unwrap(),
    ]);
}

#[test]
fn default_values_render_only_the_operator_and_its_rbac() {
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    for object in &objects {
        let namespaced = !object["kind"].as_str().unwrap().starts_with("Cluster");
        if namespaced {
            assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{object}");
        }
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"],
            RELEASE
        );
    }
}

#[test]
fn rbac_grants_exactly_what_the_operator_uses_and_no_wildcards() {
    let objects = render(&[]);
    for object in objects.iter().filter(|o| o.get("rules").is_some()) {
        let text = object["rules"].to_string();
        assert!(
            !text.contains('*'),
            "wildcard in {}",
            object["metadata"]["name"]
        );
    }
    assert_eq!(
        grants(&find(&objects, "ClusterRole", RELEASE)["rules"]),
        expected_operator_grants()
    );

    let lease_role = find(&objects, "Role", "wsfleet-leader-election");
    assert_eq!(
        lease_role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["wsfleet-operator"], "verbs": ["get", "update"]}
        ])
    );

    let subject = json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]);
    assert_eq!(
        find(&objects, "ClusterRoleBinding", RELEASE)["subjects"],
        subject
    );
    assert_eq!(
        find(&objects, "RoleBinding", "wsfleet-leader-election")["subjects"],
        subject
    );
    assert_eq!(
        find(&objects, "ClusterRoleBinding", RELEASE)["roleRef"]["name"],
        RELEASE
    );
}

#[test]
fn operator_runs_two_replicas_with_leader_election_probes_and_a_restricted_context() {
    let objects = render(&[]);
    let deployment = find(&objects, "Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    let container = operator_container(&objects);
    assert_eq!(container["image"], "wsfleet/wsfleet:0.1.0");
    assert_eq!(
        args(container),
        [
            "run",
            "--gateway-image=wsfleet/wsfleet:0.1.0",
            "--metrics-address=0.0.0.0:8080",
            "--log-format=json",
            "--lease-name=wsfleet-operator"
        ]
    );
    let env = &container["env"];
    assert_eq!(env[0]["name"], "POD_NAME");
    assert_eq!(
        env[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env[1]["name"], "POD_NAMESPACE");
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    let service = find(&objects, "Service", "wsfleet-metrics");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[key], value,
            "metrics Service selects the operator pods"
        );
    }
}

#[test]
fn include_crds_renders_the_websocketservice_crd() {
    let objects = render(&["--include-crds"]);
    let crd = find(
        &objects,
        "CustomResourceDefinition",
        "websocketservices.wsfleet.io",
    );
    assert_eq!(crd["spec"]["group"], "wsfleet.io");
}

#[test]
fn all_features_render_namespaced_rbac_monitoring_and_the_dashboard() {
    let values = all_features_values();
    let objects = render(&["-f", values.to_str().unwrap()]);
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "ServiceMonitor"
        ]
    );
    // watchNamespace: the operator's permissions live in that namespace only.
    let role = find(&objects, "Role", RELEASE);
    assert_eq!(role["metadata"]["namespace"], "edge");
    assert_eq!(grants(&role["rules"]), expected_operator_grants());
    assert_eq!(
        find(&objects, "RoleBinding", RELEASE)["subjects"][0]["name"],
        "wsfleet-edge-operator"
    );
    assert_eq!(
        find(&objects, "Role", "wsfleet-leader-election")["rules"][1]["resourceNames"],
        json!(["wsfleet-edge"])
    );

    let container = operator_container(&objects);
    assert_eq!(
        container["image"],
        "registry.example.com/platform/wsfleet:0.1.0-rc1"
    );
    let args = args(container);
    assert!(args.contains(&"--namespace=edge"), "{args:?}");
    assert!(args.contains(&"--lease-name=wsfleet-edge"), "{args:?}");
    assert!(args.contains(
        &"--gateway-image=registry.example.com/platform/wsfleet@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    ));
    assert_eq!(find(&objects, "Deployment", RELEASE)["spec"]["replicas"], 3);

    let gateways = find(&objects, "ServiceMonitor", "wsfleet-gateways");
    assert_eq!(
        gateways["spec"]["namespaceSelector"]["matchNames"],
        json!(["edge"])
    );
    assert_eq!(
        gateways["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "wsfleet-gateway"
    );
    assert_eq!(gateways["spec"]["endpoints"][0]["port"], "metrics");
}

#[test]
fn alerts_use_configured_thresholds_and_only_metrics_the_binaries_export() {
    let values = all_features_values();
    let objects = render(&["-f", values.to_str().unwrap()]);
    let rule = find(&objects, "PrometheusRule", RELEASE);
    let alerts: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .collect();
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "WsfleetOperatorDown",
            "WsfleetOperatorNoLeader",
            "WsfleetOperatorReconcileErrors",
            "WsfleetGatewayRefusalsRising",
            "WsfleetGatewayUpstreamErrors",
            "WsfleetGatewayReloadFailing",
            "WsfleetGatewaySlowHandshakes",
            "WsfleetGatewayUpstreamFailureRatio",
            "WsfleetGatewayServedCertificateExpiring",
            "WsfleetServiceDegraded",
            "WsfleetServiceNotReady",
            "WsfleetCertificateExpiringSoon"
        ]
    );
    let expr = |name: &str| {
        alerts.iter().find(|a| a["alert"] == name).unwrap()["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(expr("WsfleetGatewayRefusalsRising").ends_with("> 5"));
    assert!(expr("WsfleetCertificateExpiringSoon").ends_with("< 864000"));
    // Alert templates reach Prometheus unexpanded.
    assert!(rule.to_string().contains("{{ $labels.reason }}"));

    let mut exprs: String = alerts.iter().map(|a| a["expr"].to_string()).collect();
    let dashboard = find(&objects, "ConfigMap", "wsfleet-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    let board: Value =
        serde_json::from_str(dashboard["data"]["wsfleet.json"].as_str().unwrap()).unwrap();
    for panel in board["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap());
        }
    }
    for metric in [
        "wsfleet_gateway_active_connections",
        "wsfleet_gateway_messages_total",
        "wsfleet_gateway_refusals_total",
    ] {
        assert!(exprs.contains(metric), "dashboard or alerts miss {metric}");
    }
    assert_metrics_are_exported(&exprs, "wsfleet_gateway_", "config/src");
    assert_metrics_are_exported(&exprs, "wsfleet_operator_", "operator/src");
}

/// Every metric named with `prefix` in `exprs` appears in the sources under `dir`, so a
/// renamed metric breaks this test rather than a dashboard in production.
fn assert_metrics_are_exported(exprs: &str, prefix: &str, dir: &str) {
    let sources = read_tree(&workspace_root().join(dir));
    let mut rest = exprs;
    while let Some(start) = rest.find(prefix) {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // Histograms are queried through their _bucket series, and registries that append
        // _total to counters are given the bare name.
        let registered = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_total"))
            .unwrap_or(&name);
        assert!(
            sources.contains(&name) || sources.contains(registered),
            "{name} is queried but {dir} never mentions it"
        );
        rest = &rest[start + name.len()..];
    }
}

fn read_tree(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&read_tree(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    text
}

#[test]
fn kube_state_metrics_config_targets_the_served_crd_version() {
    let values = all_features_values();
    let objects = render(&["-f", values.to_str().unwrap()]);
    let config_map = find(&objects, "ConfigMap", "wsfleet-kube-state-metrics");
    let config: Value = serde_yaml::from_str(
        config_map["data"]["custom-resource-state.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let gvk = &config["spec"]["resources"][0]["groupVersionKind"];

    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(workspace_root().join("crds/websocketservices.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(gvk["group"], crd["spec"]["group"]);
    assert_eq!(gvk["kind"], crd["spec"]["names"]["kind"]);
    let served: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| &v["name"])
        .collect();
    assert!(
        served.contains(&&gvk["version"]),
        "{gvk} is not a served version"
    );

    // The status paths the metrics read exist in the CRD's status schema.
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    for metric in config["spec"]["resources"][0]["metrics"]
        .as_array()
        .unwrap()
    {
        let path = metric["each"]["gauge"]["path"].as_array().unwrap();
        assert_eq!(path[0], "status");
        let mut schema = status;
        for step in &path[1..] {
            schema = &schema["properties"][step.as_str().unwrap()];
            assert!(
                !schema.is_null(),
                "{} reads a path the CRD lacks",
                metric["name"]
            );
        }
    }
}

#[test]
fn values_schema_rejects_typos_and_unknown_choices() {
    let helm = control_plane_bin_dir()
        .expect("control-plane bin dir")
        .join("helm");
    let chart = chart_dir();
    for (setting, complaint) in [
        ("metrcs.serviceMonitor.enabled=true", "'metrcs' not allowed"),
        ("logFormat=xml", "/logFormat"),
        ("image.digest=latest", "/image/digest"),
    ] {
        let output = Command::new(&helm)
            .args([
                "template",
                RELEASE,
                chart.to_str().unwrap(),
                "--set",
                setting,
            ])
            .output()
            .expect("running helm");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "--set {setting} was accepted");
        assert!(stderr.contains(complaint), "--set {setting}: {stderr}");
    }
}

#[test]
fn a_single_replica_gets_no_disruption_budget_that_would_block_node_drains() {
    let objects = render(&["--set", "replicaCount=1"]);
    assert!(
        !kinds(&objects).contains(&"PodDisruptionBudget".to_string()),
        "{:?}",
        kinds(&objects)
    );
}
