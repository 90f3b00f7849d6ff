//! Children changed behind the operator's back: each is put back as the spec says, or, where
//! the object is the user's to fix (their own TLS Secret), the fleet says what is wrong with it.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use wsfleet_e2e::cert_checks::verify_serving_certificate;
use wsfleet_e2e::fixtures::{create_user_tls_secret, example_path};
use wsfleet_e2e::inspect::secret_value;
use wsfleet_e2e::{DEADLINE, Expected, Kubectl, await_conditions, condition, eventually};

use crate::setup::ready_production_fleet;

const FLEET: &str = "chat-prod";
const GATEWAY: &str = "chat-prod-gateway";

fn uid(kubectl: &Kubectl, kind: &str, name: &str) -> Result<String> {
    let object = kubectl.get(kind, name)?;
    object["metadata"]["uid"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{kind}/{name} has no uid"))
}

/// Deletes a child and waits for the operator to create it again.
fn delete_and_await_recreation(kubectl: &Kubectl, kind: &str, name: &str) -> Result<()> {
    let deleted = uid(kubectl, kind, name)?;
    kubectl.run(&["delete", kind, name, "--wait=false"])?;
    eventually(&format!("{kind}/{name} created again"), DEADLINE, || {
        let object = kubectl
            .try_get(kind, name)?
            .with_context(|| format!("{kind}/{name} is gone"))?;
        ensure!(
            object["metadata"]["uid"] != deleted.as_str()
                && object["metadata"]["deletionTimestamp"].is_null(),
            "still the deleted {kind}/{name}"
        );
        Ok(())
    })?;
    fleet_ready(kubectl, FLEET)
}

/// Changes a child with `args` and waits until `read` of it is what it was before.
fn tamper_and_await_restoration(
    kubectl: &Kubectl,
    what: &str,
    args: &[&str],
    read: impl Fn(&Kubectl) -> Result<Value>,
) -> Result<()> {
    let before = read(kubectl)?;
    kubectl.run(args)?;
    eventually(&format!("{what} restored"), DEADLINE, || {
        let now = read(kubectl)?;
        ensure!(now == before, "{what} is {now}, was {before}");
        Ok(())
    })?;
    fleet_ready(kubectl, FLEET)
}

fn fleet_ready(kubectl: &Kubectl, name: &str) -> Result<()> {
    await_conditions(
        kubectl,
        name,
        &[
            Expected::new("Ready", "True"),
            Expected::new("Degraded", "False"),
        ],
    )
    .map(drop)
}

/// The notes of the Events about WebSocketService `name` with `reason`.
fn event_notes(kubectl: &Kubectl, name: &str, reason: &str) -> Result<Vec<String>> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    let events = kubectl.run(&["get", "events", "--field-selector", &selector, "-o", "json"])?;
    let events: Value = serde_json::from_str(&events)?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["message"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn tampered_children_are_restored() -> Result<()> {
    let (namespace, _operator, _) = ready_production_fleet("tampering")?;
    let kubectl = namespace.kubectl();

    for (kind, name) in [
        ("deployment", GATEWAY),
        ("service", FLEET),
        ("poddisruptionbudget", GATEWAY),
        ("horizontalpodautoscaler", GATEWAY),
    ] {
        delete_and_await_recreation(kubectl, kind, name)?;
    }

    tamper_and_await_restoration(
        kubectl,
        "the gateway image",
        &[
            "set",
            "image",
            &format!("deployment/{GATEWAY}"),
            "gateway=tampered.example/gateway:evil",
        ],
        |kubectl| {
            Ok(
                kubectl.get("deployment", GATEWAY)?["spec"]["template"]["spec"]["containers"]
                    .clone(),
            )
        },
    )?;
    tamper_and_await_restoration(
        kubectl,
        "the gateway config",
        &[
            "patch",
            "configmap",
            GATEWAY,
            "--type",
            "merge",
            "-p",
            r#"{"data":{"gateway.yaml":"tampered: true\n"}}"#,
        ],
        |kubectl| Ok(kubectl.get("configmap", GATEWAY)?["data"].clone()),
    )?;
    // Under autoscaling the replica count is the HPA's: it, not the operator, puts a count
    // below its minimum back.
    tamper_and_await_restoration(
        kubectl,
        "the replica count under the HPA",
        &["scale", &format!("deployment/{GATEWAY}"), "--replicas=1"],
        |kubectl| Ok(kubectl.get("deployment", GATEWAY)?["spec"]["replicas"].clone()),
    )?;

    // The issued certificate is the operator's: garbage is replaced by a fresh certificate.
    kubectl.run(&[
        "patch",
        "secret",
        "chat-prod-tls",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"tls.crt":"Z2FyYmFnZQ==","tls.key":"Z2FyYmFnZQ=="}}"#,
    ])?;
    eventually(
        "a valid certificate in chat-prod-tls again",
        DEADLINE,
        || {
            let chain = secret_value(kubectl, "chat-prod-tls", "tls.crt")?;
            let ca = secret_value(kubectl, "chat-prod-tls", "ca.crt")?;
            verify_serving_certificate(&chain, &ca, &["chat.example.com"]).map(drop)
        },
    )?;
    await_conditions(
        kubectl,
        FLEET,
        &[Expected::new("CertificateReady", "True").because("CertificateRenewed")],
    )?;
    let notes = event_notes(kubectl, FLEET, "CertificateRenewed")?;
    ensure!(
        notes.iter().any(|note| note.contains("unusable")),
        "no CertificateRenewed Event saying why: {notes:?}"
    );
    fleet_ready(kubectl, FLEET)
}

/// A fleet without autoscaling owns its replica count; its user-managed TLS Secret is the
/// user's, so garbage there is reported, naming the Secret, and left alone.
#[test]
fn a_hand_scaled_gateway_is_restored_and_a_broken_user_secret_reported() -> Result<()> {
    let (namespace, _operator) = crate::setup::prepared("tampering-user-tls")?;
    let kubectl = namespace.kubectl();
    wsfleet_e2e::fixtures::create_backend_service(kubectl, namespace.name())?;
    create_user_tls_secret(
        kubectl,
        namespace.dir(),
        "chat-user-tls",
        &["chat.example.com"],
    )?;
    kubectl.run(&["apply", "-f", &example_path("user-tls.yaml")])?;
    fleet_ready(kubectl, "chat-user-tls")?;

    kubectl.run(&["scale", "deployment/chat-user-tls-gateway", "--replicas=7"])?;
    eventually("the replica count of the spec again", DEADLINE, || {
        let replicas = &kubectl.get("deployment", "chat-user-tls-gateway")?["spec"]["replicas"];
        ensure!(*replicas == 3, "spec.replicas is {replicas}");
        Ok(())
    })?;

    let garbage = r#"{"data":{"tls.crt":"Z2FyYmFnZQ=="}}"#;
    kubectl.run(&[
        "patch",
        "secret",
        "chat-user-tls",
        "--type",
        "merge",
        "-p",
        garbage,
    ])?;
    let wss = await_conditions(
        kubectl,
        "chat-user-tls",
        &[
            Expected::new("CertificateReady", "False").because("SecretInvalid"),
            Expected::new("Degraded", "True").because("SecretInvalid"),
        ],
    )?;
    let message = condition(&wss, "CertificateReady").map(|c| c["message"].to_string());
    ensure!(
        message
            .as_deref()
            .is_some_and(|message| message.contains("chat-user-tls")),
        "CertificateReady does not name the Secret: {message:?}"
    );
    ensure!(
        !event_notes(kubectl, "chat-user-tls", "SecretInvalid")?.is_empty(),
        "no SecretInvalid Event"
    );
    ensure!(
        secret_value(kubectl, "chat-user-tls", "tls.crt")? == "garbage",
        "the operator wrote the user's Secret"
    );
    Ok(())
}
