//! kubelet, configured for this machine (see REAL-NODE facts in the module docs of `node`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::containerd::ContainerdPaths;
use super::network::NODE_IP;
use crate::process::ManagedProcess;

/// The node's name in the cluster.
pub const NODE_NAME: &str = "wsfleet-node";

/// Starts kubelet; the caller waits for the Node to turn Ready.
pub fn start(
    bin_dir: &Path,
    state: &Path,
    kubeconfig: &Path,
    containerd: &ContainerdPaths,
    port: u16,
    healthz_port: u16,
) -> Result<ManagedProcess> {
    let config = state.join("kubelet.yaml");
    std::fs::write(
        &config,
        kubelet_config(state, containerd, port, healthz_port),
    )
    .context("writing the kubelet configuration")?;
    let mut command = Command::new(bin_dir.join("kubelet"));
    command
        .arg(format!("--config={}", config.display()))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--root-dir={}", state.join("kubelet").display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg(format!("--node-ip={NODE_IP}"))
        .arg("--v=1");
    ManagedProcess::spawn("kubelet", command, &state.join("kubelet.log"))
}

fn kubelet_config(
    state: &Path,
    containerd: &ContainerdPaths,
    port: u16,
    healthz_port: u16,
) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{NODE_IP}"
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
# Reachable only from this machine and its pods; the apiserver fetches logs without a client
# certificate.
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: "unix://{socket}"
# cgroup v1 is what this machine has; 1.36 refuses it unless told otherwise.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# Without CAP_SYS_RESOURCE nothing here may lower an oom_score_adj.
oomScoreAdj: 0
# Pods never see the host's resolver: cluster DNS on the node answers cluster.local only.
resolvConf: ""
clusterDNS: ["{NODE_IP}"]
clusterDomain: cluster.local
# A mounted ConfigMap or Secret follows a change within seconds, not a minute.
syncFrequency: 10s
podLogsDir: "{logs}"
# The imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
serializeImagePulls: false
# The scale run puts 100 gateways and their upstream here, close to the default cap of 110; the
# CNI plugin's address range (241 addresses) is the real bound.
maxPods: 240
shutdownGracePeriod: 0s
"#,
        socket = containerd.socket.display(),
        logs = state.join("pod-logs").display(),
    )
}
