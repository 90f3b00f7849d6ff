//! Load with changes: 1,000 connections keep talking through a certificate renewal and a
//! config reload, which none of them notices, then a rolling update, which closes each with
//! 1001 and loses no message without saying so; the clients then reconnect to the new pods.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::json;
use wsfleet_e2e::fleet::await_ready_pods;
use wsfleet_e2e::wire::{Ending, Endpoint};
use wsfleet_e2e::{DEADLINE, eventually};

use crate::setup::{
    Fleet, NAME, block_on, ensure_talked_whole, with_quick_renewal, with_room_for_load,
};

const CONNECTIONS: usize = 1_000;
/// Each connection's pace: 1,000 messages a second in all, each way.
const INTERVAL: Duration = Duration::from_secs(1);

#[test]
fn a_thousand_connections_talk_through_renewal_reload_and_rollout() -> Result<()> {
    let fleet = Fleet::production_with("load", |manifest| {
        with_room_for_load(manifest);
        with_quick_renewal(manifest);
        manifest["spec"]["drain"]["gracePeriodSeconds"] = json!(20);
        // Both pods carry connections, although every client is the host.
        manifest["spec"]["sessionAffinity"] = json!({"type": "None"});
    })?;
    let kubectl = fleet.kubectl();
    await_ready_pods(kubectl, NAME, 2)?;
    let lives = fleet.pod_lives()?;
    let endpoint = fleet.endpoint()?;
    let token = fleet.token("ada")?;
    let before = fleet.certificates()?;
    let load = fleet.open_load_every(CONNECTIONS, INTERVAL)?;

    // A reload and a renewal at once, under the same connections.
    let other_origin = Endpoint {
        origin: "https://admin.example.com".to_owned(),
        ..endpoint.clone()
    };
    fleet.patch(
        r#"{"spec":{"auth":{"allowedOrigins":["https://chat.example.com","https://admin.example.com"]}}}"#,
    )?;
    eventually("the reloaded origin to be accepted", DEADLINE, || {
        block_on(other_origin.connect(&token))?;
        Ok(())
    })?;
    fleet.await_renewal(&before)?;
    ensure!(
        load.ended() == 0,
        "{} connections ended during renewal and reload",
        load.ended()
    );
    ensure!(
        fleet.pod_lives()? == lives,
        "the gateway pods were replaced or restarted"
    );

    // New resources need new pods: every connection is drained.
    fleet.patch(r#"{"spec":{"resources":{"requests":{"cpu":"30m","memory":"96Mi"}}}}"#)?;
    eventually("every connection to be drained", DEADLINE * 2, || {
        ensure!(
            load.ended() == CONNECTIONS,
            "{} of {CONNECTIONS} ended",
            load.ended()
        );
        Ok(())
    })?;
    let talks = load.finish()?;
    for talk in &talks {
        let ending = talk.ending.as_ref().map(|(ending, _)| ending);
        ensure!(
            ending == Some(&Ending::Closed(1001)),
            "a connection ended with {ending:?}, not a 1001 close frame"
        );
        ensure!(
            talk.misordered.is_none(),
            "messages went astray before the drain: {talk:?}"
        );
    }
    let exchanged: u64 = talks.iter().map(|talk| talk.echoed).sum();
    let unanswered: u64 = talks.iter().map(|talk| talk.unanswered()).sum();
    println!(
        "{CONNECTIONS} connections drained: {exchanged} messages echoed, {unanswered} in flight \
         at the 1001 close"
    );

    // The clients come back to the new pods, and every message is answered there.
    await_ready_pods(kubectl, NAME, 2)?;
    let load = fleet.open_load_every(CONNECTIONS, INTERVAL)?;
    let target = load.echoed() + 3 * CONNECTIONS as u64;
    eventually("the reconnected clients to talk", DEADLINE, || {
        ensure!(
            load.echoed() >= target,
            "{} echoes of {target}",
            load.echoed()
        );
        Ok(())
    })?;
    let talks = load.finish()?;
    ensure!(
        talks.iter().all(|talk| talk.ending.is_none()),
        "reconnected clients were ended"
    );
    ensure_talked_whole(&talks)
}
