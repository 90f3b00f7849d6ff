//! Stories 7 and 8: changes that replace or remove gateway pods drain them: their clients get
//! 1001 spread over the grace period, none is cut without a close frame, and they reconnect.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use wsfleet_e2e::fleet::{await_ready_pods, gateway_pods, pods_of};
use wsfleet_e2e::wire::{Ending, Talk};
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{Fleet, NAME, block_on, with_room_for_load};

const GRACE_SECONDS: u64 = 10;

/// Checks that every ended connection got 1001, and that the closes were spread: the drain
/// closes them over most of the grace period, not at one instant.
fn ensure_drained(ended: &[&Talk]) -> Result<()> {
    ensure!(!ended.is_empty(), "no connection was drained");
    let mut times = Vec::new();
    for talk in ended {
        let (ending, at) = talk.ending.as_ref().context("not ended")?;
        ensure!(
            *ending == Ending::Closed(1001),
            "a drained connection ended with {ending:?}"
        );
        times.push(*at);
    }
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    ensure!(
        spread >= Duration::from_secs(GRACE_SECONDS) / 4,
        "{} closes came within {spread:?} of a {GRACE_SECONDS} s grace period",
        ended.len()
    );
    Ok(())
}

fn with_short_drain(manifest: &mut serde_json::Value) {
    manifest["spec"]["drain"]["gracePeriodSeconds"] = json!(GRACE_SECONDS);
    with_room_for_load(manifest);
}

#[test]
fn a_rollout_drains_the_old_pods_and_clients_reconnect() -> Result<()> {
    let fleet = Fleet::production_with("rollout", with_short_drain)?;
    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let load = fleet.open_load(40)?;

    // New resources need new pods.
    fleet.patch(r#"{"spec":{"resources":{"requests":{"cpu":"30m","memory":"96Mi"}}}}"#)?;
    eventually("every connection to be drained", DEADLINE, || {
        ensure!(load.ended() == 40, "{} of 40 ended", load.ended());
        Ok(())
    })?;
    let talks = load.finish()?;
    ensure_drained(&talks.iter().collect::<Vec<_>>())?;

    await_ready_pods(fleet.kubectl(), NAME, 2)?;
    let pods = pods_of(fleet.kubectl(), NAME)?;
    for pod in &pods {
        let requests = &pod["spec"]["containers"][0]["resources"]["requests"];
        ensure!(
            requests["cpu"] == "30m",
            "a pod with the old resources remains: {requests}"
        );
    }
    let (endpoint, token) = (fleet.endpoint()?, fleet.token("ada")?);
    block_on(async {
        let mut session = endpoint.connect(&token).await?;
        ensure!(session.round_trip("back again").await? == "back again");
        session.close().await
    })
}

#[test]
fn scaling_down_drains_the_removed_pods_only() -> Result<()> {
    let fleet = Fleet::production_with("scale-down", |manifest| {
        with_short_drain(manifest);
        let spec = manifest["spec"].as_object_mut().expect("spec");
        spec.remove("autoscaling");
        spec.insert("replicas".into(), json!(3));
        spec.insert("sessionAffinity".into(), json!({"type": "None"}));
    })?;
    await_ready_pods(fleet.kubectl(), NAME, 3)?;
    let load = fleet.open_load(45)?;

    fleet.patch(r#"{"spec":{"replicas":1}}"#)?;
    await_ready_pods(fleet.kubectl(), NAME, 1)?;
    let survivor = gateway_pods(fleet.kubectl(), NAME)?
        .into_keys()
        .next()
        .context("no gateway pod left")?;
    let talks = load.finish()?;
    let (kept, removed): (Vec<&Talk>, Vec<&Talk>) =
        talks.iter().partition(|talk| talk.gateway == survivor);
    ensure!(
        kept.iter().all(|talk| talk.ending.is_none()),
        "connections on the remaining pod {survivor} were ended"
    );
    ensure_drained(&removed)?;
    let (endpoint, token) = (fleet.endpoint()?, fleet.token("ada")?);
    block_on(async {
        let mut session = endpoint.connect(&token).await?;
        ensure!(session.gateway_ip().await? == survivor);
        session.close().await
    })
}
