//! Nothing a pod sends leaves the machine: pods reach pods, Services and the node, never an
//! address outside them, and their resolver is the cluster's DNS, which answers nothing else.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::node::images::UPSTREAM_IMAGE;
use wsfleet_e2e::node::network::NODE_IP;
use wsfleet_e2e::node::outside::{OutsideHost, reachable_from_host};
use wsfleet_e2e::{DEADLINE, Kubectl, TestNamespace, eventually};

use crate::setup::cluster;

/// Runs `wsfleet-netprobe ARGS` in a pod to completion; returns its exit code and report.
fn probe(kubectl: &Kubectl, name: &str, args: &[&str]) -> Result<(i64, String)> {
    let args: Vec<String> = args.iter().map(|arg| format!("{arg:?}")).collect();
    kubectl.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: {UPSTREAM_IMAGE}
    imagePullPolicy: Never
    command: [/usr/local/bin/wsfleet-netprobe]
    args: [{args}]
",
        args = args.join(", ")
    ))?;
    eventually(&format!("probe pod {name} to finish"), DEADLINE, || {
        let pod = kubectl.get("pod", name)?;
        let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        let code = terminated["exitCode"].as_i64().context("still running")?;
        let report = terminated["message"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok((code, report))
    })
}

#[test]
fn pods_reach_the_cluster_and_nothing_outside_it() -> Result<()> {
    let namespace = TestNamespace::create_on(cluster().control_plane(), "isolation")?;
    let kubectl = namespace.kubectl();
    let outside = OutsideHost::start()?;
    // The outside host is real: the host itself reaches it.
    ensure!(
        reachable_from_host(outside.address(), Duration::from_secs(3)),
        "the test's own outside host does not answer"
    );
    let from_host = eventually(
        "the outside host to count the host's connection",
        DEADLINE,
        || {
            let accepted = outside.accepted();
            ensure!(accepted > 0, "nothing accepted yet");
            Ok(accepted)
        },
    )?;

    // The same probe reaches the node (the apiserver's port): the probe works.
    let apiserver = cluster()
        .control_plane()
        .server()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (code, report) = probe(
        kubectl,
        "reach-node",
        &["connect", &format!("{NODE_IP}:{apiserver}")],
    )?;
    ensure!(code == 0, "a pod could not reach the node: {report}");

    let target = outside.address().to_string();
    let (code, report) = probe(
        kubectl,
        "reach-outside",
        &["connect", &target, "--timeout", "3s"],
    )?;
    ensure!(code != 0, "a pod reached {target}: {report}");
    ensure!(
        outside.accepted() == from_host,
        "the outside listener saw a pod's connection"
    );

    let (_, resolv_conf) = probe(kubectl, "resolv-conf", &["resolv-conf"])?;
    ensure!(
        resolv_conf.contains(&format!("nameserver {NODE_IP}"))
            && resolv_conf.matches("nameserver").count() == 1,
        "the pod's resolver is not only the cluster's: {resolv_conf}"
    );
    let (code, report) = probe(
        kubectl,
        "resolve-cluster",
        &["resolve", "kubernetes.default.svc.cluster.local"],
    )?;
    ensure!(code == 0, "cluster DNS does not answer: {report}");
    let (code, report) = probe(kubectl, "resolve-outside", &["resolve", "example.com"])?;
    ensure!(code != 0, "a name outside the cluster resolved: {report}");
    Ok(())
}
