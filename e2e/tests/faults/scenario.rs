//! The scenario every fault test runs: fleets being written while the fault lasts.

use anyhow::{Result, ensure};
use wsfleet_e2e::convergence::{SmallFleet, await_converged, small_fleets};
use wsfleet_e2e::{DEADLINE, TestNamespace, eventually};

use crate::writer::Writer;

/// How many fleets exist before the fault, and how many the writer creates meanwhile.
const FLEETS: usize = 10;

/// Ten fleets converge; then a writer creates ten more and changes the first ten, retrying
/// through `fault`, which starts once the writer is under way. Returns once every fleet has
/// converged to its last spec, with no status ever claiming more than its children show.
pub fn writes_through(namespace: &TestNamespace, fault: impl FnOnce() -> Result<()>) -> Result<()> {
    let kubectl = namespace.kubectl();
    let before = small_fleets("before", FLEETS);
    let manifests: Vec<String> = before.iter().map(SmallFleet::manifest).collect();
    kubectl.apply(&manifests.join("---\n"))?;
    await_converged(kubectl, &before, DEADLINE)?;

    let created = small_fleets("during", FLEETS);
    let changed: Vec<SmallFleet> = before.iter().map(SmallFleet::changed).collect();
    let writes: Vec<String> = created
        .iter()
        .zip(&changed)
        .flat_map(|(new, change)| [new.manifest(), change.manifest()])
        .collect();
    let writer = Writer::start(kubectl.clone(), writes);
    eventually("the writer to be under way", DEADLINE, || {
        ensure!(writer.applied() >= 4, "{} applied", writer.applied());
        Ok(())
    })?;
    fault()?;
    writer.finish()?;
    let last: Vec<SmallFleet> = changed.into_iter().chain(created).collect();
    await_converged(kubectl, &last, DEADLINE)
}
