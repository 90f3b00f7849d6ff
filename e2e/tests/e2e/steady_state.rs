//! Unchanged input means no writes: the object and its children keep their resourceVersions
//! while the operator idles, and across an operator restart, also when the spec spells its
//! resources differently from how the apiserver stores them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use wsfleet_e2e::children::{FIELD_MANAGER, expected_children};
use wsfleet_e2e::{DEADLINE, Expected, Kubectl, Operator, await_conditions, eventually};

use crate::setup::ready_production_fleet;

/// How long "nothing happens" is watched for. This is the one wait in the suite that is
/// not a condition: absence of writes can only be observed over an interval. Short, to
/// keep the suite fast; a hot loop or status churn writes many times a second.
const QUIET_INTERVAL: Duration = Duration::from_secs(8);

/// Kinds that other controllers write on their own (status, scale decisions): for these
/// only the operator's managedFields entries count, not the resourceVersion.
const SHARED_KINDS: [&str; 3] = [
    "deployment",
    "horizontalpodautoscaler",
    "poddisruptionbudget",
];

/// What a write by the operator would change, by kind/name: the resourceVersion of objects
/// only the operator writes, and the operator's managedFields entries (their `time` moves
/// on every write that changes something) everywhere.
fn write_marks(kubectl: &Kubectl) -> Result<BTreeMap<String, String>> {
    let mut objects = vec![("wss", "chat-prod".to_owned())];
    objects.extend(
        expected_children("chat-prod", Some("chat-prod-tls"), true)
            .into_iter()
            .map(|child| (child.kind, child.name)),
    );
    objects
        .into_iter()
        .map(|(kind, name)| {
            let object = kubectl.get(kind, &name)?;
            let operator_entries: Vec<&serde_json::Value> = object["metadata"]["managedFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|entry| entry["manager"] == FIELD_MANAGER)
                .collect();
            let version = if SHARED_KINDS.contains(&kind) {
                String::new()
            } else {
                object["metadata"]["resourceVersion"].to_string()
            };
            let mark = format!("{version} {}", serde_json::json!(operator_entries));
            Ok((format!("{kind}/{name}"), mark))
        })
        .collect()
}

/// Until every pod has rolled out and turned ready, the operator rightly keeps updating the
/// status (Ready comes as soon as the Deployment is Available, before the last pod).
fn await_settled(kubectl: &Kubectl) -> Result<()> {
    await_conditions(
        kubectl,
        "chat-prod",
        &[
            Expected::new("Ready", "True"),
            Expected::new("Progressing", "False"),
        ],
    )?;
    eventually("every gateway pod to be ready", DEADLINE, || {
        let wanted = kubectl.get("deployment", "chat-prod-gateway")?["spec"]["replicas"].clone();
        let ready = kubectl.get("wss", "chat-prod")?["status"]["readyReplicas"].clone();
        ensure!(ready == wanted, "{ready} of {wanted} ready");
        Ok(())
    })
}

fn assert_quiet(kubectl: &Kubectl, when: &str) -> Result<()> {
    let before = write_marks(kubectl)?;
    std::thread::sleep(QUIET_INTERVAL);
    let after = write_marks(kubectl)?;
    let changed: Vec<&String> = before
        .iter()
        .filter(|(object, version)| after.get(*object) != Some(version))
        .map(|(object, _)| object)
        .collect();
    ensure!(
        changed.is_empty(),
        "{when}: written within {QUIET_INTERVAL:?}: {changed:?}"
    );
    Ok(())
}

/// Resources spelled unlike the apiserver's stored form, and that stored form.
const SPELLED_RESOURCES: &str = r#"{"requests": {"cpu": "0.5", "memory": "1.5Gi"}, "limits": {"cpu": "1000m", "memory": "2Gi"}}"#;
const STORED_RESOURCES: &str =
    r#"{"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}"#;

/// Applies of unchanged content leave no trace in the stored objects (the apiserver drops
/// no-op writes), so they are counted where they are made: the operator's log.
fn assert_nothing_applied(operator: &Operator, when: &str) -> Result<()> {
    let applied: Vec<String> = operator
        .log_tail()
        .lines()
        .filter(|line| line.contains(" applied "))
        .map(without_colours)
        .collect();
    ensure!(
        applied.is_empty(),
        "{when}: the operator applied {applied:#?}"
    );
    Ok(())
}

/// `line` without its terminal colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut parts = line.split('\x1b');
    let first = parts.next().unwrap_or_default().to_owned();
    parts.fold(first, |text, part| {
        text + part.split_once('m').map_or(part, |(_, rest)| rest)
    })
}

fn reconciles(operator: &mut Operator) -> Result<f64> {
    operator.metric("wsfleet_operator_reconciles_total")
}

#[test]
fn no_writes_at_steady_state_nor_after_a_restart() -> Result<()> {
    let (namespace, operator, _children) = ready_production_fleet("steady-state")?;
    let kubectl = namespace.kubectl();
    await_settled(kubectl)?;
    assert_quiet(kubectl, "steady state")?;

    let patch = format!(r#"{{"spec": {{"resources": {SPELLED_RESOURCES}}}}}"#);
    kubectl.run(&["patch", "wss", "chat-prod", "--type", "merge", "-p", &patch])?;
    let stored: serde_json::Value = serde_json::from_str(STORED_RESOURCES)?;
    eventually("the Deployment to hold the new resources", DEADLINE, || {
        let deployment = kubectl.get("deployment", "chat-prod-gateway")?;
        let resources = &deployment["spec"]["template"]["spec"]["containers"][0]["resources"];
        ensure!(*resources == stored, "resources are {resources}");
        Ok(())
    })?;
    await_settled(kubectl)?;
    assert_quiet(kubectl, "resources spelled unlike the stored form")?;

    // A graceful stop releases the Lease, so the next replica takes over without waiting.
    operator.terminate(Duration::from_secs(30));
    let mut restarted = namespace.start_operator("operator-1")?;
    restarted.await_leadership()?;
    eventually(
        "the restarted operator to reconcile chat-prod",
        DEADLINE,
        || {
            let count = reconciles(&mut restarted)?;
            ensure!(count >= 1.0, "wsfleet_operator_reconciles_total is {count}");
            Ok(())
        },
    )?;
    assert_quiet(kubectl, "after restart")?;
    assert_nothing_applied(&restarted, "after restart")?;
    restarted.ensure_running()
}
