//! A fleet on the real node as a user runs one: the chart's operator in the cluster, an upstream
//! pod behind `chat-backend`, and clients on the host that reach the fleet's Service.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};

use crate::helm::helm;
use crate::inspect::secret_value;
use crate::kubectl::Kubectl;
use crate::node::RealCluster;
use crate::node::images::UPSTREAM_IMAGE;
use crate::poll::{DEADLINE, eventually};
use crate::wire::Endpoint;

/// Where the chart installs the operator.
pub const OPERATOR_NAMESPACE: &str = "wsfleet-system";
const RELEASE: &str = "wsfleet";
/// The Origin the examples allow.
pub const ALLOWED_ORIGIN: &str = "https://chat.example.com";

/// `helm install` of charts/wsfleet with its defaults (the image imported into the node), then
/// waits until every operator replica is Ready.
pub fn install_chart(cluster: &RealCluster) -> Result<()> {
    let chart = crate::binaries::workspace_root().join("charts/wsfleet");
    helm(
        cluster.control_plane(),
        &[
            "install",
            RELEASE,
            &chart.display().to_string(),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
        ],
    )?;
    Ok(())
}

/// The upstream the examples expect: Deployment and Service `chat-backend` on port 8080,
/// running the project's test upstream in `mode` (`echo` or `chat`).
pub fn deploy_upstream(kubectl: &Kubectl, namespace: &str, mode: &str) -> Result<()> {
    kubectl.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: chat-backend
  namespace: {namespace}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: chat-backend}}
  template:
    metadata:
      labels: {{app: chat-backend}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: upstream
        image: {UPSTREAM_IMAGE}
        imagePullPolicy: Never
        args: [serve, --listen, "0.0.0.0:8080", --mode, {mode}]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports:
        - {{name: ws, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL]}}
---
{service}"#,
        service = crate::fixtures::backend_service_manifest(namespace)
    ))?;
    kubectl.run(&[
        "rollout",
        "status",
        "deployment/chat-backend",
        "--timeout=180s",
    ])?;
    Ok(())
}

/// How a host client reaches fleet `name`: its Service's ClusterIP and port, the Service's DNS
/// name for SNI, and the `ca.crt` of the fleet's TLS Secret.
pub fn endpoint(
    kubectl: &Kubectl,
    namespace: &str,
    name: &str,
    tls_secret: &str,
) -> Result<Endpoint> {
    Ok(Endpoint {
        ca_pem: Some(secret_value(kubectl, tls_secret, "ca.crt")?),
        path: "/ws".to_owned(),
        ..plain_endpoint(kubectl, namespace, name)?
    })
}

/// How a host client reaches fleet `name` without TLS, on the default listen path: its
/// Service's ClusterIP and port, and the Service's DNS name as Host.
pub fn plain_endpoint(kubectl: &Kubectl, namespace: &str, name: &str) -> Result<Endpoint> {
    let service = kubectl.get("service", name)?;
    let ip = service["spec"]["clusterIP"]
        .as_str()
        .with_context(|| format!("the Service {name} has no clusterIP"))?;
    let port = service["spec"]["ports"][0]["port"]
        .as_u64()
        .with_context(|| format!("the Service {name} has no port"))?;
    Ok(Endpoint {
        address: SocketAddr::new(ip.parse()?, u16::try_from(port)?),
        server_name: format!("{name}.{namespace}.svc"),
        path: "/".to_owned(),
        ca_pem: None,
        origin: ALLOWED_ORIGIN.to_owned(),
        source: None,
    })
}

/// Every gateway pod of fleet `name`, terminating ones included.
pub fn pods_of(kubectl: &Kubectl, name: &str) -> Result<Vec<serde_json::Value>> {
    kubectl.list("pods", &format!("app.kubernetes.io/instance={name}"))
}

/// One line per gateway pod of fleet `name`: its phase, whether it is being deleted and since
/// when, and each container's state, for messages that must say why pods linger.
pub fn describe_pods(kubectl: &Kubectl, name: &str) -> Result<String> {
    let pods = pods_of(kubectl, name)?;
    Ok(pods
        .iter()
        .map(|pod| {
            let containers: Vec<String> = pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|status| format!("{}={}", status["name"], status["state"]))
                .collect();
            format!(
                "{} phase {} deleting since {} grace {} [{}]",
                pod["metadata"]["name"],
                pod["status"]["phase"],
                pod["metadata"]["deletionTimestamp"],
                pod["metadata"]["deletionGracePeriodSeconds"],
                containers.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The fleet's running gateway pods: pod IP to pod name.
pub fn gateway_pods(kubectl: &Kubectl, name: &str) -> Result<BTreeMap<String, String>> {
    let pods = pods_of(kubectl, name)?;
    Ok(pods
        .iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|pod| {
            Some((
                pod["status"]["podIP"].as_str()?.to_owned(),
                pod["metadata"]["name"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Waits until fleet `name` has exactly `count` gateway pods, all Ready and none terminating.
pub fn await_ready_pods(kubectl: &Kubectl, name: &str, count: usize) -> Result<()> {
    eventually(
        &format!("{count} Ready gateway pods of {name}"),
        DEADLINE,
        || {
            let pods = pods_of(kubectl, name)?;
            let ready = pods
                .iter()
                .filter(|pod| {
                    pod["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .count();
            ensure!(
                pods.len() == count && ready == count,
                "{} pods, {ready} Ready",
                pods.len()
            );
            Ok(())
        },
    )
}
