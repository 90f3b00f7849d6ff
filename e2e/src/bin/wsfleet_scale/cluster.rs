//! The nodes a scale run puts its gateways on: kwok's fake nodes, or one real node on this
//! machine.

use anyhow::Result;
use wsfleet_e2e::fixtures::create_backend_service;
use wsfleet_e2e::fleet::deploy_upstream;
use wsfleet_e2e::node::RealCluster;
use wsfleet_e2e::{ControlPlane, Kubectl, Nodes};

use super::real_node;

pub enum Cluster {
    Fake(ControlPlane),
    /// Shared so that the host is restored at exit, whichever way the run ends.
    Real(&'static RealCluster),
}

impl Cluster {
    pub fn start(real_node: bool) -> Result<Self> {
        Ok(if real_node {
            Self::Real(real_node::start()?)
        } else {
            Self::Fake(ControlPlane::start(Nodes::Fake)?)
        })
    }

    pub fn control_plane(&self) -> &ControlPlane {
        match self {
            Self::Fake(control_plane) => control_plane,
            Self::Real(cluster) => cluster.control_plane(),
        }
    }

    /// The `chat-backend` every fleet points at: on fake nodes a Service alone, since no
    /// client ever connects; on a real node an echo upstream pod behind it.
    pub fn create_upstream(&self, kubectl: &Kubectl, namespace: &str) -> Result<()> {
        match self {
            Self::Fake(_) => create_backend_service(kubectl, namespace),
            Self::Real(_) => deploy_upstream(kubectl, namespace, "echo"),
        }
    }

    /// What every object's spec holds besides its upstream and replicas.
    pub fn gateway_spec(&self) -> &'static str {
        match self {
            Self::Fake(_) => "",
            Self::Real(_) => real_node::GATEWAY_SPEC,
        }
    }
}
