//! The real `wsfleet-operator` binary, run as a process against the control plane.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use nix::sys::signal::Signal;

use crate::binaries::wsfleet_binary;
use crate::controlplane::ControlPlane;
use crate::net::{free_port, http_get};
use crate::poll::{DEADLINE, eventually, give_up};
use crate::process::ManagedProcess;

/// One running operator replica, watching one namespace and holding (or waiting for) the
/// Lease in that namespace.
pub struct Operator {
    process: ManagedProcess,
    metrics_port: u16,
    identity: String,
}

impl Operator {
    /// Starts `wsfleet-operator run --namespace NAMESPACE` and waits until it serves /healthz.
    /// A replica whose identity is one of [`crate::controlplane::REPLICA_USERS`] authenticates
    /// as that user; others as the admin.
    pub fn start(
        control_plane: &ControlPlane,
        namespace: &str,
        identity: &str,
        log_dir: &Path,
    ) -> Result<Self> {
        let kubeconfig = control_plane
            .kubeconfig_of(identity)
            .unwrap_or_else(|| control_plane.kubeconfig().to_owned());
        Self::start_with(&kubeconfig, namespace, identity, log_dir)
    }

    /// Like [`Operator::start`], with the client configuration in `kubeconfig`.
    pub fn start_with(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        log_dir: &Path,
    ) -> Result<Self> {
        let binary = wsfleet_binary("wsfleet-operator", "wsfleet-operator")?;
        let metrics_port = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--namespace")
            .arg(namespace)
            .arg("--lease-namespace")
            .arg(namespace)
            .arg("--identity")
            .arg(identity)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let log = log_dir.join(format!("operator-{identity}.log"));
        let mut process = ManagedProcess::spawn(&format!("operator {identity}"), command, &log)?;
        eventually(&format!("operator {identity} /healthz"), DEADLINE, || {
            process.ensure_running().map_err(give_up)?;
            http_get(metrics_port, "/healthz").map(drop)
        })?;
        Ok(Self {
            process,
            metrics_port,
            identity: identity.to_owned(),
        })
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The OpenMetrics text on /metrics.
    pub fn metrics(&mut self) -> Result<String> {
        self.process.ensure_running()?;
        http_get(self.metrics_port, "/metrics")
    }

    /// The value of an unlabelled metric such as `wsfleet_operator_leader`.
    pub fn metric(&mut self, name: &str) -> Result<f64> {
        let text = self.metrics()?;
        let line = text
            .lines()
            .find(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .with_context(|| format!("metric {name} not in /metrics of {}", self.identity))?;
        let value = line.rsplit(' ').next().unwrap_or_default();
        value
            .parse()
            .with_context(|| format!("metric line {line:?} has no number"))
    }

    /// Waits until this replica reports that it holds the Lease.
    pub fn await_leadership(&mut self) -> Result<()> {
        let identity = self.identity.clone();
        eventually(&format!("operator {identity} to lead"), DEADLINE, || {
            if let Err(err) = self.process.ensure_running() {
                return Err(give_up(err));
            }
            let leader = self.metric("wsfleet_operator_leader")?;
            ensure!(leader == 1.0, "wsfleet_operator_leader is {leader}");
            Ok(())
        })
    }

    /// Fails with the log tail if the process has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }

    /// SIGTERM, as Kubernetes stops a pod; killed if not gone within `grace`.
    pub fn terminate(mut self, grace: Duration) {
        self.process.terminate(grace);
    }

    /// SIGSTOP: the replica freezes mid-flight, as in a stalled VM or a long GC pause.
    pub fn pause(&self) {
        self.process.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`Operator::pause`].
    pub fn resume(&self) {
        self.process.signal(Signal::SIGCONT);
    }

    /// SIGKILL: no chance to release the Lease.
    pub fn kill(mut self) {
        self.process.kill();
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The whole log, for what it said long ago.
    pub fn log(&self) -> Result<String> {
        let path = self.process.log_path();
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}
