//! Which events of a child's watch wake its fleet. Every event of a child used to: each status
//! update of a Deployment during a rollout, and an HPA's every few seconds while its metrics
//! move, each woke the fleet for a reconcile that found nothing to do. A child's event now
//! wakes its fleet when it changes the child's fingerprint: a hash of what a reconcile compares
//! or reads of it. The cache still takes every event first.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Resource;
use kube::runtime::watcher::Event;

use crate::content_version::{content_version, deployment_content_version, spec_version};
use crate::context::key_of;
use crate::status::DeploymentProgress;

/// A hash of what a reconcile reads of a child; `None` when it cannot be told, and then every
/// event of that child wakes its fleet.
pub type Fingerprint<K> = fn(&K) -> Option<u64>;

/// One child kind's filter: the fingerprint each child had when it last woke its fleet.
pub struct ChildTriggers<K> {
    fingerprint: Fingerprint<K>,
    last: HashMap<String, u64>,
}

impl<K: Resource> ChildTriggers<K> {
    pub fn new(fingerprint: Fingerprint<K>) -> Self {
        Self {
            fingerprint,
            last: HashMap::new(),
        }
    }

    /// Every event wakes the fleet: kinds whose every change is one a reconcile acts on (a
    /// ConfigMap, a Service), or whose status a reconcile reads as a whole (a Certificate).
    pub fn every_event() -> Self {
        Self::new(|_| None)
    }

    /// The child whose fleet `event` wakes, if any. Deletions always wake it (the child is
    /// made again), and so does each object of a relist, which may follow missed events. An
    /// `echo` (the version an apply of the operator returned, see [`UnseenWrites::saw`]) never
    /// does: the reconcile that sent the apply has read it.
    ///
    /// [`UnseenWrites::saw`]: crate::unseen_writes::UnseenWrites::saw
    pub fn wakes(&mut self, event: Event<K>, echo: bool) -> Option<K> {
        match event {
            Event::Apply(child) | Event::InitApply(child) => {
                let unchanged = match (self.fingerprint)(&child) {
                    Some(fingerprint) => {
                        self.last.insert(key_of(child.meta()), fingerprint) == Some(fingerprint)
                    }
                    None => {
                        // Nothing to compare the next event with either.
                        if !self.last.is_empty() {
                            self.last.remove(&key_of(child.meta()));
                        }
                        false
                    }
                };
                (!unchanged && !echo).then_some(child)
            }
            Event::Delete(child) => {
                self.last.remove(&key_of(child.meta()));
                Some(child)
            }
            Event::Init => {
                self.last.clear();
                None
            }
            Event::InitDone => None,
        }
    }
}

/// Kinds whose generation the apiserver raises on every spec change and whose status no
/// reconcile reads (a PodDisruptionBudget, a ScaledObject): the spec and the metadata.
pub fn content<K: Resource>(child: &K) -> Option<u64> {
    content_version(child.meta())
}

/// The gateway Deployment: its spec and metadata (less the revision the Deployment controller
/// notes, see [`deployment_content_version`]), and what the fleet's status reads of its status
/// ([`DeploymentProgress`]).
pub fn deployment(deployment: &Deployment) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    deployment_content_version(&deployment.metadata)?.hash(&mut hasher);
    DeploymentProgress::of(deployment).hash(&mut hasher);
    Some(hasher.finish())
}

/// The operator's HPA: its spec and metadata. The apiserver keeps no generation for HPAs, and
/// their status changes whenever the metrics move.
pub fn autoscaler(autoscaler: &HorizontalPodAutoscaler) -> Option<u64> {
    spec_version(&autoscaler.metadata, &autoscaler.spec)
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::api::autoscaling::v2::{
        HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus,
    };
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::content_version::DEPLOYMENT_REVISION;

    fn meta(version: u32, generation: Option<i64>) -> ObjectMeta {
        ObjectMeta {
            name: Some("chat-gateway".to_owned()),
            namespace: Some("team-a".to_owned()),
            uid: Some("uid-7".to_owned()),
            generation,
            resource_version: Some(version.to_string()),
            ..ObjectMeta::default()
        }
    }

    /// A Deployment in version `version`, whose status counts `ready` ready pods.
    pub(crate) fn deployment(version: u32, generation: i64, ready: i32) -> Deployment {
        Deployment {
            metadata: meta(version, Some(generation)),
            status: Some(DeploymentStatus {
                observed_generation: Some(generation),
                replicas: Some(1),
                updated_replicas: Some(1),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".to_owned(),
                    status: if ready > 0 { "True" } else { "False" }.to_owned(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    /// Which of `events` wake the fleet, by resource version.
    fn woken<K: Resource>(mut triggers: ChildTriggers<K>, events: Vec<Event<K>>) -> Vec<String> {
        events
            .into_iter()
            .filter_map(|event| triggers.wakes(event, false))
            .map(|child| child.meta().resource_version.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_deployment_wakes_its_fleet_only_when_what_the_status_reads_changes() {
        let mut unread = deployment(2, 1, 0);
        // Counted by the Deployment controller, read by nothing.
        unread.status.as_mut().unwrap().unavailable_replicas = Some(1);
        let mut relabelled = deployment(6, 2, 1);
        relabelled.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
        let mut observed_late = deployment(7, 3, 1);
        observed_late.status.as_mut().unwrap().observed_generation = Some(2);
        let events = vec![
            Event::Apply(deployment(1, 1, 0)),
            Event::Apply(unread),
            Event::Apply(deployment(3, 1, 1)),
            Event::Apply(deployment(4, 2, 1)),
            Event::Apply(deployment(5, 2, 1)),
            Event::Apply(relabelled),
            Event::Apply(observed_late),
            Event::Apply(deployment(8, 3, 1)),
        ];
        assert_eq!(
            woken(ChildTriggers::new(super::deployment), events),
            ["1", "3", "4", "6", "7", "8"]
        );
    }

    #[test]
    fn the_deployment_controllers_revision_wakes_nothing_its_observation_does() {
        // A new Deployment as the operator applied it: not observed yet.
        let mut applied = deployment(1, 1, 0);
        applied.status = None;
        // The Deployment controller made the ReplicaSet and noted its revision, through a
        // status update that has not observed the generation yet.
        let mut revised = applied.clone();
        revised.metadata.resource_version = Some("2".to_owned());
        let revision = (DEPLOYMENT_REVISION.to_owned(), "1".to_owned());
        revised.metadata.annotations = Some([revision.clone()].into());
        revised.status = Some(DeploymentStatus::default());
        let mut observed = deployment(3, 1, 0);
        observed.metadata.annotations = revised.metadata.annotations.clone();
        // Anyone else's annotation is a change a reconcile may have to undo.
        let mut annotated = deployment(4, 1, 0);
        let other = ("team".to_owned(), "a".to_owned());
        annotated.metadata.annotations = Some([revision, other].into());
        let events = [applied, revised, observed, annotated].map(Event::Apply);
        assert_eq!(
            woken(ChildTriggers::new(super::deployment), events.into()),
            ["1", "3", "4"]
        );
    }

    #[test]
    fn deletions_and_relists_always_wake() {
        let events = vec![
            Event::Apply(deployment(1, 1, 1)),
            Event::Delete(deployment(1, 1, 1)),
            Event::Apply(deployment(1, 1, 1)),
            Event::Init,
            Event::InitApply(deployment(1, 1, 1)),
            Event::InitDone,
            Event::Apply(deployment(2, 1, 1)),
        ];
        assert_eq!(
            woken(ChildTriggers::new(super::deployment), events),
            ["1", "1", "1", "1"]
        );
    }

    #[test]
    fn a_budgets_status_wakes_nothing() {
        let budget = |version, generation, healthy| PodDisruptionBudget {
            metadata: meta(version, Some(generation)),
            status: Some(PodDisruptionBudgetStatus {
                current_healthy: healthy,
                ..PodDisruptionBudgetStatus::default()
            }),
            ..PodDisruptionBudget::default()
        };
        let events = vec![
            Event::Apply(budget(1, 1, 0)),
            Event::Apply(budget(2, 1, 1)),
            Event::Apply(budget(3, 2, 1)),
        ];
        assert_eq!(woken(ChildTriggers::new(content), events), ["1", "3"]);
    }

    #[test]
    fn an_autoscaler_wakes_on_spec_changes_not_on_its_metrics() {
        let autoscaler = |version, max_replicas, current_replicas| HorizontalPodAutoscaler {
            // The apiserver keeps no generation for HPAs.
            metadata: meta(version, None),
            spec: Some(HorizontalPodAutoscalerSpec {
                max_replicas,
                ..HorizontalPodAutoscalerSpec::default()
            }),
            status: Some(HorizontalPodAutoscalerStatus {
                current_replicas: Some(current_replicas),
                ..HorizontalPodAutoscalerStatus::default()
            }),
        };
        let events = vec![
            Event::Apply(autoscaler(1, 4, 1)),
            Event::Apply(autoscaler(2, 4, 2)),
            Event::Apply(autoscaler(3, 5, 2)),
        ];
        assert_eq!(
            woken(ChildTriggers::new(super::autoscaler), events),
            ["1", "3"]
        );
    }

    #[test]
    fn kinds_without_a_fingerprint_wake_on_every_event() {
        let config_map = |version| ConfigMap {
            metadata: meta(version, None),
            ..ConfigMap::default()
        };
        let events = vec![Event::Apply(config_map(1)), Event::Apply(config_map(2))];
        assert_eq!(woken(ChildTriggers::every_event(), events), ["1", "2"]);
    }

    #[test]
    fn an_echo_wakes_nothing_and_is_what_the_next_event_is_compared_with() {
        let mut triggers = ChildTriggers::new(super::deployment);
        assert!(
            triggers
                .wakes(Event::Apply(deployment(1, 1, 0)), false)
                .is_some()
        );
        assert!(
            triggers
                .wakes(Event::Apply(deployment(2, 2, 0)), true)
                .is_none()
        );
        let mut unread = deployment(3, 2, 0);
        unread.status.as_mut().unwrap().unavailable_replicas = Some(1);
        assert!(triggers.wakes(Event::Apply(unread), false).is_none());
        assert!(
            triggers
                .wakes(Event::Delete(deployment(3, 2, 0)), true)
                .is_some()
        );
    }
}
