//! Story 5: a certificate renewed under load reaches the running pods through the kubelet's
//! Secret update; new handshakes get it, and no open connection or pod notices.

use anyhow::{Result, ensure};
use serde_json::json;
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::inspect::secret_value;
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{Fleet, NAME, TLS_SECRET, block_on, with_room_for_load};

#[test]
fn a_renewed_certificate_is_served_without_restarts_or_dropped_connections() -> Result<()> {
    // Renewed 20 s after each issuance.
    let fleet = Fleet::production_with("rotation", |manifest| {
        with_room_for_load(manifest);
        manifest["spec"]["tls"]["duration"] = json!("60s");
        manifest["spec"]["tls"]["renewBefore"] = json!("40s");
    })?;
    let kubectl = fleet.kubectl();
    await_ready_pods(kubectl, NAME, 2)?;
    let lives = fleet.pod_lives()?;
    let endpoint = fleet.endpoint()?;
    let token = fleet.token("ada")?;
    let first_certificate = block_on(endpoint.connect(&token))?.certificate;
    let load = fleet.open_load(200)?;

    let issued = secret_value(kubectl, TLS_SECRET, "tls.crt")?;
    eventually("the operator to renew the certificate", DEADLINE, || {
        let current = secret_value(kubectl, TLS_SECRET, "tls.crt")?;
        ensure!(current != issued, "tls.crt unchanged");
        Ok(())
    })?;
    eventually(
        "a new handshake to present a renewed certificate",
        DEADLINE,
        || {
            let session = block_on(endpoint.connect(&token))?;
            ensure!(
                session.certificate != first_certificate,
                "the gateway still presents the first certificate"
            );
            Ok(())
        },
    )?;
    load.ensure_undisturbed(&fleet, &lives)
}
