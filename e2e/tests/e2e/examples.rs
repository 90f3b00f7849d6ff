//! Every manifest in examples/ applied as it is, with what its header comment says it
//! expects: it reaches its documented conditions, its children carry the expected fields,
//! `kubectl get`/`describe` show real values, and `kubectl diff` shows no drift.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use wsfleet_config::GatewayConfig;
use wsfleet_e2e::cert_checks::verify_serving_certificate;
use wsfleet_e2e::cert_manager::{CertManagerStandIn, install_crds};
use wsfleet_e2e::children::{FIELD_MANAGER, expected_children, fetch_children, fields_owned_by};
use wsfleet_e2e::fixtures::{
    create_backend_service, create_jwt_secret, create_user_tls_secret, example_path,
};
use wsfleet_e2e::inspect::{
    assert_no_diff, described_condition_types, described_events, secret_value, table_row,
};
use wsfleet_e2e::{DEADLINE, Expected, Kubectl, await_conditions, eventually};

use crate::setup::prepared;

fn apply_example(kubectl: &Kubectl, file: &str) -> Result<()> {
    kubectl.run(&["apply", "-f", &example_path(file)])?;
    Ok(())
}

/// The rendered gateway config in ConfigMap `<name>-gateway`, parsed and validated by the
/// gateway's own config type.
fn rendered_config(configmap: &Value) -> Result<GatewayConfig> {
    let text = configmap["data"]["gateway.yaml"]
        .as_str()
        .context("ConfigMap has no gateway.yaml")?;
    GatewayConfig::from_yaml(text).context("the rendered gateway.yaml is not a valid config")
}

/// What `kubectl get wss` and `kubectl describe wss` show for a Ready object: the columns, the
/// conditions, and the Event the operator records when the fleet became Ready.
fn check_user_view(kubectl: &Kubectl, name: &str, wss: &Value, tls: bool) -> Result<()> {
    let row = table_row(kubectl, "wss", name)?;
    ensure!(row["READY"] == "True", "READY column: {row:?}");
    ensure!(
        row["REPLICAS"].parse::<u64>().ok() == wss["status"]["readyReplicas"].as_u64(),
        "REPLICAS column {row:?} vs status {}",
        wss["status"]
    );
    ensure!(
        Some(row["ENDPOINT"].as_str()) == wss["status"]["endpoint"].as_str(),
        "ENDPOINT column {row:?} vs status {}",
        wss["status"]
    );
    if tls {
        ensure!(
            Some(row["CERT-EXPIRES"].as_str()) == wss["status"]["tls"]["notAfter"].as_str(),
            "CERT-EXPIRES column: {row:?}"
        );
    } else {
        ensure!(
            row["CERT-EXPIRES"].is_empty(),
            "CERT-EXPIRES without TLS: {row:?}"
        );
    }
    let description = kubectl.run(&["describe", "wss", name])?;
    let shown = described_condition_types(&description);
    for condition in ["Ready", "Progressing", "Degraded"] {
        ensure!(
            shown.contains(&condition),
            "describe does not show condition {condition}:\n{description}"
        );
    }
    let ready_reason = wss["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Ready")
        .and_then(|condition| condition["reason"].as_str())
        .context("Ready condition without a reason")?;
    eventually(
        &format!("a {ready_reason} Event in kubectl describe wss {name}"),
        DEADLINE,
        || {
            let description = kubectl.run(&["describe", "wss", name])?;
            let events = described_events(&description)?;
            ensure!(events.contains(ready_reason), "Events:{events}");
            Ok(())
        },
    )?;
    Ok(())
}

fn port<'a>(ports: &'a Value, name: &str) -> Result<&'a Value> {
    ports
        .as_array()
        .into_iter()
        .flatten()
        .find(|port| port["name"] == name)
        .with_context(|| format!("no port named {name} in {ports}"))
}

/// The cloud load balancer examples: their Service carries the type, annotations and fields
/// the cloud's controller reads (no cloud answers here, so no address appears), and the NLB
/// one turns the PROXY protocol on in the gateways.
#[test]
fn cloud_load_balancer_examples_expose_their_service() -> Result<()> {
    let (namespace, _operator) = prepared("example-cloud")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    for (file, name, annotation, proxy_protocol) in [
        (
            "aws-nlb-proxy-protocol.yaml",
            "chat-nlb",
            "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol",
            true,
        ),
        (
            "gke-passthrough.yaml",
            "chat-gke",
            "cloud.google.com/l4-rbs",
            false,
        ),
    ] {
        apply_example(kubectl, file)?;
        let wss = await_conditions(kubectl, name, &[Expected::new("Ready", "True")])?;
        let service = kubectl.get("service", name)?;
        ensure!(
            service["spec"]["type"] == "LoadBalancer",
            "{file}: {}",
            service["spec"]
        );
        ensure!(
            service["metadata"]["annotations"][annotation].is_string(),
            "{file}: annotations {}",
            service["metadata"]["annotations"]
        );
        let stored = &wss["spec"]["service"];
        for field in ["externalTrafficPolicy", "loadBalancerSourceRanges"] {
            if !stored[field].is_null() {
                ensure!(
                    service["spec"][field] == stored[field],
                    "{file}: {field} {} vs {}",
                    service["spec"][field],
                    stored[field]
                );
            }
        }
        let configmap = kubectl.get("configmap", &format!("{name}-gateway"))?;
        let config = rendered_config(&configmap)?;
        ensure!(
            config.listen.proxy_protocol.is_some() == proxy_protocol,
            "{file}: listen {:?}",
            config.listen
        );
        assert_no_diff(kubectl, &example_path(file))?;
    }
    heartbeat_is_checked_against_the_declared_idle_timeout(kubectl)?;
    load_balancer_class_cannot_be_added_later(kubectl)
}

/// Kubernetes refuses a new `loadBalancerClass` on an existing LoadBalancer Service; the
/// apiserver refuses it on the WebSocketService already, so no half-applied change is left.
fn load_balancer_class_cannot_be_added_later(kubectl: &Kubectl) -> Result<()> {
    let body = r#"{"spec":{"service":{"loadBalancerClass":"service.k8s.aws/nlb"}}}"#;
    let outcome = kubectl.outcome(
        &["patch", "wss", "chat-nlb", "--type", "merge", "-p", body],
        None,
    )?;
    ensure!(
        !outcome.success
            && outcome
                .stderr
                .contains("service.loadBalancerClass cannot be set, changed or removed"),
        "adding loadBalancerClass to a LoadBalancer fleet: {outcome:?}"
    );
    Ok(())
}

/// The NLB example declares a 600 s listener idle timeout: its 30 s heartbeat fits, and a
/// heartbeat of 10 minutes is flagged without taking the fleet out of Ready.
fn heartbeat_is_checked_against_the_declared_idle_timeout(kubectl: &Kubectl) -> Result<()> {
    await_conditions(
        kubectl,
        "chat-nlb",
        &[Expected::new("HeartbeatWithinIdleTimeout", "True").because("HeartbeatShorter")],
    )?;
    let heartbeat = |interval: &str| {
        let body = format!(r#"{{"spec":{{"heartbeat":{{"interval":"{interval}"}}}}}}"#);
        kubectl.run(&["patch", "wss", "chat-nlb", "--type", "merge", "-p", &body])
    };
    heartbeat("10m")?;
    let wss = await_conditions(
        kubectl,
        "chat-nlb",
        &[
            Expected::new("HeartbeatWithinIdleTimeout", "False")
                .because("HeartbeatExceedsIdleTimeout"),
            Expected::new("Ready", "True"),
        ],
    )?;
    let message = wsfleet_e2e::condition(&wss, "HeartbeatWithinIdleTimeout")
        .and_then(|condition| condition["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        message.contains("listener-attributes.TCP-80"),
        "the message does not name the annotation: {message}"
    );
    heartbeat("30s")?;
    await_conditions(
        kubectl,
        "chat-nlb",
        &[Expected::new("HeartbeatWithinIdleTimeout", "True")],
    )?;
    Ok(())
}

/// The production edge example, its surroundings in place (cert-manager's CRDs with its
/// controller's part played by the test, the provider's CA Secret): Ready with the Certificate
/// cert-manager issued, the PROXY protocol, provider keys, per-user limit and access log in the
/// gateways' config, and the heartbeat within the NLB's declared idle timeout.
#[test]
fn production_edge_example_reaches_ready_with_cert_manager_and_provider_keys() -> Result<()> {
    let (namespace, _operator) = prepared("example-edge")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    install_crds(kubectl)?;
    let cert_manager = CertManagerStandIn::new(kubectl)?;
    let provider_ca = format!("--from-literal=ca.crt={}", cert_manager.ca_pem());
    kubectl.run(&["create", "secret", "generic", "id-example-ca", &provider_ca])?;
    apply_example(kubectl, "production-edge.yaml")?;
    cert_manager.issue_once_written("chat-edge-gateway", (2027, 6, 1), 1)?;
    await_conditions(
        kubectl,
        "chat-edge",
        &[
            Expected::new("Ready", "True"),
            Expected::new("CertificateReady", "True").because("CertManagerReady"),
            Expected::new("HeartbeatWithinIdleTimeout", "True"),
        ],
    )?;

    let config = rendered_config(&kubectl.get("configmap", "chat-edge-gateway")?)?;
    let jwt = config.auth.jwt.as_ref().context("no auth.jwt rendered")?;
    ensure!(
        config.listen.proxy_protocol.is_some()
            && jwt.jwks.as_ref().is_some_and(|jwks| jwks.discovery)
            && config.limits.connections_per_subject == Some(20)
            && config.access_log.enabled,
        "rendered config: {config:?}"
    );
    let deployment = kubectl.get("deployment", "chat-edge-gateway")?;
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    ensure!(
        volumes.contains("id-example-ca") && volumes.contains("chat-edge-tls"),
        "the provider's CA and the issued certificate are not mounted: {volumes}"
    );
    let service = kubectl.get("service", "chat-edge")?;
    ensure!(
        service["spec"]["type"] == "LoadBalancer"
            && port(&service["spec"]["ports"], "wss")?["port"] == 443,
        "Service: {}",
        service["spec"]
    );
    assert_no_diff(kubectl, &example_path("production-edge.yaml"))
}

#[test]
fn minimal_example_reaches_ready_with_its_children() -> Result<()> {
    let (namespace, _operator) = prepared("example-minimal")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    apply_example(kubectl, "minimal.yaml")?;

    let wss = await_conditions(
        kubectl,
        "chat",
        &[
            Expected::new("Ready", "True"),
            Expected::new("Degraded", "False"),
        ],
    )?;
    let children = fetch_children(kubectl, &wss, &expected_children("chat", None, false))?;
    let [configmap, deployment, service, _pdb] = &children[..] else {
        unreachable!("expected_children lists four children without TLS and autoscaling")
    };

    let config = rendered_config(configmap)?;
    ensure!(
        config.upstream.url.starts_with("ws://chat-backend.")
            && config.upstream.url.ends_with(":8080/ws"),
        "upstream url {}",
        config.upstream.url
    );
    ensure!(config.tls.is_none(), "plain ws example rendered TLS");

    let ws = port(&service["spec"]["ports"], "ws")?;
    ensure!(ws["port"] == 80, "Service ws port: {ws}");
    port(&service["spec"]["ports"], "metrics")?;
    ensure!(
        deployment["status"]["readyReplicas"] == wss["status"]["readyReplicas"],
        "Deployment {} vs WebSocketService {}",
        deployment["status"],
        wss["status"]
    );
    ensure!(
        kubectl
            .try_get("horizontalpodautoscaler", "chat-gateway")?
            .is_none(),
        "an HPA exists without spec.autoscaling"
    );
    let endpoint = wss["status"]["endpoint"].as_str().unwrap_or_default();
    ensure!(
        endpoint.starts_with(&format!("ws://chat.{}.svc", namespace.name())),
        "status.endpoint {endpoint}"
    );

    check_user_view(kubectl, "chat", &wss, false)?;
    assert_no_diff(kubectl, &example_path("minimal.yaml"))
}

#[test]
fn production_example_issues_a_certificate_and_autoscales_on_connections() -> Result<()> {
    let (namespace, _operator) = prepared("example-production")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    create_jwt_secret(kubectl, namespace.dir())?;
    apply_example(kubectl, "production.yaml")?;

    let wss = await_conditions(
        kubectl,
        "chat-prod",
        &[
            Expected::new("Ready", "True"),
            Expected::new("CertificateReady", "True").because("CertificateIssued"),
        ],
    )?;
    let children = fetch_children(
        kubectl,
        &wss,
        &expected_children("chat-prod", Some("chat-prod-tls"), true),
    )?;
    let [configmap, deployment, service, _pdb, hpa, secret] = &children[..] else {
        unreachable!("expected_children lists six children with TLS and autoscaling")
    };

    // The certificate: valid now, for the DNS name asked for, chaining to ca.crt.
    ensure!(
        secret["type"] == "kubernetes.io/tls",
        "Secret type {}",
        secret["type"]
    );
    let chain = secret_value(kubectl, "chat-prod-tls", "tls.crt")?;
    let ca = secret_value(kubectl, "chat-prod-tls", "ca.crt")?;
    secret_value(kubectl, "chat-prod-tls", "tls.key")?;
    // The name asked for, and the Service's cluster name, which is always added.
    let service_name = format!("chat-prod.{}.svc", namespace.name());
    verify_serving_certificate(&chain, &ca, &["chat.example.com", &service_name])?;
    ensure!(
        wss["status"]["tls"]["secretName"] == "chat-prod-tls"
            && wss["status"]["tls"]["notAfter"].is_string(),
        "status.tls {}",
        wss["status"]["tls"]
    );

    // The rendered config carries TLS, JWT and limits at the pod's mount paths.
    let config = rendered_config(configmap)?;
    let tls = config.tls.as_ref().context("no tls in gateway.yaml")?;
    ensure!(
        tls.cert_file.ends_with("tls.crt") && tls.key_file.ends_with("tls.key"),
        "tls files {tls:?}"
    );
    let jwt = config.auth.jwt.as_ref().context("no jwt in gateway.yaml")?;
    ensure!(
        jwt.key_file
            .as_ref()
            .is_some_and(|key_file| key_file.ends_with("public.pem"))
            && jwt.issuer.as_deref() == Some("https://auth.example.com"),
        "jwt {jwt:?}"
    );
    ensure!(
        config.limits.max_connections == 10000,
        "limits {:?}",
        config.limits
    );
    ensure!(
        config.listen.address.port() == 8443,
        "listen {:?}",
        config.listen
    );

    // Sticky sessions and the wss port on the Service.
    let spec = &service["spec"];
    ensure!(
        spec["sessionAffinity"] == "ClientIP"
            && spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800,
        "Service affinity: {spec}"
    );
    let wss_port = port(&spec["ports"], "wss")?;
    ensure!(wss_port["port"] == 443, "Service wss port: {wss_port}");

    // Autoscaling on live connections per pod, scaling down slowly.
    let hpa_spec = &hpa["spec"];
    ensure!(
        hpa_spec["minReplicas"] == 2
            && hpa_spec["maxReplicas"] == 20
            && hpa_spec["scaleTargetRef"]["name"] == "chat-prod-gateway"
            && hpa_spec["scaleTargetRef"]["kind"] == "Deployment",
        "HPA spec: {hpa_spec}"
    );
    let pods_metric = hpa_spec["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|metric| metric["type"] == "Pods")
        .with_context(|| format!("no Pods metric: {}", hpa_spec["metrics"]))?;
    ensure!(
        pods_metric["pods"]["metric"]["name"] == "wsfleet_gateway_active_connections"
            && pods_metric["pods"]["target"]["type"] == "AverageValue"
            && (pods_metric["pods"]["target"]["averageValue"] == "1k"
                || pods_metric["pods"]["target"]["averageValue"] == "1000"),
        "Pods metric: {pods_metric}"
    );
    ensure!(
        hpa_spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600,
        "HPA behavior: {}",
        hpa_spec["behavior"]
    );

    // The pods: drain period, annotations, resources, hardening; replicas left to the HPA.
    let pod = &deployment["spec"]["template"];
    ensure!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|seconds| seconds >= 60),
        "terminationGracePeriodSeconds {}",
        pod["spec"]["terminationGracePeriodSeconds"]
    );
    ensure!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true",
        "pod annotations {}",
        pod["metadata"]["annotations"]
    );
    let container = &pod["spec"]["containers"][0];
    ensure!(
        container["resources"]["requests"]["cpu"] == "250m"
            && container["resources"]["limits"]["memory"] == "512Mi",
        "resources {}",
        container["resources"]
    );
    let listen = port(&container["ports"], "wss")?;
    ensure!(
        listen["containerPort"] == 8443,
        "container wss port {listen}"
    );
    let security = &container["securityContext"];
    ensure!(
        security["readOnlyRootFilesystem"] == true
            && security["allowPrivilegeEscalation"] == false
            && security["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "container securityContext {security}"
    );
    for fields in fields_owned_by(deployment, FIELD_MANAGER) {
        ensure!(
            fields["f:spec"].get("f:replicas").is_none(),
            "the operator owns spec.replicas although the HPA scales: {fields}"
        );
    }

    check_user_view(kubectl, "chat-prod", &wss, true)?;
    assert_no_diff(kubectl, &example_path("production.yaml"))
}

#[test]
fn hpa_cpu_example_autoscales_on_cpu() -> Result<()> {
    let (namespace, _operator) = prepared("example-hpa-cpu")?;
    let kubectl = namespace.kubectl();
    // The upstream is a URL into another namespace; the Service it names is created there.
    let control = namespace.control_plane().kubectl();
    control.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: backend\n")?;
    create_backend_service(&control, "backend")?;
    apply_example(kubectl, "hpa-cpu.yaml")?;

    let wss = await_conditions(kubectl, "chat-cpu", &[Expected::new("Ready", "True")])?;
    let children = fetch_children(kubectl, &wss, &expected_children("chat-cpu", None, true))?;
    let hpa = &children[4];
    let spec = &hpa["spec"];
    ensure!(
        spec["minReplicas"] == 2 && spec["maxReplicas"] == 10,
        "HPA spec: {spec}"
    );
    let metrics = spec["metrics"].as_array().context("HPA has no metrics")?;
    ensure!(
        metrics.len() == 1
            && metrics[0]["type"] == "Resource"
            && metrics[0]["resource"]["name"] == "cpu"
            && metrics[0]["resource"]["target"]["averageUtilization"] == 70,
        "HPA metrics: {metrics:?}"
    );
    let config = rendered_config(&children[0])?;
    ensure!(
        config.upstream.url == "ws://chat-backend.backend.svc.cluster.local:8080/ws",
        "upstream url {}",
        config.upstream.url
    );
    check_user_view(kubectl, "chat-cpu", &wss, false)?;
    assert_no_diff(kubectl, &example_path("hpa-cpu.yaml"))
}

#[test]
fn user_tls_example_is_degraded_until_its_secret_exists() -> Result<()> {
    let (namespace, _operator) = prepared("example-user-tls")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    apply_example(kubectl, "user-tls.yaml")?;

    await_conditions(
        kubectl,
        "chat-user-tls",
        &[Expected::new("Degraded", "True").because("SecretNotFound")],
    )?;
    eventually(
        "a SecretNotFound Event in kubectl describe",
        DEADLINE,
        || {
            let description = kubectl.run(&["describe", "wss", "chat-user-tls"])?;
            let events = described_events(&description)?;
            ensure!(
                events.contains("SecretNotFound"),
                "no SecretNotFound event:\n{events}"
            );
            Ok(())
        },
    )?;

    let ca = create_user_tls_secret(
        kubectl,
        namespace.dir(),
        "chat-user-tls",
        &["chat.example.com"],
    )?;
    let before = kubectl.get("secret", "chat-user-tls")?;
    let wss = await_conditions(
        kubectl,
        "chat-user-tls",
        &[
            Expected::new("Ready", "True"),
            Expected::new("Degraded", "False"),
            Expected::new("CertificateReady", "True").because("SecretValid"),
        ],
    )?;
    let children = fetch_children(
        kubectl,
        &wss,
        &expected_children("chat-user-tls", None, false),
    )?;
    ensure!(
        children[1]["spec"]["replicas"] == 3,
        "Deployment replicas {}",
        children[1]["spec"]["replicas"]
    );

    // The user's Secret is read, never written.
    let after = kubectl.get("secret", "chat-user-tls")?;
    ensure!(
        before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"],
        "the operator wrote the user's Secret"
    );
    let chain = secret_value(kubectl, "chat-user-tls", "tls.crt")?;
    verify_serving_certificate(&chain, &ca, &["chat.example.com"])?;

    check_user_view(kubectl, "chat-user-tls", &wss, true)?;
    assert_no_diff(kubectl, &example_path("user-tls.yaml"))
}
