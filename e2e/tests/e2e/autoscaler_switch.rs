//! Story: a fleet asks for KEDA before KEDA is installed, KEDA's CRDs arrive, and the fleet
//! then switches between KEDA and the operator's own HPA, both ways, with never both present.

use anyhow::{Result, ensure};
use wsfleet_e2e::binaries::addons_bin_dir;
use wsfleet_e2e::keda::install_crds;
use wsfleet_e2e::poll::{DEADLINE, eventually};
use wsfleet_e2e::{Expected, Kubectl, await_conditions};

use crate::setup::ready_production_fleet;

const NAME: &str = "chat-prod";
/// The operator's HPA and KEDA's ScaledObject share the gateway's name.
const AUTOSCALER: &str = "chat-prod-gateway";
const KEDA_ON: &str = r#"{"spec":{"autoscaling":{"keda":{"prometheus":{"serverAddress":"http://prometheus.monitoring.svc:9090"}}}}}"#;
const KEDA_OFF: &str = r#"{"spec":{"autoscaling":{"keda":null}}}"#;

/// Which of the two autoscalers exist now: (the operator's HPA, KEDA's ScaledObject).
fn autoscalers(kubectl: &Kubectl, keda_served: bool) -> Result<(bool, bool)> {
    let hpa = kubectl.try_get("hpa", AUTOSCALER)?.is_some();
    let scaled_object = keda_served && kubectl.try_get("scaledobject", AUTOSCALER)?.is_some();
    Ok((hpa, scaled_object))
}

fn await_autoscalers(kubectl: &Kubectl, wanted: (bool, bool)) -> Result<()> {
    eventually(
        &format!("(HPA, ScaledObject) present: {wanted:?}"),
        DEADLINE,
        || {
            let found = autoscalers(kubectl, true)?;
            ensure!(found == wanted, "found {found:?}");
            Ok(())
        },
    )
}

fn patch(kubectl: &Kubectl, body: &str) -> Result<()> {
    kubectl.run(&["patch", "wss", NAME, "--type", "merge", "-p", body])?;
    Ok(())
}

#[test]
fn keda_installed_after_the_fleet_is_picked_up_and_the_autoscaler_switches_both_ways() -> Result<()>
{
    let (namespace, _operator, _) = ready_production_fleet("autoscaler-switch")?;
    let kubectl = namespace.kubectl();
    ensure!(
        autoscalers(kubectl, false)? == (true, false),
        "the production example starts without the operator's HPA"
    );

    // KEDA asked for, not installed: the fleet says so, and the operator's HPA is gone (two
    // autoscalers must never scale one Deployment).
    patch(kubectl, KEDA_ON)?;
    let object = await_conditions(
        kubectl,
        NAME,
        &[
            Expected::new("Ready", "False").because("KedaNotInstalled"),
            Expected::new("Degraded", "True").because("KedaNotInstalled"),
        ],
    )?;
    let message = object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Ready")
        .map(|condition| condition["message"].to_string())
        .unwrap_or_default();
    ensure!(
        message.contains("scaledobjects.keda.sh"),
        "the Ready message does not name KEDA's CRD: {message}"
    );
    ensure!(
        kubectl.try_get("hpa", AUTOSCALER)?.is_none(),
        "the operator's HPA stayed while the fleet asks for KEDA"
    );

    // KEDA's CRDs arrive; the fleet looks again on its own and writes the ScaledObject.
    install_crds(kubectl, &addons_bin_dir()?.join("keda-crds"))?;
    await_autoscalers(kubectl, (false, true))?;
    await_conditions(
        kubectl,
        NAME,
        &[
            Expected::new("Ready", "True"),
            Expected::new("Degraded", "False"),
        ],
    )?;

    // Back to the operator's HPA, and to KEDA again.
    patch(kubectl, KEDA_OFF)?;
    await_autoscalers(kubectl, (true, false))?;
    patch(kubectl, KEDA_ON)?;
    await_autoscalers(kubectl, (false, true))?;
    Ok(())
}
