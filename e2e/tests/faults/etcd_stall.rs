//! etcd stalled (SIGSTOP) for 20 s under two operator replicas while fleets are written.
//!
//! A stall rather than a kill: a killed etcd refuses connections at once, which the apiserver
//! outage covers already; a stalled one leaves every request hanging inside the apiserver,
//! which is what tests that the lease gives up on time and that a write sent before the stall
//! cannot land beside the next leader's.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use wsfleet_e2e::controlplane::{AuditedWrite, REPLICA_USERS};
use wsfleet_e2e::{Operator, eventually, poll::give_up};

use crate::plane::OwnPlane;
use crate::scenario::writes_through;

const STALL: Duration = Duration::from_secs(20);

fn leading(operator: &mut Operator) -> Result<bool> {
    operator.ensure_running().map_err(give_up)?;
    Ok(operator.metric("wsfleet_operator_leader")? == 1.0)
}

#[test]
fn two_replicas_ride_out_an_etcd_stall_and_never_act_together() -> Result<()> {
    let plane = OwnPlane::start()?;
    let namespace = plane.namespace("etcd-stall")?;
    let mut replicas = [
        namespace.start_operator(REPLICA_USERS[0])?,
        namespace.start_operator(REPLICA_USERS[1])?,
    ];
    replicas[0].await_leadership()?;

    writes_through(&namespace, || {
        plane.pause_etcd()?;
        let stalled = Instant::now();
        // The leader cannot renew, so it must stop acting within its renew deadline.
        eventually("no replica to lead while etcd is stalled", STALL, || {
            let [first, second] = &mut replicas;
            ensure!(
                !leading(first)? && !leading(second)?,
                "a replica still leads"
            );
            Ok(())
        })?;
        eprintln!("no leader {:?} into the stall", stalled.elapsed());
        // The stall itself: a fixed length, not a condition.
        std::thread::sleep(STALL.saturating_sub(stalled.elapsed()));
        plane.resume_etcd()?;
        eventually("a replica to lead again", wsfleet_e2e::DEADLINE, || {
            let [first, second] = &mut replicas;
            ensure!(leading(first)? || leading(second)?, "no replica leads");
            Ok(())
        })
        .map(drop)
    })?;

    for replica in &mut replicas {
        replica.ensure_running()?;
    }
    let transitions =
        namespace.kubectl().get("lease", "wsfleet-operator")?["spec"]["leaseTransitions"]
            .as_u64()
            .unwrap_or_default();
    let terms = terms(&plane, namespace.name())?;
    eprintln!("{transitions} lease transitions; terms of writes: {terms:?}");
    ensure!(
        terms.len() as u64 <= transitions + 1,
        "{} runs of writes by alternating replicas, but only {transitions} lease transitions",
        terms.len()
    );
    Ok(())
}

/// The replicas' writes (the Lease aside) as runs of one writer each, oldest first: who wrote,
/// and the span from the first write received to the last one answered. Fails if one run's
/// last write was still unanswered when the next writer's first arrived, as it then may have
/// landed in the other's term.
fn terms(plane: &OwnPlane, namespace: &str) -> Result<Vec<(String, String, String)>> {
    let mut writes: Vec<(String, AuditedWrite)> = Vec::new();
    for user in REPLICA_USERS {
        let audited = plane.audited_writes(user, namespace)?;
        writes.extend(
            audited
                .into_iter()
                .filter(|write| write.resource != "leases")
                .map(|write| (user.to_owned(), write)),
        );
    }
    writes.sort_by(|(_, a), (_, b)| a.at.cmp(&b.at));
    let mut terms: Vec<(String, String, String)> = Vec::new();
    for (user, write) in writes {
        match terms.last_mut() {
            Some((writer, _, last)) if *writer == user => {
                *last = last.clone().max(write.answered);
            }
            Some((writer, _, last)) => {
                ensure!(
                    *last < write.at,
                    "{writer} had a write unanswered until {last} when {user} began at {}",
                    write.at
                );
                terms.push((user, write.at, write.answered));
            }
            None => terms.push((user, write.at, write.answered)),
        }
    }
    terms.first().context("no replica wrote anything")?;
    Ok(terms)
}
