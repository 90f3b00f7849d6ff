//! Story 5: a certificate renewed under load reaches the running pods through the kubelet's
//! Secret update; new handshakes get it, and no open connection or pod notices.

use anyhow::Result;
use wsfleet_e2e::fleet::await_ready_pods;

use crate::setup::{Fleet, NAME, with_quick_renewal, with_room_for_load};

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
