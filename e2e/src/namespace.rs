//! One namespace per test on the shared control plane, deleted when the test ends.

use std::path::Path;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::controlplane::ControlPlane;
use crate::kubectl::Kubectl;
use crate::operator::Operator;

/// A namespace of its own for one test, with a scratch directory for logs and files.
pub struct TestNamespace {
    name: String,
    control_plane: &'static ControlPlane,
    kubectl: Kubectl,
    dir: TempDir,
}

impl TestNamespace {
    /// Creates namespace `name` on the shared control plane (started on first use).
    pub fn create(name: &str) -> Result<Self> {
        Self::create_on(ControlPlane::shared(), name)
    }

    /// Creates namespace `name` on `control_plane`.
    pub fn create_on(control_plane: &'static ControlPlane, name: &str) -> Result<Self> {
        control_plane
            .kubectl()
            .run(&["create", "namespace", name])
            .with_context(|| format!("creating namespace {name}"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("wsfleet-e2e-{name}-"))
            .tempdir()
            .context("creating the test's scratch directory")?;
        Ok(Self {
            name: name.to_owned(),
            control_plane,
            kubectl: control_plane.kubectl().in_namespace(name),
            dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// kubectl with `--namespace` set to this namespace.
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    pub fn control_plane(&self) -> &'static ControlPlane {
        self.control_plane
    }

    /// Where this test's files and process logs go.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts an operator replica that watches only this namespace.
    pub fn start_operator(&self, identity: &str) -> Result<Operator> {
        Operator::start(self.control_plane, &self.name, identity, self.dir())
    }

    /// Like [`TestNamespace::start_operator`], with the client configuration in `kubeconfig`.
    pub fn start_operator_with(&self, identity: &str, kubeconfig: &Path) -> Result<Operator> {
        Operator::start_with(kubeconfig, &self.name, identity, self.dir())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Not waiting: the namespace controller empties it in the background.
        let _ =
            self.control_plane
                .kubectl()
                .run(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}
