//! Story: `tls.mode: CertManager` against cert-manager's real CRDs, with the controller's part
//! played by the test (`CertManagerStandIn`). Before the CRDs exist the fleet says so; once
//! they do, the operator's Certificate is accepted by their schema as written, and the fleet
//! follows cert-manager: issuing, Ready with the Secret's expiry, and a renewal; leaving
//! cert-manager deletes the Certificate.

use anyhow::{Result, ensure};
use wsfleet_e2e::cert_manager::{CertManagerStandIn, dns_names, install_crds};
use wsfleet_e2e::fixtures::create_backend_service;
use wsfleet_e2e::poll::{DEADLINE, eventually};
use wsfleet_e2e::{Expected, Kubectl, await_conditions, condition};

use crate::setup::prepared;

const NAME: &str = "chat";
const CERTIFICATE: &str = "chat-gateway";
const MANIFEST: &str = "apiVersion: wsfleet.io/v1alpha1
kind: WebSocketService
metadata: {name: chat}
spec:
  upstream: {service: chat-backend, port: 8080}
  tls:
    mode: CertManager
    issuerRef: {name: team-ca, kind: ClusterIssuer}
    dnsNames: [chat.example.com]
";

/// Waits until the fleet reports the certificate valid until `not_after` (RFC 3339).
fn await_reported_expiry(kubectl: &Kubectl, not_after: &str) -> Result<()> {
    eventually(
        &format!("the fleet to report expiry {not_after}"),
        DEADLINE,
        || {
            let object = kubectl.get("wss", NAME)?;
            let ready = condition(&object, "CertificateReady")
                .cloned()
                .unwrap_or_default();
            ensure!(
                ready["status"] == "True"
                    && ready["reason"] == "CertManagerReady"
                    && object["status"]["tls"]["notAfter"] == not_after,
                "CertificateReady {ready}, tls status {}",
                object["status"]["tls"]
            );
            Ok(())
        },
    )
}

#[test]
fn a_cert_manager_certificate_is_written_followed_to_ready_and_renewed() -> Result<()> {
    let (namespace, _operator) = prepared("cert-manager")?;
    let kubectl = namespace.kubectl();
    create_backend_service(kubectl, namespace.name())?;
    kubectl.apply(MANIFEST)?;

    // No cert-manager: the fleet says what is missing.
    let object = await_conditions(
        kubectl,
        NAME,
        &[
            Expected::new("Ready", "False").because("CertManagerNotInstalled"),
            Expected::new("CertificateReady", "False").because("CertManagerNotInstalled"),
        ],
    )?;
    let message = condition(&object, "CertificateReady")
        .map(|ready| ready["message"].to_string())
        .unwrap_or_default();
    ensure!(
        message.contains("certificates.cert-manager.io"),
        "the message does not name cert-manager's CRD: {message}"
    );

    // cert-manager's CRDs arrive; the fleet looks again on its own and writes its Certificate,
    // which their schema keeps as written (a pruned field would be missing here).
    install_crds(kubectl)?;
    let certificate = eventually("the operator's Certificate", DEADLINE, || {
        kubectl
            .try_get("certificate", CERTIFICATE)?
            .ok_or_else(|| anyhow::anyhow!("not yet"))
    })?;
    let spec = &certificate["spec"];
    let dns_names = dns_names(&certificate);
    let service_name = format!("chat.{}.svc", namespace.name());
    ensure!(
        spec["secretName"] == "chat-tls"
            && spec["issuerRef"]
                == serde_json::json!({"name": "team-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
            && spec["duration"] == "2160h"
            && spec["renewBefore"] == "360h"
            && spec["privateKey"]
                == serde_json::json!({"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"})
            && spec["secretTemplate"]["labels"]["app.kubernetes.io/instance"] == NAME
            && dns_names.contains(&"chat.example.com")
            && dns_names.contains(&service_name.as_str()),
        "Certificate spec as stored: {spec}"
    );
    let owner = &certificate["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "WebSocketService" && owner["name"] == NAME && owner["controller"] == true,
        "the Certificate is not the fleet's child: {owner}"
    );

    // cert-manager at work: issuing, then Ready with the Secret it wrote.
    let cert_manager = CertManagerStandIn::new(kubectl)?;
    cert_manager.report_issuing(CERTIFICATE)?;
    eventually(
        "the fleet to pass on cert-manager's reason",
        DEADLINE,
        || {
            let object = kubectl.get("wss", NAME)?;
            let ready = condition(&object, "CertificateReady")
                .cloned()
                .unwrap_or_default();
            ensure!(
                ready["status"] == "False"
                    && ready["reason"] == "CertificateNotReady"
                    && ready["message"]
                        .as_str()
                        .is_some_and(|message| message.contains("not Ready: DoesNotExist")),
                "CertificateReady {ready}"
            );
            Ok(())
        },
    )?;
    cert_manager.issue(CERTIFICATE, (2027, 6, 1), 1)?;
    await_reported_expiry(kubectl, "2027-06-01T00:00:00Z")?;
    await_conditions(kubectl, NAME, &[Expected::new("Ready", "True")])?;

    // cert-manager renews: a new certificate in the same Secret, a new expiry in the status.
    cert_manager.issue(CERTIFICATE, (2027, 9, 1), 2)?;
    await_reported_expiry(kubectl, "2027-09-01T00:00:00Z")?;

    // Leaving cert-manager: its Certificate goes, so it stops writing; the operator issues its
    // own into another Secret (cert-manager's stays, and is not the fleet's to take).
    kubectl.run(&[
        "patch",
        "wss",
        NAME,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"tls":{"mode":"SelfSigned","issuerRef":null,"secretName":"chat-own-tls"}}}"#,
    ])?;
    await_conditions(
        kubectl,
        NAME,
        &[Expected::new("CertificateReady", "True").because("CertificateIssued")],
    )?;
    eventually("the Certificate to be deleted", DEADLINE, || {
        ensure!(
            kubectl.try_get("certificate", CERTIFICATE)?.is_none(),
            "still there"
        );
        Ok(())
    })?;
    Ok(())
}
