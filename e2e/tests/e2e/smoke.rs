//! The control plane itself works: fake nodes are Ready, a Deployment becomes Available on
//! them, and the WebSocketService CRD is accepted.

use anyhow::{Result, ensure};
use wsfleet_e2e::{DEADLINE, TestNamespace, eventually};

#[test]
fn deployments_become_available_on_fake_nodes() -> Result<()> {
    let namespace = TestNamespace::create("smoke-deployment")?;
    let kubectl = namespace.kubectl();
    kubectl.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example.invalid/web:1
",
    )?;
    eventually("Deployment web with 2 ready replicas", DEADLINE, || {
        let deployment = kubectl.get("deployment", "web")?;
        let status = &deployment["status"];
        ensure!(status["readyReplicas"] == 2, "status {status}");
        Ok(())
    })?;
    for pod in kubectl.list("pods", "app=web")? {
        ensure!(
            pod["spec"]["nodeName"]
                .as_str()
                .is_some_and(|node| node.starts_with("kwok-node-")),
            "pod {} is not on a fake node",
            pod["metadata"]["name"]
        );
    }
    Ok(())
}

#[test]
fn the_crd_is_established_with_its_short_name() -> Result<()> {
    let namespace = TestNamespace::create("smoke-crd")?;
    namespace.control_plane().install_crd()?;
    let resources = namespace
        .kubectl()
        .run(&["api-resources", "--api-group=wsfleet.io"])?;
    ensure!(
        resources.contains("wss") && resources.contains("WebSocketService"),
        "short name missing: {resources}"
    );
    Ok(())
}
