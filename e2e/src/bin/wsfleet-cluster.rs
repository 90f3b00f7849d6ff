//! Runs the end-to-end cluster by itself until Ctrl-C, for poking at it by hand:
//! `cargo run -p wsfleet-e2e --bin wsfleet-cluster [-- --real-node]`, then use the printed
//! KUBECONFIG. Without `--real-node` the nodes are kwok's fakes; with it, one real node runs
//! pods (as root), and the host is restored when it stops (both stop when dropped).

#![forbid(unsafe_code)]

use anyhow::{Result, bail};
use wsfleet_e2e::node::RealCluster;
use wsfleet_e2e::{ControlPlane, Nodes};

fn main() -> Result<()> {
    let real_node = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--real-node") => true,
        Some(other) => bail!("unknown argument {other:?}; the only one is --real-node"),
    };
    let signals = wsfleet_e2e::process::block_termination_signals()?;
    let (real, fake);
    let control_plane = if real_node {
        real = RealCluster::start()?;
        real.control_plane()
    } else {
        fake = ControlPlane::start(Nodes::Fake)?;
        &fake
    };
    println!("export KUBECONFIG={}", control_plane.kubeconfig().display());
    println!("kubectl: {}", control_plane.kubectl().binary().display());
    println!("Ctrl-C stops the cluster.");
    wsfleet_e2e::process::wait_for_signal(&signals)?;
    Ok(())
}
