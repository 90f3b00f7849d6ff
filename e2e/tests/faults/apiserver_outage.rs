//! kube-apiserver killed for 30 s while fleets are written: the operator steps down, stands
//! again, and carries every fleet through by itself, in the same process.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use wsfleet_e2e::{eventually, poll::give_up};

use crate::plane::OwnPlane;
use crate::scenario::writes_through;

const OUTAGE: Duration = Duration::from_secs(30);

#[test]
fn the_operator_rides_out_an_apiserver_outage_by_itself() -> Result<()> {
    let plane = OwnPlane::start()?;
    let namespace = plane.namespace("apiserver-outage")?;
    let mut operator = namespace.start_operator("replica-a")?;
    operator.await_leadership()?;

    writes_through(&namespace, || {
        plane.stop_apiserver()?;
        let down = Instant::now();
        // It cannot renew, so it must stop acting within its renew deadline, well inside the outage.
        eventually("the operator to step down", OUTAGE, || {
            operator.ensure_running().map_err(give_up)?;
            let leader = operator.metric("wsfleet_operator_leader")?;
            ensure!(leader == 0.0, "wsfleet_operator_leader is {leader}");
            Ok(())
        })?;
        eprintln!("stepped down {:?} into the outage", down.elapsed());
        // The outage itself: a fixed length, not a condition.
        std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
        operator.ensure_running()?;
        plane.start_apiserver()?;
        operator.await_leadership()
    })?;

    // The same process, never restarted by anyone: it stood again by itself.
    operator.ensure_running()?;
    ensure!(
        operator.log()?.contains("standing for the lease again"),
        "the operator never said it stepped down"
    );
    Ok(())
}
