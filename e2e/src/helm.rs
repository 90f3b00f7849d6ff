//! helm, built with the control plane, run against the harness's kubeconfig.

use anyhow::Result;

use crate::command::run;
use crate::controlplane::ControlPlane;

/// Runs `helm ARGS --kubeconfig ...` and returns its stdout.
pub fn helm(control_plane: &ControlPlane, args: &[&str]) -> Result<String> {
    let kubeconfig = control_plane.kubeconfig().display().to_string();
    run(
        control_plane.bin_dir().join("helm"),
        &[args, &["--kubeconfig", kubeconfig.as_str()]].concat(),
    )
}
