//! `helm install` of charts/wsfleet into the local control plane, then the real operator
//! binary running with nothing but the chart's ServiceAccount (a TokenRequest token): the
//! examples reconcile to Ready under exactly the chart's RBAC, including children whose owner
//! references an older operator wrote without blockOwnerDeletion (the apiserver runs
//! OwnerReferencesPermissionEnforcement). `helm uninstall` then leaves only the CRD behind.
//!
//! kwok fakes the chart's operator pods (they turn Ready but run nothing), so the operator
//! that reconciles is this test's process, authenticated as the chart's ServiceAccount.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsfleet_e2e::binaries::{workspace_root, wsfleet_binary};
use wsfleet_e2e::children::{Child, expected_children};
use wsfleet_e2e::fixtures::{create_backend_service, create_jwt_secret};
use wsfleet_e2e::helm::helm;
use wsfleet_e2e::net::{free_port, http_get};
use wsfleet_e2e::poll::give_up;
use wsfleet_e2e::process::ManagedProcess;
use wsfleet_e2e::{DEADLINE, Expected, TestNamespace, await_conditions, eventually};

const RELEASE: &str = "wsfleet";

/// A kubeconfig for the same cluster that authenticates with `token` instead of the admin
/// credentials.
fn kubeconfig_with_token(admin: &Path, token: &str, out: &Path) -> Result<PathBuf> {
    let mut config: Value = serde_yaml::from_str(&std::fs::read_to_string(admin)?)?;
    let users = config["users"]
        .as_array_mut()
        .context("kubeconfig has users")?;
    for user in users {
        user["user"] = serde_json::json!({ "token": token });
    }
    let path = out.join("serviceaccount.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// `wsfleet-operator run` across all namespaces (as the chart runs it), as the chart's
/// ServiceAccount, taking the chart's Lease in the release namespace.
fn start_operator_as_service_account(
    kubeconfig: &Path,
    release_namespace: &str,
    log_dir: &Path,
) -> Result<(ManagedProcess, u16)> {
    let binary = wsfleet_binary("wsfleet-operator", "wsfleet-operator")?;
    let metrics_port = free_port()?;
    let mut command = Command::new(binary);
    command
        .args([
            "run",
            "--lease-name",
            "wsfleet-operator",
            "--identity",
            "chart-install-test",
        ])
        .arg("--metrics-address")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", release_namespace)
        .env("RUST_LOG", "info");
    let mut process = ManagedProcess::spawn(
        "operator (chart ServiceAccount)",
        command,
        &log_dir.join("operator.log"),
    )?;
    eventually("the operator to hold the Lease", DEADLINE, || {
        process.ensure_running().map_err(give_up)?;
        let metrics = http_get(metrics_port, "/metrics")?;
        ensure!(
            metrics
                .lines()
                .any(|line| line == "wsfleet_operator_leader 1"),
            "not the leader yet"
        );
        Ok(())
    })?;
    Ok((process, metrics_port))
}

fn can_i(kubectl: &wsfleet_e2e::Kubectl, service_account: &str, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--as", service_account]);
    // `can-i` answers "yes" with status 0 and "no" with status 1.
    kubectl
        .outcome(&full, None)
        .map(|outcome| outcome.success)
        .unwrap_or(false)
}

#[test]
fn chart_installs_reconciles_with_its_own_rbac_and_uninstalls_to_just_the_crd() {
    let release_ns = TestNamespace::create("wsfleet-system").unwrap();
    let apps = TestNamespace::create("chart-apps").unwrap();
    let control_plane = release_ns.control_plane();
    let admin = control_plane.kubectl();
    let chart = workspace_root().join("charts/wsfleet");

    helm(
        control_plane,
        &[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            release_ns.name(),
            "--wait",
            "--timeout",
            "3m",
        ],
    )
    .unwrap();

    // The chart's objects exist, and the (fake) operator pods became available.
    let ns = release_ns.kubectl();
    let deployment = ns.get("deployment", RELEASE).unwrap();
    assert_eq!(
        deployment["status"]["availableReplicas"], 2,
        "{}",
        deployment["status"]
    );
    for (kind, name) in [
        ("serviceaccount", RELEASE),
        ("service", "wsfleet-metrics"),
        ("poddisruptionbudget", RELEASE),
        ("role", "wsfleet-leader-election"),
        ("rolebinding", "wsfleet-leader-election"),
    ] {
        ns.get(kind, name)
            .unwrap_or_else(|err| panic!("{kind} {name}: {err:#}"));
    }
    admin.get("clusterrole", RELEASE).unwrap();
    admin.get("clusterrolebinding", RELEASE).unwrap();
    admin.get("crd", "websocketservices.wsfleet.io").unwrap();

    // Least privilege, as the API server's authorizer sees it.
    let sa = format!("system:serviceaccount:{}:{RELEASE}", release_ns.name());
    let apps_ns = apps.name();
    let release = release_ns.name();
    // Delete on its child kinds is there for OwnerReferencesPermissionEnforcement (see
    // _helpers.tpl): one object at a time, and nothing it does not own.
    let expected: [(bool, &[&str]); 14] = [
        (true, &["watch", "websocketservices.wsfleet.io", "-A"]),
        (true, &["patch", "deployments", "-n", apps_ns]),
        (
            false,
            &["update", "websocketservices.wsfleet.io", "-n", apps_ns],
        ),
        (
            false,
            &["delete", "websocketservices.wsfleet.io", "-n", apps_ns],
        ),
        (true, &["delete", "deployments", "-n", apps_ns]),
        (false, &["deletecollection", "deployments", "-n", apps_ns]),
        (false, &["update", "deployments", "-n", apps_ns]),
        (false, &["delete", "pods", "-n", apps_ns]),
        (false, &["delete", "replicasets.apps", "-n", apps_ns]),
        (false, &["list", "pods", "-n", apps_ns]),
        (false, &["get", "nodes"]),
        (false, &["update", "leases/someone-else", "-n", release]),
        (
            true,
            &[
                "update",
                "websocketservices.wsfleet.io",
                "--subresource",
                "finalizers",
                "-n",
                apps_ns,
            ],
        ),
        // Status is written with apply (patch) only.
        (
            false,
            &[
                "update",
                "websocketservices.wsfleet.io",
                "--subresource",
                "status",
                "-n",
                apps_ns,
            ],
        ),
    ];
    for (allowed, request) in expected {
        assert_eq!(can_i(&admin, &sa, request), allowed, "can-i {request:?}");
    }

    // The real operator, with only the ServiceAccount's token.
    let token = ns
        .run(&["create", "token", RELEASE, "--duration", "1h"])
        .unwrap();
    let kubeconfig =
        kubeconfig_with_token(control_plane.kubeconfig(), token.trim(), release_ns.dir()).unwrap();
    let (mut operator, metrics_port) =
        start_operator_as_service_account(&kubeconfig, release_ns.name(), release_ns.dir())
            .unwrap();
    let lease = ns.get("lease", "wsfleet-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "chart-install-test");

    // Plain ws, then TLS + JWT + autoscaling: configmaps, secrets (read and create),
    // services, deployments, HPAs and PDBs all go through the chart's RBAC.
    let app = apps.kubectl();
    create_backend_service(app, apps.name()).unwrap();
    create_jwt_secret(app, apps.dir()).unwrap();
    for example in ["minimal", "production"] {
        let manifest =
            std::fs::read_to_string(workspace_root().join(format!("examples/{example}.yaml")))
                .unwrap();
        app.apply(&manifest).unwrap();
    }
    await_conditions(app, "chat", &[Expected::new("Ready", "True")]).unwrap();
    await_conditions(
        app,
        "chat-prod",
        &[
            Expected::new("Ready", "True"),
            Expected::new("CertificateReady", "True"),
        ],
    )
    .unwrap();
    app.get("hpa", "chat-prod-gateway").unwrap();
    app.get("pdb", "chat-prod-gateway").unwrap();
    app.get("secret", "chat-prod-tls").unwrap();

    // Upgrading from an operator that wrote owner references without blockOwnerDeletion: the
    // first apply to each such child changes its owner references, which
    // OwnerReferencesPermissionEnforcement allows only to a client that may delete the child.
    let owner = app.get("wss", "chat-prod").unwrap();
    let children = expected_children("chat-prod", Some("chat-prod-tls"), true);
    for child in &children {
        let written = write_owner_reference_without_blocking(app, &owner, child).unwrap();
        assert!(
            !blocks_owner_deletion(&written),
            "{} {}: {}",
            child.kind,
            child.name,
            written["metadata"]["ownerReferences"]
        );
    }
    // The TLS Secret is applied only when a certificate is issued; a new DNS name issues one.
    json_patch(
        app,
        "wss",
        "chat-prod",
        r#"[{"op": "add", "path": "/spec/tls/dnsNames/-", "value": "ws.example.com"}]"#,
    )
    .unwrap();
    eventually(
        "every child of chat-prod to block its owner's deletion again",
        DEADLINE,
        || {
            for child in &children {
                let object = app.get(child.kind, &child.name)?;
                ensure!(
                    blocks_owner_deletion(&object),
                    "{} {}: {}",
                    child.kind,
                    child.name,
                    object["metadata"]["ownerReferences"]
                );
            }
            Ok(())
        },
    )
    .unwrap();
    await_conditions(
        app,
        "chat-prod",
        &[
            Expected::new("Ready", "True"),
            Expected::new("CertificateReady", "True").because("CertificateRenewed"),
        ],
    )
    .unwrap();
    let metrics = http_get(metrics_port, "/metrics").unwrap();
    assert!(
        !metrics.lines().any(|line| line
            .starts_with(r#"wsfleet_operator_reconcile_errors_total{reason="ApplyFailed"}"#)),
        "an apply failed on the way:\n{metrics}"
    );

    // Dropping autoscaling deletes the HPA: the one delete the operator does.
    json_patch(
        app,
        "wss",
        "chat-prod",
        r#"[{"op": "remove", "path": "/spec/autoscaling"}]"#,
    )
    .unwrap();
    eventually("the HPA of chat-prod to be deleted", DEADLINE, || {
        ensure!(
            app.try_get("hpa", "chat-prod-gateway")?.is_none(),
            "still there"
        );
        Ok(())
    })
    .unwrap();

    // Events: a fleet whose upstream is missing is reported as a Warning Event.
    app.apply(
        "apiVersion: wsfleet.io/v1alpha1
kind: WebSocketService
metadata:
  name: orphan
spec:
  upstream: {service: no-such-backend, port: 8080}
",
    )
    .unwrap();
    eventually("a Warning Event for the missing upstream", DEADLINE, || {
        let events = app.list("events.events.k8s.io", "")?;
        ensure!(
            events
                .iter()
                .any(|event| event["reason"] == "UpstreamServiceNotFound"
                    && event["regarding"]["name"] == "orphan"),
            "no UpstreamServiceNotFound event among {} events",
            events.len()
        );
        Ok(())
    })
    .unwrap();

    operator.ensure_running().unwrap();
    let log = std::fs::read_to_string(operator.log_path()).unwrap();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something the chart should grant:\n{log}"
    );
    operator.terminate(std::time::Duration::from_secs(10));

    // Uninstall: everything the chart created goes, the CRD stays (Helm never deletes crds/).
    helm(
        control_plane,
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            release_ns.name(),
            "--wait",
        ],
    )
    .unwrap();
    eventually("the release's objects to be gone", DEADLINE, || {
        let left = remaining_release_objects(&admin, release_ns.name())?;
        ensure!(left.is_empty(), "still present: {left:?}");
        Ok(())
    })
    .unwrap();
    admin.get("crd", "websocketservices.wsfleet.io").unwrap();
}

/// As the admin, replaces `child`'s owner references with the controller reference an older
/// operator wrote: pointing at `owner`, without blockOwnerDeletion. Returns the child as written.
fn write_owner_reference_without_blocking(
    kubectl: &wsfleet_e2e::Kubectl,
    owner: &Value,
    child: &Child,
) -> Result<Value> {
    let patch = json!([{
        "op": "replace",
        "path": "/metadata/ownerReferences",
        "value": [{
            "apiVersion": "wsfleet.io/v1alpha1",
            "kind": "WebSocketService",
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": true,
        }],
    }]);
    json_patch(kubectl, child.kind, &child.name, &patch.to_string()).with_context(|| {
        format!(
            "rewriting the owner reference of {} {}",
            child.kind, child.name
        )
    })
}

/// Applies a JSON patch to one object; returns the object as patched.
fn json_patch(
    kubectl: &wsfleet_e2e::Kubectl,
    kind: &str,
    name: &str,
    patch: &str,
) -> Result<Value> {
    let written = kubectl.run(&[
        "patch", kind, name, "--type", "json", "-p", patch, "-o", "json",
    ])?;
    serde_json::from_str(&written).with_context(|| format!("parsing {kind} {name} as patched"))
}

/// Whether `object`'s controller reference has blockOwnerDeletion set.
fn blocks_owner_deletion(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|reference| reference["controller"] == true && reference["blockOwnerDeletion"] == true)
}

/// Every object labelled as part of the release, cluster-wide and in its namespace.
fn remaining_release_objects(
    kubectl: &wsfleet_e2e::Kubectl,
    namespace: &str,
) -> Result<Vec<String>> {
    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm");
    let mut left = Vec::new();
    for kind in ["clusterroles", "clusterrolebindings"] {
        for object in kubectl.list(kind, &selector)? {
            left.push(format!("{kind}/{}", object["metadata"]["name"]));
        }
    }
    let scoped = kubectl.in_namespace(namespace);
    for kind in [
        "deployments",
        "replicasets",
        "pods",
        "services",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "poddisruptionbudgets",
        "configmaps",
    ] {
        for object in scoped.list(kind, &selector)? {
            left.push(format!("{kind}/{}", object["metadata"]["name"]));
        }
    }
    Ok(left)
}
