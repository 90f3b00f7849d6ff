//! The life of a WebSocketService after it is applied: a missing upstream Service degrades
//! it until the Service appears; spec updates reach the children; deletion collects them, and a
//! foreground deletion keeps the WebSocketService until they are gone.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use wsfleet_config::GatewayConfig;
use wsfleet_e2e::children::{Child, FIELD_MANAGER, fields_owned_by};
use wsfleet_e2e::fixtures::{create_backend_service, create_user_tls_secret, example_path};
use wsfleet_e2e::{DEADLINE, Expected, Kubectl, await_conditions, eventually};

use crate::setup::{prepared, ready_production_fleet};

fn patch(kubectl: &Kubectl, name: &str, patch: &str) -> Result<()> {
    kubectl.run(&["patch", "wss", name, "--type", "merge", "-p", patch])?;
    Ok(())
}

fn gateway_config(kubectl: &Kubectl, name: &str) -> Result<GatewayConfig> {
    let configmap = kubectl.get("configmap", &format!("{name}-gateway"))?;
    let text = configmap["data"]["gateway.yaml"]
        .as_str()
        .context("no gateway.yaml")?;
    Ok(GatewayConfig::from_yaml(text)?)
}

fn ready(kubectl: &Kubectl, name: &str) -> Result<Value> {
    await_conditions(
        kubectl,
        name,
        &[
            Expected::new("Ready", "True"),
            Expected::new("Degraded", "False"),
        ],
    )
}

#[test]
fn a_missing_upstream_service_degrades_until_it_exists() -> Result<()> {
    let (namespace, _operator) = prepared("missing-upstream")?;
    let kubectl = namespace.kubectl();
    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;

    let wss = await_conditions(
        kubectl,
        "chat",
        &[
            Expected::new("Degraded", "True").because("UpstreamServiceNotFound"),
            Expected::new("Ready", "False"),
        ],
    )?;
    let message = wsfleet_e2e::condition(&wss, "Degraded").map(|c| c["message"].to_string());
    ensure!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("chat-backend")),
        "Degraded message does not name the Service: {message:?}"
    );
    let events = kubectl.run(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=chat,reason=UpstreamServiceNotFound",
        "-o",
        "name",
    ])?;
    ensure!(
        !events.trim().is_empty(),
        "no UpstreamServiceNotFound Event"
    );

    create_backend_service(kubectl, namespace.name())?;
    ready(kubectl, "chat")?;
    Ok(())
}

/// `spec.service` moves the Service from ClusterIP to NodePort to LoadBalancer in place (same
/// UID and clusterIP), and annotations dropped from the spec leave the Service, because the
/// operator's field manager owned them.
#[test]
fn service_exposure_changes_patch_the_service_in_place() -> Result<()> {
    let (namespace, _operator) = prepared("service-exposure")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;
    let service = eventually("Service chat", DEADLINE, || kubectl.get("service", "chat"))?;
    ensure!(
        service["spec"]["type"] == "ClusterIP",
        "{}",
        service["spec"]
    );
    let identity = |service: &Value| {
        (
            service["metadata"]["uid"].clone(),
            service["spec"]["clusterIP"].clone(),
        )
    };
    let created = identity(&service);
    ensure!(created.1.is_string(), "no clusterIP: {}", service["spec"]);

    let service_becomes = |what: &str, check: &dyn Fn(&Value) -> bool| {
        eventually(what, DEADLINE, || {
            let service = kubectl.get("service", "chat")?;
            ensure!(check(&service), "{what}: {}", service);
            ensure!(identity(&service) == created, "recreated: {}", service);
            Ok(service)
        })
    };
    patch(
        kubectl,
        "chat",
        r#"{"spec":{"service":{"type":"NodePort"}}}"#,
    )?;
    let service = service_becomes("a NodePort Service", &|service| {
        service["spec"]["type"] == "NodePort" && service["spec"]["ports"][0]["nodePort"].is_u64()
    })?;
    let node_port = service["spec"]["ports"][0]["nodePort"].clone();

    patch(
        kubectl,
        "chat",
        r#"{"spec":{"service":{"type":"LoadBalancer","externalTrafficPolicy":"Local",
            "loadBalancerSourceRanges":["203.0.113.0/24"],"loadBalancerClass":"example.com/lb",
            "annotations":{"example.com/lb-scheme":"internal","example.com/lb-proxy":"v2"}}}}"#,
    )?;
    let service = service_becomes("a LoadBalancer Service with its fields", &|service| {
        let spec = &service["spec"];
        spec["type"] == "LoadBalancer"
            && spec["externalTrafficPolicy"] == "Local"
            && spec["loadBalancerSourceRanges"] == serde_json::json!(["203.0.113.0/24"])
            && spec["loadBalancerClass"] == "example.com/lb"
            && service["metadata"]["annotations"]["example.com/lb-proxy"] == "v2"
    })?;
    ensure!(
        service["spec"]["ports"][0]["nodePort"] == node_port,
        "the node port moved: {}",
        service["spec"]
    );

    patch(
        kubectl,
        "chat",
        r#"{"spec":{"service":{"annotations":{"example.com/lb-proxy":null}}}}"#,
    )?;
    service_becomes("annotation example.com/lb-proxy removed", &|service| {
        let annotations = &service["metadata"]["annotations"];
        annotations["example.com/lb-proxy"].is_null()
            && annotations["example.com/lb-scheme"] == "internal"
    })?;
    patch(
        kubectl,
        "chat",
        r#"{"spec":{"service":{"annotations":null}}}"#,
    )?;
    service_becomes("every spec.service annotation removed", &|service| {
        service["metadata"]["annotations"]["example.com/lb-scheme"].is_null()
    })?;
    Ok(())
}

#[test]
fn spec_updates_reach_the_children() -> Result<()> {
    let (namespace, _operator) = prepared("updates")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;
    ready(kubectl, "chat")?;

    // Limits reach the rendered config.
    patch(
        kubectl,
        "chat",
        r#"{"spec":{"limits":{"maxConnections":500,"maxMessageBytes":65536}}}"#,
    )?;
    eventually("limits in the rendered config", DEADLINE, || {
        let config = gateway_config(kubectl, "chat")?;
        ensure!(
            config.limits.max_connections == 500 && config.limits.max_message_bytes == 65536,
            "limits {:?}",
            config.limits
        );
        Ok(())
    })?;

    // Replicas reach the Deployment and, once the pods are Ready, the status.
    patch(kubectl, "chat", r#"{"spec":{"replicas":4}}"#)?;
    let wss = ready(kubectl, "chat")?;
    eventually("4 ready replicas", DEADLINE, || {
        let wss = kubectl.get("wss", "chat")?;
        ensure!(
            wss["status"]["readyReplicas"] == 4,
            "status {}",
            wss["status"]
        );
        Ok(())
    })?;
    ensure!(
        wss["status"]["replicas"].is_number(),
        "status {}",
        wss["status"]
    );
    let deployment = kubectl.get("deployment", "chat-gateway")?;
    ensure!(
        deployment["spec"]["replicas"] == 4,
        "Deployment {}",
        deployment["spec"]
    );

    // Autoscaling on: an HPA appears and the operator lets go of spec.replicas.
    patch(
        kubectl,
        "chat",
        r#"{"spec":{"autoscaling":{"minReplicas":2,"maxReplicas":6,"targetCPUUtilization":60}}}"#,
    )?;
    eventually("HPA chat-gateway and replicas left to it", DEADLINE, || {
        let hpa = kubectl.get("horizontalpodautoscaler", "chat-gateway")?;
        ensure!(hpa["spec"]["maxReplicas"] == 6, "HPA {}", hpa["spec"]);
        let deployment = kubectl.get("deployment", "chat-gateway")?;
        for fields in fields_owned_by(&deployment, FIELD_MANAGER) {
            ensure!(
                fields["f:spec"].get("f:replicas").is_none(),
                "operator still owns spec.replicas"
            );
        }
        Ok(())
    })?;

    // Autoscaling off: the HPA goes away.
    patch(kubectl, "chat", r#"{"spec":{"autoscaling":null}}"#)?;
    eventually("HPA chat-gateway deleted", DEADLINE, || {
        let hpa = kubectl.try_get("horizontalpodautoscaler", "chat-gateway")?;
        ensure!(hpa.is_none(), "HPA still exists");
        Ok(())
    })?;

    // TLS on, issued by the operator: a Secret, a wss port, TLS in the config.
    patch(kubectl, "chat", r#"{"spec":{"tls":{"mode":"SelfSigned"}}}"#)?;
    await_conditions(
        kubectl,
        "chat",
        &[Expected::new("CertificateReady", "True").because("CertificateIssued")],
    )?;
    eventually("wss port and TLS config", DEADLINE, || {
        let service = kubectl.get("service", "chat")?;
        let ports = service["spec"]["ports"].to_string();
        ensure!(
            ports.contains("\"wss\"") && ports.contains("443"),
            "ports {ports}"
        );
        let config = gateway_config(kubectl, "chat")?;
        ensure!(config.tls.is_some(), "no TLS in the config");
        Ok(())
    })?;
    kubectl.get("secret", "chat-tls")?;

    // Switch to a user-managed Secret.
    create_user_tls_secret(
        kubectl,
        namespace.dir(),
        "chat-own-tls",
        &["chat.example.com"],
    )?;
    patch(
        kubectl,
        "chat",
        r#"{"spec":{"tls":{"mode":"Secret","secretName":"chat-own-tls"}}}"#,
    )?;
    let wss = await_conditions(
        kubectl,
        "chat",
        &[
            Expected::new("Ready", "True"),
            Expected::new("CertificateReady", "True").because("SecretValid"),
        ],
    )?;
    ensure!(
        wss["status"]["tls"]["secretName"] == "chat-own-tls",
        "status.tls {}",
        wss["status"]["tls"]
    );
    let deployment = kubectl.get("deployment", "chat-gateway")?;
    ensure!(
        deployment["spec"]["template"]["spec"]["volumes"]
            .to_string()
            .contains("chat-own-tls"),
        "the pods do not mount chat-own-tls"
    );
    Ok(())
}

/// Which of `children`, and of the gateway pods of chat-prod, still exist (as kind/name).
fn still_present(kubectl: &Kubectl, children: &[Child]) -> Result<Vec<String>> {
    let mut left: Vec<String> = children
        .iter()
        .filter_map(|child| match kubectl.try_get(child.kind, &child.name) {
            Ok(None) => None,
            Ok(Some(_)) => Some(format!("{}/{}", child.kind, child.name)),
            Err(err) => Some(format!("{}/{}: {err:#}", child.kind, child.name)),
        })
        .collect();
    let pods = kubectl.list("pods", "app.kubernetes.io/instance=chat-prod")?;
    left.extend(
        pods.iter()
            .map(|pod| format!("pod/{}", pod["metadata"]["name"].as_str().unwrap_or("?"))),
    );
    Ok(left)
}

#[test]
fn deleting_collects_every_child() -> Result<()> {
    let (namespace, _operator, children) = ready_production_fleet("deletion")?;
    let kubectl = namespace.kubectl();

    kubectl.run(&["delete", "wss", "chat-prod", "--wait=false"])?;
    eventually("every child of chat-prod collected", DEADLINE, || {
        let left = still_present(kubectl, &children)?;
        ensure!(left.is_empty(), "left: {left:?}");
        Ok(())
    })?;
    // The user's objects are not the operator's to delete.
    kubectl.get("secret", "chat-jwt")?;
    kubectl.get("service", "chat-backend")?;
    Ok(())
}

#[test]
fn foreground_deletion_removes_the_websocketservice_after_its_children() -> Result<()> {
    let (namespace, _operator, children) = ready_production_fleet("foreground-deletion")?;
    let kubectl = namespace.kubectl();
    // A finalizer holds the ConfigMap back, so which goes first is observed, not raced.
    let held = "chat-prod-gateway";
    kubectl.run(&[
        "patch",
        "configmap",
        held,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":["e2e.wsfleet.io/hold"]}}"#,
    ])?;
    let others: Vec<Child> = children
        .into_iter()
        .filter(|child| child.kind != "configmap")
        .collect();

    kubectl.run(&[
        "delete",
        "wss",
        "chat-prod",
        "--cascade=foreground",
        "--wait=false",
    ])?;
    eventually(
        "the other children and the pods collected, the ConfigMap being deleted",
        DEADLINE,
        || {
            let left = still_present(kubectl, &others)?;
            ensure!(left.is_empty(), "left: {left:?}");
            let configmap = kubectl.get("configmap", held)?;
            ensure!(
                configmap["metadata"]["deletionTimestamp"].is_string(),
                "ConfigMap {held} not being deleted"
            );
            Ok(())
        },
    )?;
    let wss = kubectl.try_get("wss", "chat-prod")?;
    ensure!(
        wss.is_some_and(|wss| wss["metadata"]["deletionTimestamp"].is_string()),
        "chat-prod was removed while its ConfigMap {held} was still there"
    );

    kubectl.run(&[
        "patch",
        "configmap",
        held,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])?;
    eventually("chat-prod removed after its last child", DEADLINE, || {
        ensure!(
            kubectl.try_get("wss", "chat-prod")?.is_none(),
            "still there"
        );
        Ok(())
    })?;
    Ok(())
}
