//! containerd (Debian's), with its CRI plugin set up for this machine, and the images that pods
//! run imported into it (no registry is reachable: every image is one the project built).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::network::{BRIDGE, NODE_IP, POD_RANGE};
use crate::command::run;
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;

/// The sandbox image every pod starts with, built by `scripts/build-e2e-images`.
pub const PAUSE_IMAGE: &str = "docker.io/wsfleet/pause:0.1.0";

/// Where containerd keeps its files and socket, under the node's state directory.
pub struct ContainerdPaths {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
}

impl ContainerdPaths {
    pub fn under(state: &Path) -> Self {
        Self {
            root: state.join("containerd"),
            socket: state.join("containerd.sock"),
            cni_conf_dir: state.join("cni/net.d"),
        }
    }
}

/// Writes the configuration and the CNI network, starts containerd and waits for its socket.
pub fn start(state: &Path, paths: &ContainerdPaths) -> Result<ManagedProcess> {
    std::fs::create_dir_all(&paths.cni_conf_dir).context("creating the CNI config directory")?;
    std::fs::write(
        paths.cni_conf_dir.join("10-wsfleet.conflist"),
        cni_network(&state.join("cni/networks")),
    )
    .context("writing the CNI network")?;
    let config = state.join("containerd.toml");
    std::fs::write(&config, containerd_config(paths)).context("writing containerd.toml")?;
    let mut command = Command::new("containerd");
    command.arg("--config").arg(&config);
    let mut process = ManagedProcess::spawn("containerd", command, &state.join("containerd.log"))?;
    eventually("containerd's socket", DEADLINE, || {
        process.ensure_running().map_err(give_up)?;
        ctr(paths, &["version"]).map(drop)
    })?;
    Ok(process)
}

/// Imports an OCI image-layout archive under `name` into the namespace kubelet uses.
pub fn import_image(paths: &ContainerdPaths, archive: &Path, name: &str) -> Result<()> {
    ctr(
        paths,
        &[
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "--no-unpack",
            "--index-name",
            name,
            &archive.display().to_string(),
        ],
    )
    .with_context(|| format!("importing {} as {name}", archive.display()))?;
    Ok(())
}

fn ctr(paths: &ContainerdPaths, args: &[&str]) -> Result<String> {
    let socket = paths.socket.display().to_string();
    run("ctr", &[&["--address", socket.as_str()], args].concat())
}

fn containerd_config(paths: &ContainerdPaths) -> String {
    let root = paths.root.display();
    format!(
        r#"version = 2
root = "{root}/root"
state = "{root}/state"
# Snapshotters this machine's kernel or disk cannot serve, and nothing here uses.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without CAP_SYS_RESOURCE runc fails any container asked for a negative oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        socket = paths.socket.display(),
        cni = paths.cni_conf_dir.display(),
    )
}

/// The bridge network: pods on [`BRIDGE`] with addresses from [`POD_RANGE`], the node as their
/// gateway, no masquerading (nothing leaves the machine), IPAM state under the state directory.
fn cni_network(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "wsfleet",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": ipam_dir,
                "ranges": [[{
                    "subnet": POD_RANGE,
                    "rangeStart": "10.211.0.10",
                    "rangeEnd": "10.211.0.250",
                    "gateway": NODE_IP.to_string(),
                }]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    })
    .to_string()
}
