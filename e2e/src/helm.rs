//! helm, built with the control plane, run against the harness's kubeconfig.

use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::controlplane::ControlPlane;

/// Runs `helm ARGS --kubeconfig ...` and returns its stdout.
pub fn helm(control_plane: &ControlPlane, args: &[&str]) -> Result<String> {
    let output = Command::new(control_plane.bin_dir().join("helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(control_plane.kubeconfig())
        .output()
        .context("running helm")?;
    ensure!(
        output.status.success(),
        "helm {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
