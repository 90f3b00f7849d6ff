//! Story 5: a certificate renewed under load reaches the running pods through the kubelet's
//! Secret update; new handshakes get it, and no open connection or pod notices. Once renewed
//! by the operator (SelfSigned), once by cert-manager (`tls.mode: CertManager`, with cert-manager's
//! real CRDs and its part played by the test).

use anyhow::{Context, Result, ensure};
use serde_json::json;
use wsfleet_e2e::cert_manager::{CertManagerStandIn, install_crds};
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{Fleet, NAME, cluster, with_quick_renewal, with_room_for_load};

/// The fleet's cert-manager Certificate.
const CERTIFICATE: &str = "chat-prod-gateway";

#[test]
fn a_renewed_certificate_is_served_without_restarts_or_dropped_connections() -> Result<()> {
    let fleet = Fleet::production_with("rotation", |manifest| {
        with_room_for_load(manifest);
        with_quick_renewal(manifest);
    })?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let lives = fleet.pod_lives()?;
    let before = fleet.certificates()?;
    let load = fleet.open_load(200)?;
    fleet.await_renewal(&before)?;
    load.ensure_undisturbed(&fleet, &lives)
}

#[test]
fn a_cert_manager_renewal_is_served_without_restarts_or_dropped_connections() -> Result<()> {
    install_crds(&cluster().kubectl())?;
    let mut cert_manager = None;
    let fleet = Fleet::production_then(
        "rotation-cert-manager",
        |manifest| {
            with_room_for_load(manifest);
            let tls = &mut manifest["spec"]["tls"];
            tls["mode"] = json!("CertManager");
            tls["issuerRef"] = json!({"name": "team-ca", "kind": "ClusterIssuer"});
        },
        |kubectl| {
            let stand_in = CertManagerStandIn::new(kubectl)?;
            stand_in.issue_once_written(CERTIFICATE, (2027, 6, 1), 1)?;
            cert_manager = Some(stand_in);
            Ok(())
        },
    )?;
    let cert_manager = cert_manager.context("cert-manager's part was not played")?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let lives = fleet.pod_lives()?;
    let before = fleet.certificates()?;
    let load = fleet.open_load(200)?;
    cert_manager.issue(CERTIFICATE, (2027, 9, 1), 2)?;
    fleet.await_renewal(&before)?;
    eventually("the fleet to report the renewed expiry", DEADLINE, || {
        let status = fleet.kubectl().get("wss", NAME)?["status"]["tls"].clone();
        ensure!(
            status["notAfter"] == "2027-09-01T00:00:00Z",
            "the fleet reports {status}"
        );
        Ok(())
    })?;
    load.ensure_undisturbed(&fleet, &lives)
}
