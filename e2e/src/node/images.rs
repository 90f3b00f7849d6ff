//! The images real pods run, as OCI archives the project builds: the product image
//! (`scripts/build-image`), and the pause and test-upstream images (`scripts/build-e2e-images`).
//! `WSFLEET_IMAGE_ARCHIVE` and `WSFLEET_E2E_IMAGE_DIR` name archives built already (the test
//! command builds them once); otherwise the scripts run here.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::binaries::workspace_root;

/// The product image, under the name the chart and the operator use by default.
pub const WSFLEET_IMAGE: &str = "docker.io/wsfleet/wsfleet:0.1.0";
/// The WebSocket upstream (echo or chat room) and network probe the tests run in pods.
pub const UPSTREAM_IMAGE: &str = "docker.io/wsfleet/e2e-upstream:0.1.0";

/// An image archive and the name it is imported under.
pub struct Archive {
    pub path: PathBuf,
    pub name: String,
}

pub fn archives() -> Result<Vec<Archive>> {
    let product = match std::env::var_os("WSFLEET_IMAGE_ARCHIVE") {
        Some(path) => PathBuf::from(path),
        None => last_line_of("scripts/build-image")?,
    };
    let e2e_dir = match std::env::var_os("WSFLEET_E2E_IMAGE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => last_line_of("scripts/build-e2e-images")?
            .parent()
            .context("the e2e images' directory")?
            .to_owned(),
    };
    let archives = vec![
        Archive {
            path: product,
            name: WSFLEET_IMAGE.to_owned(),
        },
        Archive {
            path: e2e_dir.join("wsfleet-pause.oci.tar"),
            name: super::containerd::PAUSE_IMAGE.to_owned(),
        },
        Archive {
            path: e2e_dir.join("wsfleet-e2e-upstream.oci.tar"),
            name: UPSTREAM_IMAGE.to_owned(),
        },
    ];
    for archive in &archives {
        if !archive.path.is_file() {
            bail!("image archive {} is missing", archive.path.display());
        }
    }
    Ok(archives)
}

/// Runs a build script of the repository and takes the path it prints last.
fn last_line_of(script: &str) -> Result<PathBuf> {
    let output = Command::new("bash")
        .arg(workspace_root().join(script))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {script}"))?;
    if !output.status.success() {
        bail!("{script} failed with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .last()
        .with_context(|| format!("{script} printed no path"))?;
    Ok(PathBuf::from(last.trim()))
}
