//! A control plane of one test's own.

use std::ops::Deref;

use anyhow::Result;
use wsfleet_e2e::{ControlPlane, Nodes, TestNamespace};

/// A control plane stopped when this handle drops. It is leaked so that a [`TestNamespace`]
/// (which borrows a control plane for the whole run) can live on it; only the small handle
/// stays behind once it is stopped.
pub struct OwnPlane(&'static ControlPlane);

impl OwnPlane {
    /// Starts a control plane with fake nodes and installs the CRD.
    pub fn start() -> Result<Self> {
        let plane = Self(Box::leak(Box::new(ControlPlane::start(Nodes::Fake)?)));
        plane.install_crd()?;
        Ok(plane)
    }

    pub fn namespace(&self, name: &str) -> Result<TestNamespace> {
        TestNamespace::create_on(self.0, name)
    }
}

impl Deref for OwnPlane {
    type Target = ControlPlane;

    fn deref(&self) -> &ControlPlane {
        self.0
    }
}

impl Drop for OwnPlane {
    fn drop(&mut self) {
        self.0.stop();
    }
}
