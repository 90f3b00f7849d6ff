//! A real Kubernetes node on this machine: containerd with runc and the CNI bridge, kubelet,
//! kube-proxy and CoreDNS, beside a control plane started for it.
//!
//! What this machine needs (cgroup v1, no CAP_SYS_RESOURCE, no `dummy` links) is set in the
//! component modules, each with the reason. Everything the node changes on the host is put
//! back by [`RealCluster::stop`]; a run that died half-way is undone by the next start (see
//! [`host`]). Only one real node runs on a machine at a time: a lock file says which.

pub mod cgroups;
pub mod containerd;
pub mod dns;
pub mod host;
pub mod images;
pub mod kubelet;
pub mod network;
pub mod outside;
pub mod proxy;

use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use self::containerd::ContainerdPaths;
use self::host::HostRecord;
use self::network::{KUBERNETES_SERVICE_IP, NODE_IP, SERVICE_RANGE};
use crate::binaries::control_plane_bin_dir;
use crate::controlplane::{ControlPlane, Nodes};
use crate::kubectl::Kubectl;
use crate::net::free_port;
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;

/// The node's fixed state directory: fixed, so that a later run finds what an earlier one left.
pub const STATE_DIR: &str = "/var/tmp/wsfleet-node";
/// Held while a node runs; removed when it stops.
pub const LOCK_FILE: &str = "/var/tmp/wsfleet-node.lock";
const HOST_RECORD: &str = "host.json";

/// A control plane and one real node, stopped (and the host restored) by [`RealCluster::stop`].
pub struct RealCluster {
    control_plane: ControlPlane,
    running: Mutex<Option<Running>>,
    _lock: Flock<File>,
}

struct Running {
    /// Node processes, stopped in reverse start order.
    processes: Vec<ManagedProcess>,
}

static SHARED: OnceLock<Result<RealCluster, String>> = OnceLock::new();

impl RealCluster {
    /// The cluster shared by every test in this test binary, started on first use and stopped
    /// (host restored) when the binary exits.
    pub fn shared() -> &'static RealCluster {
        Self::try_shared().unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// Like [`RealCluster::shared`], for a program that reports a failure to start rather
    /// than panicking.
    pub fn try_shared() -> Result<&'static RealCluster> {
        let started = SHARED.get_or_init(|| {
            let cluster = RealCluster::start().map_err(|err| format!("{err:#}"))?;
            crate::process::at_exit(stop_shared);
            Ok(cluster)
        });
        started
            .as_ref()
            .map_err(|err| anyhow::anyhow!("the real node did not start: {err}"))
    }

    /// Cleans up after any earlier run, records the host, and starts everything.
    pub fn start() -> Result<Self> {
        let started = Instant::now();
        let lock = lock()?;
        let bin_dir = control_plane_bin_dir()?;
        let state = Path::new(STATE_DIR);
        restore_host(&bin_dir, state).context("cleaning up after an earlier run")?;
        let images = images::archives()?;
        std::fs::create_dir_all(state).with_context(|| format!("creating {STATE_DIR}"))?;
        // Recorded before anything changes, so a crash at any later point can be undone.
        HostRecord::capture()?.save(&state.join(HOST_RECORD))?;
        let control_plane = network::up()
            .context("setting up the node's network")
            .and_then(|()| {
                ControlPlane::start(Nodes::Real {
                    address: NODE_IP,
                    service_range: SERVICE_RANGE,
                    kubernetes_service_ip: KUBERNETES_SERVICE_IP,
                })
                .context("starting the control plane")
            });
        let control_plane = match control_plane {
            Ok(control_plane) => control_plane,
            Err(err) => {
                if let Err(cleanup) = restore_host(&bin_dir, state) {
                    eprintln!("the host was not fully restored: {cleanup:#}");
                }
                return Err(err);
            }
        };
        let mut processes = Vec::new();
        let paths = ContainerdPaths::under(state);
        let outcome = start_node(
            &bin_dir,
            state,
            &control_plane,
            &paths,
            &images,
            &mut processes,
        );
        let cluster = Self {
            control_plane,
            running: Mutex::new(Some(Running { processes })),
            _lock: lock,
        };
        if let Err(err) = outcome {
            let logs = cluster.log_tails();
            cluster.stop();
            return Err(err.context(logs));
        }
        eprintln!(
            "real node {} up in {:.1}s (state in {STATE_DIR})",
            kubelet::NODE_NAME,
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    pub fn kubectl(&self) -> Kubectl {
        self.control_plane.kubectl()
    }

    /// The end of each node process' log (containerd, kubelet, kube-proxy, CoreDNS), for
    /// failures that the node may explain.
    pub fn log_tails(&self) -> String {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .flat_map(|running| &running.processes)
            .map(|process| format!("--- {} ---\n{}\n", process.name(), process.log_tail()))
            .collect()
    }

    /// Stops the node and the control plane and puts the host back as it was; later calls do
    /// nothing. Failures to restore are printed: there is no one else to tell at exit.
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(Running { mut processes }) = running else {
            return;
        };
        // CoreDNS, kube-proxy and kubelet first, so that nothing restarts a pod; containerd
        // last. The pods' processes and shims go with the host's restoration.
        while let Some(mut process) = processes.pop() {
            process.terminate(Duration::from_secs(5));
        }
        self.control_plane.stop();
        let bin_dir = self.control_plane.bin_dir().to_owned();
        match restore_host(&bin_dir, Path::new(STATE_DIR)) {
            // The lock is held until this value drops; the file itself is the last leftover.
            Ok(()) => {
                let _ = std::fs::remove_file(LOCK_FILE);
            }
            Err(err) => eprintln!("the real node's host state was not fully restored: {err:#}"),
        }
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

extern "C" fn stop_shared() {
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.stop();
    }
}

fn start_node(
    bin_dir: &Path,
    state: &Path,
    control_plane: &ControlPlane,
    paths: &ContainerdPaths,
    images: &[images::Archive],
    processes: &mut Vec<ManagedProcess>,
) -> Result<()> {
    let kubeconfig = control_plane.kubeconfig();
    processes.push(containerd::start(state, paths)?);
    for image in images {
        containerd::import_image(paths, &image.path, &image.name)?;
    }
    processes.push(kubelet::start(
        bin_dir,
        state,
        kubeconfig,
        paths,
        free_port()?,
        free_port()?,
    )?);
    processes.push(proxy::start(
        bin_dir,
        state,
        kubeconfig,
        free_port()?,
        free_port()?,
    )?);
    processes.push(dns::start(bin_dir, state, kubeconfig, free_port()?)?);
    let kubectl = control_plane.kubectl();
    eventually("the real node to be Ready", DEADLINE, || {
        for process in processes.iter_mut() {
            process.ensure_running().map_err(give_up)?;
        }
        let node = kubectl.get("node", kubelet::NODE_NAME)?;
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let tainted = node["spec"]["taints"]
            .as_array()
            .is_some_and(|t| !t.is_empty());
        ensure!(
            ready && !tainted,
            "conditions {}, taints {}",
            node["status"]["conditions"],
            node["spec"]["taints"]
        );
        Ok(())
    })
}

/// Takes the machine-wide lock, or says who holds it.
fn lock() -> Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!("another real node runs on this machine ({LOCK_FILE} is locked: {errno})")
    })
}

/// Stops containerd's shims (found by the socket they were given), which outlive containerd.
fn kill_shims(containerd_socket: &Path) {
    let socket = containerd_socket.display().to_string();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in processes.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        let is_shim = args
            .first()
            .is_some_and(|program| program.ends_with(b"containerd-shim-runc-v2"));
        if is_shim && args.contains(&socket.as_bytes()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Undoes everything a node run did, from its host record: pods' processes and cgroups, shims,
/// mounts, kube-proxy's and the isolation rules, the bridge, sysctls, outside directories and
/// the state directory. Does nothing when there is no record.
fn restore_host(bin_dir: &Path, state: &Path) -> Result<()> {
    let Some(record) = HostRecord::load(&state.join(HOST_RECORD))? else {
        // No record: either never started, or fully restored. Refuse to start over leftovers
        // that no record explains, rather than guess what they were.
        ensure!(
            !network::bridge_exists(),
            "bridge {} exists but no run recorded the host; remove it by hand",
            network::BRIDGE
        );
        return Ok(());
    };
    let mut failures = Vec::new();
    let mut attempt = |what: &str, result: Result<()>| {
        if let Err(err) = result {
            failures.push(format!("{what}: {err:#}"));
        }
    };
    attempt("killing the pods", cgroups::kill_pods_and_remove());
    kill_shims(&ContainerdPaths::under(state).socket);
    attempt(
        "unmounting",
        host::unmount_below(
            &[
                state,
                Path::new("/run/netns"),
                Path::new("/run/containerd"),
                Path::new("/var/lib/kubelet"),
            ],
            &record.existing_paths,
        ),
    );
    attempt("kube-proxy --cleanup", proxy::clean_up(bin_dir));
    attempt("restoring the host", record.restore());
    failures.extend(network::down());
    if failures.is_empty() {
        std::fs::remove_dir_all(state).with_context(|| format!("removing {}", state.display()))?;
        return Ok(());
    }
    bail!("{}", failures.join("\n"))
}
