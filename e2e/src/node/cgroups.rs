//! The `kubepods` cgroups kubelet makes in each cgroup v1 hierarchy, and the processes in them.
//!
//! Killing a container's shim leaves the container running, reparented to init; the cgroup is
//! the one place that still knows every process a pod started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::poll::eventually;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const KUBEPODS: &str = "kubepods";

/// Every `kubepods` directory, one per hierarchy that has one.
fn kubepods_dirs() -> Vec<PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    hierarchies
        .flatten()
        .map(|hierarchy| hierarchy.path().join(KUBEPODS))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// `dir` and every cgroup below it, deepest first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    let mut index = 0;
    while index < found.len() {
        if let Ok(entries) = std::fs::read_dir(&found[index]) {
            found.extend(
                entries
                    .flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
                    .map(|entry| entry.path()),
            );
        }
        index += 1;
    }
    found.reverse();
    found
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Kills every process in the `kubepods` cgroups, then removes the cgroups.
pub fn kill_pods_and_remove() -> Result<()> {
    let dirs = kubepods_dirs();
    if dirs.is_empty() {
        return Ok(());
    }
    eventually(
        "the pods' processes to die",
        Duration::from_secs(30),
        || {
            let mut alive = 0;
            for dir in &dirs {
                for cgroup in subtree(dir) {
                    for pid in pids_in(&cgroup) {
                        alive += 1;
                        // A process that is gone already yields ESRCH, which is fine.
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            anyhow::ensure!(alive == 0, "{alive} processes left");
            Ok(())
        },
    )?;
    let mut failures = Vec::new();
    for dir in &dirs {
        for cgroup in subtree(dir) {
            if let Err(err) = std::fs::remove_dir(&cgroup) {
                failures.push(format!("{}: {err}", cgroup.display()));
            }
        }
    }
    if !failures.is_empty() {
        bail!("removing cgroups: {}", failures.join("; "));
    }
    Ok(())
}
