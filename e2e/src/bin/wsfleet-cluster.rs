//! Runs the end-to-end control plane by itself until Ctrl-C, for poking at it by hand:
//! `cargo run -p wsfleet-e2e --bin wsfleet-cluster`, then use the printed KUBECONFIG.

use anyhow::Result;
use wsfleet_e2e::ControlPlane;

fn main() -> Result<()> {
    let signals = wsfleet_e2e::process::block_termination_signals();
    let control_plane = ControlPlane::start()?;
    println!("export KUBECONFIG={}", control_plane.kubeconfig().display());
    println!("kubectl: {}", control_plane.kubectl().binary().display());
    println!("Ctrl-C stops the control plane.");
    wsfleet_e2e::process::wait_for_signal(&signals);
    Ok(())
}
