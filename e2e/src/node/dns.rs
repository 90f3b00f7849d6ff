//! Cluster DNS: CoreDNS on the node's address, answering `cluster.local` from the apiserver and
//! nothing else. It has no forwarder, so no query a pod makes ever leaves the machine.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::network::{NODE_IP, SERVICE_RANGE};
use crate::net::http_status;
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;

pub fn start(
    bin_dir: &Path,
    state: &Path,
    kubeconfig: &Path,
    ready_port: u16,
) -> Result<ManagedProcess> {
    let corefile = state.join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            "cluster.local:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes cluster.local {SERVICE_RANGE} {{
        kubeconfig {kubeconfig} wsfleet-e2e
        pods disabled
    }}
}}
",
            kubeconfig = kubeconfig.display()
        ),
    )
    .context("writing the Corefile")?;
    let mut command = Command::new(bin_dir.join("coredns"));
    command.arg("-conf").arg(&corefile);
    let mut process = ManagedProcess::spawn("coredns", command, &state.join("coredns.log"))?;
    eventually("CoreDNS /ready", DEADLINE, || {
        process.ensure_running().map_err(give_up)?;
        let status = http_status(ready_port, "/ready")?;
        anyhow::ensure!(status == 200, "/ready answers {status}");
        Ok(())
    })?;
    Ok(process)
}
