//! Two operator replicas: only the Lease holder acts, and killing it hands over.

use std::time::Duration;

use anyhow::{Result, ensure};
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
