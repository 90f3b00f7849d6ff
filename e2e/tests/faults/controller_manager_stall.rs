//! The controller manager stalled (SIGSTOP) just after it was seen at work, while a new fleet's
//! status waits for the Deployment controller to observe its Deployment. The wait outlasts the
//! 10 s grace only while the controller is seen working; once it is seen to stop, the status is
//! written within seconds, not at the ten-minute cap.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::json;
use wsfleet_e2e::convergence::{SmallFleet, await_converged};
use wsfleet_e2e::{DEADLINE, eventually, poll::give_up};

use crate::plane::OwnPlane;

/// Far below the ten-minute cap; above the 10 s the stop takes to show plus the 5 s between
/// looks for it.
const STATUS_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_status_held_for_a_working_controller_is_written_once_it_stops() -> Result<()> {
    let plane = OwnPlane::start()?;
    let namespace = plane.namespace("controller-stall")?;
    let kubectl = namespace.kubectl();
    let mut operator = namespace.start_operator("replica-a")?;
    operator.await_leadership()?;
    let busy = SmallFleet::new("busy");
    kubectl.apply(&busy.manifest())?;
    await_converged(kubectl, std::slice::from_ref(&busy), DEADLINE)?;
    let generation = kubectl.get("deployment", "busy-gateway")?["metadata"]["generation"].clone();

    plane.pause_controller_manager()?;
    let held = SmallFleet::new("held");
    kubectl.apply(&held.manifest())?;
    // Until the operator has applied the new fleet's Deployment, the Deployment controller is
    // made to look at work: observations of the first fleet's Deployment, written here as the
    // stalled controller would have.
    let mut updated = 0;
    eventually("the new fleet's Deployment", DEADLINE, || {
        updated = 1 - updated;
        let status =
            json!({"status": {"observedGeneration": generation, "updatedReplicas": updated}});
        kubectl.run(&[
            "patch",
            "deployment",
            "busy-gateway",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])?;
        kubectl.get("deployment", "held-gateway").map(drop)
    })?;
    let last_observation = Instant::now();

    let written = eventually("the new fleet's status", STATUS_DEADLINE, || {
        operator.ensure_running().map_err(give_up)?;
        let status = &kubectl.get("wss", "held")?["status"];
        ensure!(
            status.get("conditions").is_some(),
            "no status yet: {status}"
        );
        Ok(last_observation.elapsed())
    })?;
    eprintln!("status written {written:?} after the last observation");
    plane.resume_controller_manager()?;
    await_converged(kubectl, &[busy, held], DEADLINE)
}
