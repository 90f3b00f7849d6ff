//! metrics-server (the Go module `sigs.k8s.io/metrics-server`, built by e2e/addons/build.sh) as
//! a process on the host: it scrapes the real node's kubelet and serves `metrics.k8s.io`
//! through an APIService, as the Deployment of its release manifest would.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;

use crate::aggregation::{Extension, Registration, resident_mib, serving_args, write_tls_dir};
use crate::binaries::addons_bin_dir;
use crate::controlplane::ControlPlane;
use crate::net::free_port;
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;

const NAMESPACE: &str = "kube-system";
const SERVICE: &str = "metrics-server";

/// A running metrics-server, registered as `v1beta1.metrics.k8s.io`; stopped on drop.
pub struct MetricsServer {
    process: ManagedProcess,
    registration: Registration,
    // After the process, so that the process is gone before its files.
    _dir: TempDir,
}

impl MetricsServer {
    /// Starts metrics-server listening on `address` (the node's), registers its APIService and
    /// waits until the node's metrics are served.
    pub fn start(control_plane: &ControlPlane, address: Ipv4Addr) -> Result<Self> {
        let bin_dir = addons_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("wsfleet-metrics-server-")
            .tempdir()
            .context("creating metrics-server's directory")?;
        let port = free_port()?;
        let mut extension = Extension {
            group: "metrics.k8s.io",
            version: "v1beta1",
            namespace: NAMESPACE,
            service: SERVICE,
            address,
            port,
            ca_pem: "",
        };
        let tls = dir.path().join("tls");
        let mut names = extension.service_names();
        names.push(address.to_string());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let ca_pem = write_tls_dir(&tls, &names)?;
        extension.ca_pem = &ca_pem;
        let kubeconfig = control_plane.kubeconfig();
        let mut command = Command::new(bin_dir.join("metrics-server"));
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(serving_args(kubeconfig, address, port, &tls))
            // The kubelet serves a self-signed certificate, on the port in the Node's status,
            // at the node's address (its name is in no resolver).
            .arg("--kubelet-insecure-tls")
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg("--kubelet-use-node-status-port")
            // Shorter than the default 60 s, so the HPA sees load quickly; it must exceed the
            // kubelet request timeout (10 s).
            .arg("--metric-resolution=15s")
            .arg("--v=1");
        let process = ManagedProcess::spawn(SERVICE, command, &dir.path().join("log"))
            .context("starting metrics-server")?;
        let kubectl = control_plane.kubectl();
        let mut server = Self {
            process,
            registration: Registration::new(&kubectl, &extension),
            _dir: dir,
        };
        let process = &mut server.process;
        extension.register(&kubectl, || process.ensure_running())?;
        eventually(
            "metrics-server to serve the node's metrics",
            DEADLINE,
            || {
                server.process.ensure_running().map_err(give_up)?;
                let nodes: serde_json::Value =
                    serde_json::from_str(&kubectl.raw("/apis/metrics.k8s.io/v1beta1/nodes")?)?;
                let items = nodes["items"].as_array().map_or(0, Vec::len);
                ensure!(items > 0, "no node metrics yet: {nodes}");
                Ok(())
            },
        )?;
        Ok(server)
    }

    /// Fails with the log tail if metrics-server has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }

    /// Resident memory now, in MiB.
    pub fn resident_mib(&self) -> Result<f64> {
        resident_mib(&self.process)
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.registration.remove();
        self.process.terminate(Duration::from_secs(5));
    }
}
