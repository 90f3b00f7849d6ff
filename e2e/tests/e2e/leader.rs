//! Two operator replicas: only the Lease holder acts, and killing it hands over.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::fixtures::{create_backend_service, example_path};
use wsfleet_e2e::{
    DEADLINE, Expected, Kubectl, Operator, TestNamespace, await_conditions, eventually,
};

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

/// A namespace with replica-a leading, replica-b waiting, and the minimal example Ready.
fn two_replicas_and_a_ready_fleet(name: &str) -> Result<(TestNamespace, Operator, Operator)> {
    let namespace = TestNamespace::create(name)?;
    namespace.control_plane().install_crd()?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    let mut first = namespace.start_operator("replica-a")?;
    first.await_leadership()?;
    let second = namespace.start_operator("replica-b")?;
    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;
    await_conditions(kubectl, "chat", &[Expected::new("Ready", "True")])?;
    Ok((namespace, first, second))
}

/// Sets the fleet's replicas and waits for the acting replica to carry them to the Deployment.
fn scale_through_the_leader(kubectl: &Kubectl, replicas: u32) -> Result<()> {
    let patch = format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#);
    kubectl.run(&["patch", "wss", "chat", "--type", "merge", "-p", &patch])?;
    eventually(
        &format!("the Deployment to be scaled to {replicas}"),
        DEADLINE,
        || {
            let deployment = kubectl.get("deployment", "chat-gateway")?;
            ensure!(
                deployment["spec"]["replicas"] == replicas,
                "spec {}",
                deployment["spec"]
            );
            Ok(())
        },
    )
}

#[test]
fn only_the_lease_holder_acts_and_killing_it_hands_over() -> Result<()> {
    let (namespace, first, mut second) = two_replicas_and_a_ready_fleet("leader")?;
    let kubectl = namespace.kubectl();
    ensure!(
        lease_holder(kubectl)? == "replica-a",
        "Lease not held by replica-a"
    );
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

    scale_through_the_leader(kubectl, 3)?;
    await_conditions(kubectl, "chat", &[Expected::new("Ready", "True")])?;
    second.terminate(Duration::from_secs(30));
    Ok(())
}

/// A leader frozen past its lease (SIGSTOP, as in a stalled VM) is replaced, and once it
/// resumes it writes nothing more: the apiserver's audit log shows no write of the old leader
/// after its successor's first, so the two never acted in the same interval.
#[test]
fn a_leader_frozen_past_its_lease_never_writes_beside_its_successor() -> Result<()> {
    let (namespace, mut first, mut second) = two_replicas_and_a_ready_fleet("frozen-leader")?;
    let control_plane = namespace.control_plane();
    let kubectl = namespace.kubectl();

    first.pause();
    second.await_leadership()?;
    // The successor acts; the frozen replica's watches will see all of it when it resumes.
    scale_through_the_leader(kubectl, 3)?;
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
    scale_through_the_leader(kubectl, 4)?;

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
