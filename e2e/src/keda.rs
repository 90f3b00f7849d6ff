//! KEDA (the Go module `github.com/kedacore/keda/v2`, built by e2e/addons/build.sh) as processes
//! on the host: its CRDs from the module, its operator (which reads the scalers, here
//! Prometheus, and makes the HPAs) and its metrics adapter, which serves
//! `external.metrics.k8s.io` through an APIService and asks the operator over mutual TLS.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::aggregation::{Extension, Registration, resident_mib, serving_args, write_tls_dir};
use crate::binaries::addons_bin_dir;
use crate::controlplane::ControlPlane;
use crate::kubectl::Kubectl;
use crate::net::free_port;
use crate::process::ManagedProcess;

/// Where KEDA keeps its cluster-wide objects, as its chart installs it.
pub const NAMESPACE: &str = "keda";
const ADAPTER_SERVICE: &str = "keda-metrics-apiserver";

/// KEDA's operator and metrics adapter, registered as `v1beta1.external.metrics.k8s.io`;
/// stopped on drop.
pub struct Keda {
    registration: Registration,
    operator: ManagedProcess,
    adapter: ManagedProcess,
    _dir: TempDir,
}

impl Keda {
    /// Installs KEDA's CRDs, starts its operator and adapter (the adapter listening on
    /// `address`, the node's) and waits until the APIService is Available.
    pub fn start(control_plane: &ControlPlane, address: Ipv4Addr) -> Result<Self> {
        let bin_dir = addons_bin_dir()?;
        let kubectl = control_plane.kubectl();
        install_crds(&kubectl, &bin_dir.join("keda-crds"))?;
        kubectl.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"
        ))?;
        let dir = tempfile::Builder::new()
            .prefix("wsfleet-keda-")
            .tempdir()
            .context("creating KEDA's directory")?;
        let port = free_port()?;
        let mut extension = Extension {
            group: "external.metrics.k8s.io",
            version: "v1beta1",
            namespace: NAMESPACE,
            service: ADAPTER_SERVICE,
            address,
            port,
            ca_pem: "",
        };
        // One pair for the adapter's serving certificate and for the operator-adapter mutual
        // TLS (gRPC on loopback), as KEDA's own certificate rotation would issue it.
        let certs = dir.path().join("certs");
        let mut names = extension.service_names();
        names.extend([address.to_string(), "127.0.0.1".to_owned()]);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let ca_pem = write_tls_dir(&certs, &names)?;
        extension.ca_pem = &ca_pem;
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let kubeconfig = control_plane.kubeconfig();
        let environment = |command: &mut Command| {
            command
                .env("KUBECONFIG", kubeconfig)
                // Every namespace; the cluster objects' (and the lease's) namespace.
                .env("WATCH_NAMESPACE", "")
                .env("POD_NAMESPACE", NAMESPACE)
                .env("KEDA_CLUSTER_OBJECT_NAMESPACE", NAMESPACE);
        };

        let mut operator = Command::new(bin_dir.join("keda-operator"));
        environment(&mut operator);
        operator
            .arg("--leader-elect=false")
            .arg(format!("--metrics-bind-address=127.0.0.1:{}", free_port()?))
            .arg(format!(
                "--health-probe-bind-address=127.0.0.1:{}",
                free_port()?
            ))
            .arg(format!("--metrics-service-bind-address={grpc}"))
            .arg(format!("--cert-dir={}", certs.display()))
            .arg("--zap-log-level=info");
        let operator =
            ManagedProcess::spawn("keda-operator", operator, &dir.path().join("operator.log"))?;

        let mut adapter = Command::new(bin_dir.join("keda-adapter"));
        environment(&mut adapter);
        adapter
            .arg(format!("--lister-kubeconfig={}", kubeconfig.display()))
            .args(serving_args(kubeconfig, address, port, &certs))
            .arg(format!("--metrics-service-address={grpc}"))
            // Its own /metrics, on every interface: keep it off well-known ports.
            .arg(format!("--port={}", free_port()?))
            .arg("--zap-log-level=info");
        let adapter =
            ManagedProcess::spawn("keda-adapter", adapter, &dir.path().join("adapter.log"))?;
        let mut keda = Self {
            registration: Registration::new(&kubectl, &extension),
            operator,
            adapter,
            _dir: dir,
        };
        let registered = extension.register(&kubectl, || keda.ensure_running());
        registered.map_err(|err| err.context(keda.log_tails()))?;
        Ok(keda)
    }

    /// Fails with the log tail if either process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.operator.ensure_running()?;
        self.adapter.ensure_running()
    }

    /// Resident memory now, in MiB: (operator, adapter).
    pub fn resident_mib(&self) -> Result<(f64, f64)> {
        Ok((resident_mib(&self.operator)?, resident_mib(&self.adapter)?))
    }

    /// Both logs' tails, for a failure message.
    pub fn log_tails(&self) -> String {
        format!(
            "--- keda-operator ---\n{}\n--- keda-adapter ---\n{}",
            self.operator.log_tail(),
            self.adapter.log_tail()
        )
    }
}

impl Drop for Keda {
    fn drop(&mut self) {
        self.registration.remove();
        self.adapter.terminate(Duration::from_secs(5));
        self.operator.terminate(Duration::from_secs(5));
    }
}

/// Applies all of KEDA's CRDs (all: its operator exits when a kind it watches is missing,
/// eventing.keda.sh included) and waits until ScaledObjects are served.
pub fn install_crds(kubectl: &Kubectl, dir: &Path) -> Result<()> {
    kubectl.install_crds(dir, "scaledobjects.keda.sh")
}
