//! A local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler in a temporary directory, stopped when dropped. Its nodes are either kwok's
//! fakes (pods turn Ready without running; everything on loopback) or a real node
//! ([`crate::node`]), for which the apiserver listens on the node's address so that pods
//! reach it through the `kubernetes` Service. Fault tests stop and start the apiserver and
//! stall etcd of a control plane of their own.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, ensure};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::binaries::{control_plane_bin_dir, workspace_root};
use crate::kubectl::Kubectl;
use crate::net::{free_port, http_get};
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;
use crate::test_ca::{CertificateAuthority, service_account_key_pair};

/// The controllers the operator's children depend on: Deployments roll out ReplicaSets and
/// Pods, owner references are garbage-collected, namespaces are emptied on deletion and
/// HorizontalPodAutoscalers are served.
const FAKE_NODE_CONTROLLERS: &str = "deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,horizontal-pod-autoscaler-controller";

/// Operator replicas with these identities authenticate as users of the same name (in
/// system:masters, like the admin), so the audit log tells their writes apart.
pub const REPLICA_USERS: [&str; 2] = ["replica-a", "replica-b"];

/// Where the cluster's pods run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nodes {
    /// kwok's fake nodes; the apiserver on 127.0.0.1.
    Fake,
    /// One real node (kubelet, containerd, kube-proxy) started separately; the apiserver listens
    /// on the node's address and runs every default controller, with the ServiceAccount token
    /// and root-CA publishers that real pods need.
    Real {
        address: std::net::Ipv4Addr,
        service_range: &'static str,
        kubernetes_service_ip: std::net::Ipv4Addr,
    },
}

/// Fake nodes that kwok keeps Ready; two zones so that topology spreading has room.
const FAKE_NODES: [(&str, &str); 2] = [("kwok-node-0", "zone-a"), ("kwok-node-1", "zone-b")];

/// A running control plane; see the module docs.
pub struct ControlPlane {
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    running: Mutex<Option<Running>>,
    crd_installed: OnceLock<Result<(), String>>,
}

/// What is torn down on stop: processes (stopped in reverse start order), then the directory.
struct Running {
    processes: Vec<ManagedProcess>,
    dir: TempDir,
    /// How kube-apiserver was started, so that it starts again on the same port, certificates
    /// and etcd.
    apiserver: Recipe,
}

/// A program and its arguments, to spawn it again as it first was.
struct Recipe {
    program: OsString,
    args: Vec<OsString>,
}

impl Recipe {
    fn of(command: &Command) -> Self {
        Self {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane shared by every test in this test binary, started on first use
    /// and stopped when the binary exits.
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| {
            let control_plane =
                ControlPlane::start(Nodes::Fake).map_err(|err| format!("{err:#}"))?;
            crate::process::at_exit(stop_shared);
            Ok(control_plane)
        });
        match started {
            Ok(control_plane) => control_plane,
            Err(err) => panic!("the control plane did not start: {err}"),
        }
    }

    /// Starts every component and waits until each is serving.
    pub fn start(nodes: Nodes) -> Result<Self> {
        let bin_dir = control_plane_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("wsfleet-e2e-")
            .tempdir()
            .context("creating the control-plane directory")?;
        eprintln!("control plane: {}", dir.path().display());
        let mut processes = Vec::new();
        let started = Self::start_components(&bin_dir, dir.path(), nodes, &mut processes);
        let (kubeconfig, server, apiserver) = match started {
            Ok(started) => started,
            Err(err) => {
                // Show why before the directory and its logs go away.
                let logs: String = processes
                    .iter()
                    .map(|process| format!("--- {} ---\n{}\n", process.name(), process.log_tail()))
                    .collect();
                return Err(err.context(logs));
            }
        };
        Ok(Self {
            bin_dir,
            kubeconfig,
            server,
            running: Mutex::new(Some(Running {
                processes,
                dir,
                apiserver,
            })),
            crd_installed: OnceLock::new(),
        })
    }

    fn start_components(
        bin_dir: &Path,
        dir: &Path,
        nodes: Nodes,
        processes: &mut Vec<ManagedProcess>,
    ) -> Result<(PathBuf, String, Recipe)> {
        let etcd_url = start_etcd(bin_dir, dir, processes)?;
        let (kubeconfig, server, apiserver) =
            start_apiserver(bin_dir, dir, &etcd_url, nodes, processes)?;
        let kubectl = Kubectl::new(&bin_dir.join("kubectl"), &kubeconfig);
        start_controllers(bin_dir, dir, &kubeconfig, nodes, processes)?;
        if nodes == Nodes::Fake {
            start_fake_nodes(bin_dir, dir, &kubeconfig, &kubectl, processes)?;
        }
        Ok((kubeconfig, server, apiserver))
    }

    /// SIGKILL to kube-apiserver, as when it crashes or is OOM-killed; etcd keeps the state.
    pub fn stop_apiserver(&self) -> Result<()> {
        self.with_process(APISERVER, |process, _| {
            process.kill();
            Ok(())
        })
    }

    /// Starts kube-apiserver again as it first started (same port, certificates, etcd, audit
    /// log) and waits until it is ready.
    pub fn start_apiserver(&self) -> Result<()> {
        let kubectl = self.kubectl();
        self.with_process(APISERVER, |process, running| {
            *process = ManagedProcess::spawn(
                APISERVER,
                running.apiserver.command(),
                &running.dir.path().join("kube-apiserver.log"),
            )?;
            await_apiserver_ready(process, &kubectl)
        })
    }

    /// SIGSTOP to etcd: it keeps its sockets but answers nothing, as in a stalled disk or VM.
    pub fn pause_etcd(&self) -> Result<()> {
        self.with_process(ETCD, |process, _| {
            process.signal(Signal::SIGSTOP);
            Ok(())
        })
    }

    /// SIGCONT after [`ControlPlane::pause_etcd`].
    pub fn resume_etcd(&self) -> Result<()> {
        self.with_process(ETCD, |process, _| {
            process.signal(Signal::SIGCONT);
            Ok(())
        })
    }

    fn with_process(
        &self,
        name: &str,
        act: impl FnOnce(&mut ManagedProcess, &Running) -> Result<()>,
    ) -> Result<()> {
        let mut guard = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let running = guard.as_mut().context("the control plane was stopped")?;
        let index = running
            .processes
            .iter()
            .position(|process| process.name() == name)
            .with_context(|| format!("no {name} in this control plane"))?;
        // Taken out for the call, so that `act` may read the rest of `running`.
        let mut process = running.processes.remove(index);
        let acted = act(&mut process, running).with_context(|| format!("acting on {name}"));
        running.processes.insert(index, process);
        acted
    }

    /// kubectl (the one built with the control plane) bound to this cluster's kubeconfig.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.bin_dir.join("kubectl"), &self.kubeconfig)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig of one of [`REPLICA_USERS`].
    pub fn kubeconfig_of(&self, user: &str) -> Option<PathBuf> {
        let path = self.kubeconfig.with_file_name(format!("kubeconfig-{user}"));
        path.is_file().then_some(path)
    }

    /// A kubeconfig of one of [`REPLICA_USERS`] that reaches the apiserver at `server` (a relay
    /// on 127.0.0.1, which the serving certificate covers on any port) instead.
    pub fn kubeconfig_via(&self, user: &str, server: &str) -> Result<PathBuf> {
        let direct = self
            .kubeconfig_of(user)
            .with_context(|| format!("{user} is not a replica user"))?;
        let text = std::fs::read_to_string(&direct)
            .with_context(|| format!("reading {}", direct.display()))?;
        let port = server.rsplit(':').next().unwrap_or_default();
        let path = direct.with_file_name(format!("kubeconfig-{user}-via-{port}"));
        let redirected = text.replace(
            &format!("server: {}\n", self.server),
            &format!("server: {server}\n"),
        );
        std::fs::write(&path, redirected).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Every write `user` made in `namespace` that the apiserver answered, oldest first.
    pub fn audited_writes(&self, user: &str, namespace: &str) -> Result<Vec<AuditedWrite>> {
        let log = self.kubeconfig.with_file_name(AUDIT_LOG);
        let text =
            std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        let mut writes = Vec::new();
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("parsing audit event {line}"))?;
            if event["user"]["username"] != user
                || event["objectRef"]["namespace"] != namespace
                || event["stage"] != "ResponseComplete"
            {
                continue;
            }
            let field = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
            writes.push(AuditedWrite {
                at: field(&event["requestReceivedTimestamp"]),
                answered: field(&event["stageTimestamp"]),
                code: event["responseStatus"]["code"].as_u64().unwrap_or_default(),
                verb: field(&event["verb"]),
                namespace: field(&event["objectRef"]["namespace"]),
                resource: field(&event["objectRef"]["resource"]),
                name: field(&event["objectRef"]["name"]),
            });
        }
        Ok(writes)
    }

    /// The apiserver's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Installs the WebSocketService CRD from crds/ (once) and waits until it is Established.
    pub fn install_crd(&self) -> Result<()> {
        self.crd_installed
            .get_or_init(|| self.apply_crd().map_err(|err| format!("{err:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn apply_crd(&self) -> Result<()> {
        let crd = workspace_root().join("crds/websocketservices.yaml");
        let kubectl = self.kubectl();
        kubectl.run(&["apply", "--server-side", "-f", &crd.display().to_string()])?;
        kubectl.run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=180s",
            "crd/websocketservices.wsfleet.io",
        ])?;
        Ok(())
    }

    /// Stops every process and removes the directory; later calls do nothing.
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(Running {
            mut processes, dir, ..
        }) = running
        {
            while let Some(mut process) = processes.pop() {
                process.kill();
            }
            if std::env::var_os("WSFLEET_E2E_KEEP").is_some() {
                eprintln!("keeping {}", dir.keep().display());
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

extern "C" fn stop_shared() {
    if let Some(Ok(control_plane)) = SHARED.get() {
        control_plane.stop();
    }
}

fn start_etcd(bin_dir: &Path, dir: &Path, processes: &mut Vec<ManagedProcess>) -> Result<String> {
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

fn start_apiserver(
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

fn await_apiserver_ready(process: &mut ManagedProcess, kubectl: &Kubectl) -> Result<()> {
    eventually("kube-apiserver /readyz", DEADLINE, || {
        process.ensure_running().map_err(give_up)?;
        let body = kubectl.raw("/readyz")?;
        ensure!(body.trim() == "ok", "/readyz says {body}");
        Ok(())
    })
}

fn start_controllers(
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
        "kube-controller-manager",
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

fn start_fake_nodes(
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

const AUDIT_LOG: &str = "audit.log";

/// Writes are logged with who made them; reads are not logged at all.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// One write the apiserver answered, from its audit log.
#[derive(Debug, Clone)]
pub struct AuditedWrite {
    /// RFC 3339 in UTC with microseconds: strings of one shape compare as times do.
    pub at: String,
    /// When the apiserver answered, in the same form: a write may take effect until then.
    pub answered: String,
    /// The HTTP status it was answered with.
    pub code: u64,
    pub verb: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
}

fn render_kubeconfig(server: &str, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: wsfleet-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: wsfleet-e2e
  context:
    cluster: wsfleet-e2e
    user: admin
current-context: wsfleet-e2e
",
        ca = ca_file.display()
    )
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
