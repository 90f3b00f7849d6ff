//! After a real node has run pods and stopped, the host is as it was: sysctls, links,
//! addresses, routes, firewall rules, mounts, cgroups and directories.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use wsfleet_e2e::command::run;
use wsfleet_e2e::node::host::{OUTSIDE_PATHS, WATCHED_SYSCTLS, read_sysctl};
use wsfleet_e2e::node::images::UPSTREAM_IMAGE;
use wsfleet_e2e::node::{LOCK_FILE, RealCluster, STATE_DIR};
use wsfleet_e2e::{DEADLINE, eventually};

/// What a node may change on the host, each part as a set of lines.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    parts: Vec<(&'static str, BTreeSet<String>)>,
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

/// Interface names (`ip -o link` lines also carry state that changes by itself).
fn link_names() -> Result<BTreeSet<String>> {
    Ok(run("ip", &["-o", "link", "show"])?
        .lines()
        .filter_map(|line| line.split(": ").nth(1).map(str::to_owned))
        .collect())
}

impl HostState {
    fn capture() -> Result<Self> {
        let sysctls = WATCHED_SYSCTLS
            .iter()
            .map(|key| Ok(format!("{key}={:?}", read_sysctl(key)?)))
            .collect::<Result<_>>()?;
        // Packet counters change by themselves; rules do not.
        let rules = |program: &str| -> Result<BTreeSet<String>> {
            Ok(run(program, &[])?
                .lines()
                .filter(|line| !line.starts_with('#'))
                .map(|line| line.split(" [").next().unwrap_or(line).to_owned())
                .collect())
        };
        let mounts = lines(&std::fs::read_to_string("/proc/self/mountinfo")?)
            .iter()
            .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
            .collect();
        let paths = OUTSIDE_PATHS
            .iter()
            .chain(&[STATE_DIR, LOCK_FILE])
            .map(|path| format!("{path} exists: {}", std::path::Path::new(path).exists()))
            .collect();
        let cgroups = std::fs::read_dir("/sys/fs/cgroup")?
            .flatten()
            .map(|hierarchy| hierarchy.path().join("kubepods"))
            .filter(|dir| dir.exists())
            .map(|dir| dir.display().to_string())
            .collect();
        Ok(Self {
            parts: vec![
                ("sysctls", sysctls),
                ("links", link_names()?),
                ("addresses", lines(&run("ip", &["-o", "addr", "show"])?)),
                (
                    "routes",
                    lines(&run("ip", &["route", "show", "table", "all"])?),
                ),
                ("iptables", rules("iptables-save")?),
                (
                    "nft",
                    lines(&run("nft", &["list", "ruleset"]).unwrap_or_default()),
                ),
                ("mounts", mounts),
                ("paths", paths),
                ("cgroups", cgroups),
            ],
        })
    }

    /// The lines that differ, part by part.
    fn differences(&self, after: &Self) -> Vec<String> {
        self.parts
            .iter()
            .zip(&after.parts)
            .flat_map(|((name, before), (_, after))| {
                let gone = before
                    .difference(after)
                    .map(move |line| format!("{name}: lost {line}"));
                let new = after
                    .difference(before)
                    .map(move |line| format!("{name}: left {line}"));
                gone.chain(new).collect::<Vec<_>>()
            })
            .collect()
    }
}

#[test]
fn a_stopped_node_leaves_the_host_as_it_found_it() -> Result<()> {
    let before = HostState::capture()?;
    {
        let cluster = RealCluster::start()?;
        let kubectl = cluster.kubectl();
        kubectl.apply(&format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: upstream, namespace: default}}
spec:
  containers:
  - name: upstream
    image: {UPSTREAM_IMAGE}
    imagePullPolicy: Never
    args: [serve, --listen, \"0.0.0.0:8080\", --mode, echo]
"
        ))?;
        eventually("a pod to run on the node", DEADLINE, || {
            let pod = kubectl.get("pod", "upstream")?;
            ensure!(
                pod["status"]["phase"] == "Running",
                "phase {}",
                pod["status"]["phase"]
            );
            Ok(())
        })?;
        let during = HostState::capture()?;
        ensure!(
            !before.differences(&during).is_empty(),
            "a running node changed nothing this test looks at"
        );
    }
    let after = HostState::capture()?;
    let differences = before.differences(&after);
    ensure!(
        differences.is_empty(),
        "the host was left changed:\n{}",
        differences.join("\n")
    );
    Ok(())
}
