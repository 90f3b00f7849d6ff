//! kube-proxy in iptables mode, kept from touching conntrack sysctls and route_localnet.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::kubelet::NODE_NAME;
use super::network::{NODE_IP, POD_RANGE};
use crate::command::run;
use crate::process::ManagedProcess;

pub fn start(
    bin_dir: &Path,
    state: &Path,
    kubeconfig: &Path,
    healthz_port: u16,
    metrics_port: u16,
) -> Result<ManagedProcess> {
    let config = state.join("kube-proxy.yaml");
    std::fs::write(
        &config,
        format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: "{kubeconfig}"
hostnameOverride: {NODE_NAME}
bindAddress: "{NODE_IP}"
clusterCIDR: "{POD_RANGE}"
healthzBindAddress: "127.0.0.1:{healthz_port}"
metricsBindAddress: "127.0.0.1:{metrics_port}"
nodePortAddresses: ["{NODE_IP}/32"]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
# Zeros leave the host's conntrack settings as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
            kubeconfig = kubeconfig.display()
        ),
    )
    .context("writing the kube-proxy configuration")?;
    let mut command = Command::new(bin_dir.join("kube-proxy"));
    command
        .arg(format!("--config={}", config.display()))
        .arg("--v=1");
    ManagedProcess::spawn("kube-proxy", command, &state.join("kube-proxy.log"))
}

/// Removes every chain and rule kube-proxy made (`kube-proxy --cleanup`).
pub fn clean_up(bin_dir: &Path) -> Result<()> {
    run(bin_dir.join("kube-proxy"), &["--cleanup"]).map(drop)
}
