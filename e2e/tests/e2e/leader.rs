//! Two operator replicas: only the Lease holder acts; killing, freezing or cutting it off from
//! the apiserver hands over, and the two never act at once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::blackhole::Blackhole;
use wsfleet_e2e::controlplane::AuditedWrite;
use wsfleet_e2e::fixtures::{create_backend_service, example_path};
use wsfleet_e2e::poll::give_up;
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
    let namespace = namespace_with_upstream(name)?;
    let first = namespace.start_operator("replica-a")?;
    let (first, second) = standby_beside(&namespace, first)?;
    Ok((namespace, first, second))
}

/// A namespace with the CRD and the minimal example's upstream Service.
fn namespace_with_upstream(name: &str) -> Result<TestNamespace> {
    let namespace = TestNamespace::create(name)?;
    namespace.control_plane().install_crd()?;
    create_backend_service(namespace.kubectl(), namespace.name())?;
    Ok(namespace)
}

/// Waits for `first` to lead, starts replica-b beside it and makes the minimal example Ready;
/// returns both replicas.
fn standby_beside(namespace: &TestNamespace, mut first: Operator) -> Result<(Operator, Operator)> {
    let kubectl = namespace.kubectl();
    first.await_leadership()?;
    let second = namespace.start_operator("replica-b")?;
    kubectl.run(&["apply", "-f", &example_path("minimal.yaml")])?;
    await_conditions(kubectl, "chat", &[Expected::new("Ready", "True")])?;
    Ok((first, second))
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

/// The writes of `user` in the namespace other than to the Lease, oldest first.
fn acting_writes(namespace: &TestNamespace, user: &str) -> Result<Vec<AuditedWrite>> {
    Ok(namespace
        .control_plane()
        .audited_writes(user, namespace.name())?
        .into_iter()
        .filter(|write| write.resource != "leases")
        .collect())
}

/// Per the audit log, no write of `old` was answered after the first write of its successor
/// `new` arrived, so the two never acted in the same interval.
fn ensure_no_write_after_successor(namespace: &TestNamespace, old: &str, new: &str) -> Result<()> {
    let successor_first = acting_writes(namespace, new)?
        .into_iter()
        .next()
        .with_context(|| format!("{new} wrote nothing"))?;
    let stale: Vec<_> = acting_writes(namespace, old)?
        .into_iter()
        .filter(|write| write.answered >= successor_first.at)
        .collect();
    ensure!(
        stale.is_empty(),
        "{old} wrote after {new} began at {}: {stale:?}",
        successor_first.at
    );
    Ok(())
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

    ensure_no_write_after_successor(&namespace, "replica-a", "replica-b")?;
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

/// How long replica-a's traffic is dropped: far past the lease, so the standby takes over.
const PARTITION: Duration = Duration::from_secs(60);

/// A leader whose traffic to the apiserver is dropped (only its own: it reaches the apiserver
/// through a relay the test turns into a black hole) stops acting before its successor starts,
/// and once the network heals it neither exits nor writes: it stands by, ready to take over.
#[test]
fn a_leader_cut_off_from_the_apiserver_steps_down_before_its_successor_acts() -> Result<()> {
    let namespace = namespace_with_upstream("partitioned-leader")?;
    let control_plane = namespace.control_plane();
    let kubectl = namespace.kubectl();
    let apiserver = control_plane
        .server()
        .trim_start_matches("https://")
        .parse()
        .context("the apiserver's address")?;
    let relay = Blackhole::start(apiserver)?;
    let through_relay = control_plane.kubeconfig_via("replica-a", &relay.url())?;
    let first = namespace.start_operator_with("replica-a", &through_relay)?;
    let (mut first, mut second) = standby_beside(&namespace, first)?;

    relay.swallow();
    let cut = Instant::now();
    eventually("replica-a to step down", DEADLINE, || {
        first.ensure_running().map_err(give_up)?;
        let leader = first.metric("wsfleet_operator_leader")?;
        ensure!(leader == 0.0, "wsfleet_operator_leader is {leader}");
        Ok(())
    })?;
    let early = acting_writes(&namespace, "replica-b")?;
    ensure!(
        early.is_empty(),
        "replica-b wrote before replica-a stepped down: {early:?}"
    );
    second.await_leadership()?;
    scale_through_the_leader(kubectl, 3)?;
    // The partition itself: a fixed length, not a condition.
    std::thread::sleep(PARTITION.saturating_sub(cut.elapsed()));
    relay.restore();

    eventually(
        "replica-a to stand by after the partition",
        DEADLINE,
        || {
            first.ensure_running().map_err(give_up)?;
            ensure!(
                first.log()?.contains("standing for the lease again"),
                "replica-a has not stood for the lease again"
            );
            Ok(())
        },
    )?;
    scale_through_the_leader(kubectl, 4)?;
    ensure_no_write_after_successor(&namespace, "replica-a", "replica-b")?;
    ensure!(
        first.metric("wsfleet_operator_leader")? == 0.0,
        "replica-a leads beside replica-b"
    );
    // A standby in earnest: once replica-b is gone, replica-a acts again.
    second.kill();
    first.await_leadership()?;
    ensure!(
        lease_holder(kubectl)? == "replica-a",
        "Lease not handed back to replica-a"
    );
    first.terminate(Duration::from_secs(30));
    Ok(())
}
