//! Story 1: `helm install` runs the operator in the cluster, as users run it.

use anyhow::{Result, ensure};
use wsfleet_e2e::fleet::OPERATOR_NAMESPACE;

use crate::setup::{Fleet, NAME, cluster, operator};

#[test]
fn the_chart_runs_two_operator_replicas_and_the_lease_holder_acts_as_its_service_account()
-> Result<()> {
    operator()?;
    let kubectl = cluster().kubectl().in_namespace(OPERATOR_NAMESPACE);
    let deployment = kubectl.get("deployment", "wsfleet")?;
    ensure!(
        deployment["status"]["readyReplicas"] == 2,
        "operator replicas: {}",
        deployment["status"]
    );
    let service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pods = kubectl.list("pods", "app.kubernetes.io/name=wsfleet-operator")?;
    let names: Vec<&str> = pods
        .iter()
        .filter_map(|pod| pod["metadata"]["name"].as_str())
        .collect();
    ensure!(names.len() == 2, "operator pods: {names:?}");
    for pod in &pods {
        let status = &pod["status"]["containerStatuses"][0];
        ensure!(
            status["ready"] == true && status["restartCount"] == 0,
            "operator container: {status}"
        );
        ensure!(
            pod["spec"]["serviceAccountName"] == service_account.as_str(),
            "pod runs as {}",
            pod["spec"]["serviceAccountName"]
        );
    }
    let lease = kubectl.get("lease", "wsfleet-operator")?;
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    ensure!(
        names.contains(&holder),
        "the Lease is held by {holder:?}, not an operator pod"
    );

    // What the in-cluster operator writes carries the identity of the chart's ServiceAccount:
    // the apiserver records it in the Events the leader publishes.
    let fleet = Fleet::production_with("chart", |_| {})?;
    let selector = format!("involvedObject.name={NAME},involvedObject.kind=WebSocketService");
    let events =
        fleet
            .kubectl()
            .run(&["get", "events", "--field-selector", &selector, "-o", "json"])?;
    let events: serde_json::Value = serde_json::from_str(&events)?;
    let reporters: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["reportingInstance"].as_str())
        .collect();
    ensure!(
        !reporters.is_empty() && reporters.iter().all(|reporter| *reporter == holder),
        "Events reported by {reporters:?}, not only the Lease holder {holder}"
    );
    let expected_user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{service_account}");
    let can_i = |verb: &str, resource: &str| -> Result<bool> {
        let outcome = cluster().kubectl().outcome(
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "--as",
                &expected_user,
                "-n",
                fleet.namespace.name(),
            ],
            None,
        )?;
        Ok(outcome.stdout.trim() == "yes")
    };
    ensure!(
        can_i("patch", "deployments")?,
        "{expected_user} cannot patch Deployments"
    );
    ensure!(!can_i("create", "pods")?, "{expected_user} may create pods");
    Ok(())
}
