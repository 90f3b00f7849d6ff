//! Two operator replicas: only the Lease holder acts, and killing it hands over.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::fixtures::{create_backend_service, example_path};
use wsfleet_e2e::{DEADLINE, Expected, Kubectl, TestNamespace, await_conditions, eventually};

fn lease_holder(kubectl: &Kubectl) -> Result<String> {
    let lease = kubectl.get("lease", "wsfleet-operator")?;
    Ok(lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The distinct `reportingInstance`s of the Events about WebSocketService `name`.
fn event_reporters(kubectl: &Kubectl, name: &str) -> Result<Vec<String>> {
    let selector = format!("involvedObject.name={name},involvedObject.kind=WebSocketService");
    let events = kubectl.run(&["get", "events", "--field-selector", &selector, "-o", "json"])?;
    let events: serde_json::Value = serde_json::from_str(&events)?;
    let mut reporters: Vec<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["reportingInstance"].as_str().map(str::to_owned))
        .collect();
    reporters.sort();
    reporters.dedup();
    Ok(reporters)
}

#[test]
fn only_the_lease_holder_acts_and_killing_it_hands_over() -> Result<()> {
    let namespace = TestNamespace::create("leader")?;
    namespace.control_plane().install_crd()?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;

    let mut first = namespace.start_operator("replica-a")?;
    first.await_leadership()?;
    let mut second = namespace.start_operator("replica-b")?;
    ensure!(
        lease_holder(kubectl)? == "replica-a",
        "Lease not held by replica-a"
    );

    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;
    await_conditions(kubectl, "chat", &[Expected::new("Ready", "True")])?;
    ensure!(
        second.metric("wsfleet_operator_leader")? == 0.0,
        "replica-b claims to lead while replica-a holds the Lease"
    );
    let reporters = event_reporters(kubectl, "chat")?;
    ensure!(
        reporters.iter().all(|reporter| reporter == "replica-a"),
        "Events reported by {reporters:?}, not only replica-a"
    );

    // SIGKILL: replica-a cannot release the Lease; replica-b takes it once it expires.
    first.kill();
    second.await_leadership()?;
    ensure!(
        lease_holder(kubectl)? == "replica-b",
        "Lease not handed to replica-b"
    );

    kubectl.run(&[
        "patch",
        "wss",
        "chat",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ])?;
    eventually("replica-b to scale the Deployment to 3", DEADLINE, || {
        let deployment = kubectl.get("deployment", "chat-gateway")?;
        ensure!(
            deployment["spec"]["replicas"] == 3,
            "spec {}",
            deployment["spec"]
        );
        Ok(())
    })?;
    await_conditions(kubectl, "chat", &[Expected::new("Ready", "True")])?;
    second.terminate(Duration::from_secs(30));
    Ok(())
}

/// A leader frozen past its lease (SIGSTOP, as in a stalled VM) is replaced, and once it
/// resumes it writes nothing more: the apiserver's audit log shows no write of the old leader
/// after its successor's first, so the two never acted in the same interval.
#[test]
fn a_leader_frozen_past_its_lease_never_writes_beside_its_successor() -> Result<()> {
    let namespace = TestNamespace::create("frozen-leader")?;
    let control_plane = namespace.control_plane();
    control_plane.install_crd()?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    let mut first = namespace.start_operator("replica-a")?;
    first.await_leadership()?;
    let mut second = namespace.start_operator("replica-b")?;
    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;
    await_conditions(kubectl, "chat", &[Expected::new("Ready", "True")])?;

    first.pause();
    second.await_leadership()?;
    // The successor acts; the frozen replica's watches will see all of it when it resumes.
    kubectl.run(&[
        "patch",
        "wss",
        "chat",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ])?;
    eventually("replica-b to scale the Deployment to 3", DEADLINE, || {
        let deployment = kubectl.get("deployment", "chat-gateway")?;
        ensure!(
            deployment["spec"]["replicas"] == 3,
            "spec {}",
            deployment["spec"]
        );
        Ok(())
    })?;
    first.resume();
    eventually("replica-a to stop leading", DEADLINE, || {
        // Exiting would stop it too; that it stands again instead is checked at the end.
        if first.ensure_running().is_err() {
            return Ok(());
        }
        ensure!(
            first.metric("wsfleet_operator_leader")? == 0.0,
            "replica-a still claims to lead"
        );
        Ok(())
    })?;
    kubectl.run(&[
        "patch",
        "wss",
        "chat",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ])?;
    eventually("replica-b to scale the Deployment to 4", DEADLINE, || {
        let deployment = kubectl.get("deployment", "chat-gateway")?;
        ensure!(
            deployment["spec"]["replicas"] == 4,
            "spec {}",
            deployment["spec"]
        );
        Ok(())
    })?;

    let is_lease = |write: &wsfleet_e2e::controlplane::AuditedWrite| write.resource == "leases";
    let successor_first = control_plane
        .audited_writes("replica-b", namespace.name())?
        .into_iter()
        .find(|write| !is_lease(write))
        .context("replica-b wrote nothing")?;
    let stale: Vec<_> = control_plane
        .audited_writes("replica-a", namespace.name())?
        .into_iter()
        .filter(|write| !is_lease(write) && write.at >= successor_first.at)
        .collect();
    ensure!(
        stale.is_empty(),
        "replica-a wrote after replica-b began at {}: {stale:?}",
        successor_first.at
    );
    // An apiserver that was merely out of reach is no reason to exit: it stands again.
    first.ensure_running()?;
    ensure!(
        first.log_tail().contains("standing for the lease again"),
        "replica-a did not stand for the lease again"
    );
    ensure!(
        second.metric("wsfleet_operator_leader")? == 1.0,
        "replica-b does not lead"
    );
    second.terminate(Duration::from_secs(30));
    Ok(())
}
