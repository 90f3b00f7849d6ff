//! Story 4: kube-proxy honours the Service's session affinity, as the operator sets it.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::wire::Endpoint;
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{Fleet, NAME, block_on, with_room_for_load};

const RECONNECTS: usize = 20;

/// The gateway pods (by address) that `RECONNECTS` connections in a row landed on.
fn pods_reached(endpoint: &Endpoint, token: &str) -> Result<BTreeSet<String>> {
    block_on(async {
        let mut reached = BTreeSet::new();
        for _ in 0..RECONNECTS {
            let mut session = endpoint.connect(token).await?;
            reached.insert(session.gateway_ip().await?);
            session.close().await?;
        }
        Ok(reached)
    })
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_pod_and_none_spreads_it() -> Result<()> {
    let fleet = Fleet::production_with("affinity", with_room_for_load)?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let endpoint = fleet.endpoint()?;
    let token = fleet.token("ada")?;

    let reached = pods_reached(&endpoint, &token)?;
    ensure!(
        reached.len() == 1,
        "with ClientIP affinity, {RECONNECTS} reconnects from one address reached {reached:?}"
    );

    fleet.patch(r#"{"spec":{"sessionAffinity":{"type":"None","timeoutSeconds":null}}}"#)?;
    // kube-proxy rewrites its rules on its own schedule; until then reconnects still stick.
    eventually("reconnects to spread over both pods", DEADLINE, || {
        let reached = pods_reached(&endpoint, &token)?;
        ensure!(
            reached.len() == 2,
            "{RECONNECTS} reconnects reached {reached:?}"
        );
        Ok(())
    })?;
    let service = fleet.kubectl().get("service", NAME)?;
    ensure!(
        service["spec"]["sessionAffinity"] == "None",
        "{}",
        service["spec"]
    );
    Ok(())
}
