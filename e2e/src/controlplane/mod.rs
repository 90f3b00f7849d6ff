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

mod access;
mod components;

pub use access::AuditedWrite;
use access::*;
use components::*;

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
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

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
        self.signal(ETCD, Signal::SIGSTOP)
    }

    /// SIGCONT after [`ControlPlane::pause_etcd`].
    pub fn resume_etcd(&self) -> Result<()> {
        self.signal(ETCD, Signal::SIGCONT)
    }

    /// SIGSTOP to kube-controller-manager: no Deployment is observed, and no pod made, until
    /// [`ControlPlane::resume_controller_manager`].
    pub fn pause_controller_manager(&self) -> Result<()> {
        self.signal(CONTROLLER_MANAGER, Signal::SIGSTOP)
    }

    /// SIGCONT after [`ControlPlane::pause_controller_manager`].
    pub fn resume_controller_manager(&self) -> Result<()> {
        self.signal(CONTROLLER_MANAGER, Signal::SIGCONT)
    }

    fn signal(&self, name: &str, signal: Signal) -> Result<()> {
        self.with_process(name, |process, _| {
            process.signal(signal);
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
