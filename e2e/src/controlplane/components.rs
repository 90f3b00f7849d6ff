//! Starting each component: etcd, the apiserver (with its certificates, audit log and
//! kubeconfigs), the controller manager and scheduler, and kwok's fake nodes.

use super::*;

pub(super) fn start_etcd(
    bin_dir: &Path,
    dir: &Path,
    processes: &mut Vec<ManagedProcess>,
) -> Result<String> {
    let client_port = free_port()?;
    let peer_url = format!("http://127.0.0.1:{}", free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let mut etcd = Command::new(bin_dir.join("etcd"));
    etcd.arg("--name=e2e")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=e2e={peer_url}"))
        // Durability is pointless for a throwaway cluster and fsync is slow on shared disks.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    processes.push(ManagedProcess::spawn(ETCD, etcd, &dir.join("etcd.log"))?);
    let process = processes.last_mut().expect("etcd was just started");
    eventually("etcd /health", DEADLINE, || {
        process.ensure_running().map_err(give_up)?;
        let body = http_get(client_port, "/health")?;
        ensure!(body.contains(r#""health":"true""#), "etcd says {body}");
        Ok(())
    })?;
    Ok(client_url)
}

pub(super) fn start_apiserver(
    bin_dir: &Path,
    dir: &Path,
    etcd_url: &str,
    nodes: Nodes,
    processes: &mut Vec<ManagedProcess>,
) -> Result<(PathBuf, String, Recipe)> {
    let port = free_port()?;
    let ca = CertificateAuthority::new("wsfleet-e2e-ca")?;
    let (address, service_range, serving) = match nodes {
        Nodes::Fake => (
            "127.0.0.1".to_owned(),
            "10.96.0.0/16",
            ca.issue_serving(&["127.0.0.1", "localhost"])?,
        ),
        Nodes::Real {
            address,
            service_range,
            kubernetes_service_ip,
        } => (
            address.to_string(),
            service_range,
            // Pods reach the apiserver through the kubernetes Service, by IP or by name.
            ca.issue_serving(&[
                &address.to_string(),
                &kubernetes_service_ip.to_string(),
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ])?,
        ),
    };
    let server = format!("https://{address}:{port}");
    let (sa_private, sa_public) = service_account_key_pair()?;
    let token = random_token()?;
    let mut tokens = format!("{token},admin,admin,system:masters\n");
    let mut replica_tokens = Vec::new();
    for user in REPLICA_USERS {
        let replica_token = random_token()?;
        tokens.push_str(&format!("{replica_token},{user},{user},system:masters\n"));
        replica_tokens.push((user, replica_token));
    }
    let files = [
        ("ca.crt", ca.cert_pem()),
        ("apiserver.crt", serving.cert_pem),
        ("apiserver.key", serving.key_pem),
        ("sa.key", sa_private),
        ("sa.pub", sa_public),
        // An admin and the replica users, all in system:masters; RBAC lets them do anything.
        ("tokens.csv", tokens),
        // Every write, by whom and when: who acted while which replica led.
        ("audit-policy.yaml", AUDIT_POLICY.to_owned()),
    ];
    for (name, contents) in &files {
        std::fs::write(dir.join(name), contents)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let file = |name: &str| dir.join(name).display().to_string();

    let mut apiserver = Command::new(bin_dir.join("kube-apiserver"));
    apiserver
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg(format!("--bind-address={address}"))
        .arg(format!("--advertise-address={address}"))
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", file("certs")))
        .arg(format!("--tls-cert-file={}", file("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", file("apiserver.key")))
        .arg(format!("--token-auth-file={}", file("tokens.csv")))
        .arg(format!("--audit-policy-file={}", file("audit-policy.yaml")))
        .arg(format!("--audit-log-path={}", file(AUDIT_LOG)))
        .arg("--audit-log-format=json")
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-account-issuer={server}/"))
        .arg(format!("--service-account-key-file={}", file("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            file("sa.key")
        ))
        .arg(format!("--service-cluster-ip-range={service_range}"))
        .arg("--allow-privileged=true")
        // As on clusters that enforce it: blockOwnerDeletion on a child's owner reference
        // needs update on the owner's finalizers, so the chart's RBAC is held to that.
        .arg("--enable-admission-plugins=OwnerReferencesPermissionEnforcement")
        .arg("--profiling=false")
        .arg("--v=1");
    match nodes {
        Nodes::Fake => apiserver
            // No token controller runs, so pods could never get their service-account token;
            // no node-lifecycle controller runs to lift the not-ready taint from new nodes.
            .arg("--disable-admission-plugins=ServiceAccount,TaintNodesByCondition")
            // The kubernetes Service would point at 127.0.0.1, which Endpoints refuse.
            .arg("--endpoint-reconciler-type=none"),
        // Logs and exec go to the node's address: its name is in no resolver. The aggregation
        // layer serves metrics-server and KEDA's metrics adapter, which run on the host.
        Nodes::Real { .. } => apiserver
            .arg("--kubelet-preferred-address-types=InternalIP")
            .args(crate::aggregation::apiserver_flags(dir)?),
    };
    let recipe = Recipe::of(&apiserver);
    processes.push(ManagedProcess::spawn(
        APISERVER,
        apiserver,
        &dir.join("kube-apiserver.log"),
    )?);
    let process = processes
        .last_mut()
        .expect("kube-apiserver was just started");

    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        render_kubeconfig(&server, &dir.join("ca.crt"), &token),
    )
    .context("writing the kubeconfig")?;
    for (user, replica_token) in &replica_tokens {
        std::fs::write(
            dir.join(format!("kubeconfig-{user}")),
            render_kubeconfig(&server, &dir.join("ca.crt"), replica_token),
        )
        .with_context(|| format!("writing the kubeconfig of {user}"))?;
    }
    let kubectl = Kubectl::new(&bin_dir.join("kubectl"), &kubeconfig);
    await_apiserver_ready(process, &kubectl)?;
    Ok((kubeconfig, server, recipe))
}

pub(super) fn await_apiserver_ready(process: &mut ManagedProcess, kubectl: &Kubectl) -> Result<()> {
    eventually("kube-apiserver /readyz", DEADLINE, || {
        process.ensure_running().map_err(give_up)?;
        let body = kubectl.raw("/readyz")?;
        ensure!(body.trim() == "ok", "/readyz says {body}");
        Ok(())
    })
}

pub(super) fn start_controllers(
    bin_dir: &Path,
    dir: &Path,
    kubeconfig: &Path,
    nodes: Nodes,
    processes: &mut Vec<ManagedProcess>,
) -> Result<()> {
    let kubeconfig_flag = format!("--kubeconfig={}", kubeconfig.display());
    let mut controller_manager = Command::new(bin_dir.join("kube-controller-manager"));
    controller_manager
        .arg(&kubeconfig_flag)
        .arg("--leader-elect=false")
        .arg("--secure-port=0")
        .arg("--v=1");
    match nodes {
        Nodes::Fake => controller_manager.arg(format!("--controllers={FAKE_NODE_CONTROLLERS}")),
        // Every default controller, with what the token and root-CA publishers sign with.
        Nodes::Real { .. } => controller_manager
            .arg(format!(
                "--service-account-private-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg(format!("--root-ca-file={}", dir.join("ca.crt").display()))
            // The HPA acts within seconds of a change, not the default 15 s sync.
            .arg("--horizontal-pod-autoscaler-sync-period=5s"),
    };
    processes.push(ManagedProcess::spawn(
        CONTROLLER_MANAGER,
        controller_manager,
        &dir.join("kube-controller-manager.log"),
    )?);

    let mut scheduler = Command::new(bin_dir.join("kube-scheduler"));
    scheduler
        .arg(&kubeconfig_flag)
        .arg("--leader-elect=false")
        .arg("--secure-port=0")
        .arg("--v=1");
    processes.push(ManagedProcess::spawn(
        "kube-scheduler",
        scheduler,
        &dir.join("kube-scheduler.log"),
    )?);
    Ok(())
}

pub(super) fn start_fake_nodes(
    bin_dir: &Path,
    dir: &Path,
    kubeconfig: &Path,
    kubectl: &Kubectl,
    processes: &mut Vec<ManagedProcess>,
) -> Result<()> {
    let stages = workspace_root().join("e2e/kwok/stages.yaml");
    let mut kwok = Command::new(bin_dir.join("kwok"));
    kwok.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--config={}", stages.display()))
        .arg("--manage-all-nodes=false")
        .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
        .arg(format!("--server-address=127.0.0.1:{}", free_port()?))
        .arg("--cidr=10.244.0.0/16")
        .arg("--node-ip=10.243.0.1")
        // kwok reads ~/.kwok/kwok.yaml too; keep the user's out of the tests.
        .env("HOME", dir);
    processes.push(ManagedProcess::spawn("kwok", kwok, &dir.join("kwok.log"))?);
    let process = processes.last_mut().expect("kwok was just started");

    let mut manifest = String::new();
    for (name, zone) in FAKE_NODES {
        write!(
            manifest,
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    kwok.x-k8s.io/node: fake\n  labels:\n    type: kwok\n    kubernetes.io/hostname: {name}\n    kubernetes.io/os: linux\n    kubernetes.io/arch: amd64\n    topology.kubernetes.io/zone: {zone}\n---\n"
        )?;
    }
    kubectl
        .create(&manifest)
        .context("creating the fake nodes")?;
    for (name, _) in FAKE_NODES {
        eventually(&format!("fake node {name} Ready"), DEADLINE, || {
            process.ensure_running().map_err(give_up)?;
            let node = kubectl.get("node", name)?;
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ensure!(ready, "conditions {}", node["status"]["conditions"]);
            Ok(())
        })?;
    }
    Ok(())
}
