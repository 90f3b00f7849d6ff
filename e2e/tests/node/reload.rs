//! Story 6: a change that needs no new pod reaches the running gateways through the kubelet's
//! ConfigMap update and takes effect there, with no restart and no dropped connection.

use anyhow::{Result, ensure};
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::wire::{Ending, Endpoint};
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{Fleet, NAME, block_on, with_room_for_load};

#[test]
fn a_limit_and_an_origin_change_apply_in_the_running_pods() -> Result<()> {
    let fleet = Fleet::production_with("reload", with_room_for_load)?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let lives = fleet.pod_lives()?;
    let load = fleet.open_load(50)?;
    let endpoint = fleet.endpoint()?;
    let token = fleet.token("ada")?;
    let other_origin = Endpoint {
        origin: "https://admin.example.com".to_owned(),
        ..endpoint.clone()
    };
    ensure!(
        block_on(other_origin.refusal(&token, &other_origin.origin))? == 403,
        "a new origin was accepted before it was allowed"
    );

    fleet.patch(
        r#"{"spec":{"limits":{"maxMessageBytes":4096},
            "auth":{"allowedOrigins":["https://chat.example.com","https://admin.example.com"]}}}"#,
    )?;
    eventually("the new origin to be accepted", DEADLINE, || {
        block_on(other_origin.connect(&token))?;
        Ok(())
    })?;
    eventually(
        "a 5,000-byte message to be refused with 1009",
        DEADLINE,
        || {
            block_on(async {
                let mut session = endpoint.connect(&token).await?;
                session.send(&"x".repeat(5_000)).await?;
                let ending = session.ending().await;
                ensure!(ending == Ending::Closed(1009), "ended with {ending:?}");
                Ok(())
            })
        },
    )?;
    load.ensure_undisturbed(&fleet, &lives)
}
