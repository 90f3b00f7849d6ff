//! Story 6: a change that needs no new pod reaches the running gateways through the kubelet's
//! ConfigMap update and takes effect there, with no restart and no dropped connection.

use std::time::Duration;

use anyhow::{Result, ensure};
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::wire::{Ending, Endpoint, Swarm};
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{Fleet, NAME, block_on, with_room_for_load};

#[test]
fn a_limit_and_an_origin_change_apply_in_the_running_pods() -> Result<()> {
    let fleet = Fleet::production_with("reload", with_room_for_load)?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let lives = fleet.pod_lives()?;
    let endpoint = fleet.endpoint()?;
    let token = fleet.token("ada")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let swarm = runtime.block_on(Swarm::open(
        &endpoint,
        &token,
        50,
        Duration::from_millis(500),
    ))?;
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

    let outcomes = runtime.block_on(swarm.finish())?;
    let ended: Vec<_> = outcomes
        .iter()
        .filter_map(|talk| talk.ending.as_ref())
        .collect();
    ensure!(
        ended.is_empty(),
        "connections ended during the reload: {ended:?}"
    );
    ensure!(
        fleet.pod_lives()? == lives,
        "the gateway pods were replaced or restarted"
    );
    Ok(())
}
