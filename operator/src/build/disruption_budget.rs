//! PodDisruptionBudget `<name>-gateway`: node drains evict one gateway pod at a time.
//!
//! `maxUnavailable: 1` rather than `minAvailable: <minReplicas>`: the latter blocks every drain
//! while the fleet sits at its minimum, and one pod at a time already bounds the connections
//! that must reconnect at once.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_metadata, pod_selector};
use crate::plan::Plan;

pub fn disruption_budget(plan: &Plan, owner: &OwnerReference) -> PodDisruptionBudget {
    let names = &plan.names;
    PodDisruptionBudget {
        metadata: child_metadata(names, names.gateway(), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pod_selector(names)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};

    #[test]
    fn one_pod_at_a_time_of_this_fleet() {
        let wss = example("minimal.yaml");
        let pdb = disruption_budget(&plan_of(&wss), &owner(&wss));
        assert_eq!(pdb.metadata.name.as_deref(), Some("chat-gateway"));
        assert_eq!(pdb.metadata.labels.as_ref().unwrap().len(), 4);
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let selector = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(selector["app.kubernetes.io/instance"], "chat");
        assert_eq!(selector.len(), 2);
    }
}
