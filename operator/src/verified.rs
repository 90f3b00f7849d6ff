//! Children a reconcile found holding what their fleet wants, remembered with the versions of
//! both. Telling that a child is up to date takes its JSON and the desired child's; a fleet is
//! reconciled again for each event of each child while it converges, mostly finding the other
//! children as it left them. The memory is exact, with no time in it: what a fleet wants of its
//! children follows from its uid and generation (its spec), and a stored version of a child
//! never changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher::Event;

use crate::content_version::{content_version, deployment_content_version};
use crate::context::key_of;
use crate::crd::WebSocketService;

/// What a fleet's desired children follow from: the object (its uid, in the owner reference
/// and the names) and its spec (the generation, raised by the apiserver on every spec change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetVersion {
    uid: String,
    generation: i64,
}

impl FleetVersion {
    /// `None` for an object without a uid or generation: nothing is remembered for it.
    pub fn of(wss: &WebSocketService) -> Option<Self> {
        Some(Self {
            uid: wss.metadata.uid.clone()?,
            generation: wss.metadata.generation?,
        })
    }
}

/// One kind's children found up to date, by `namespace/name`.
pub struct Verified {
    inner: Arc<Mutex<HashMap<String, Record>>>,
    version: fn(&ObjectMeta) -> Option<ChildVersion>,
}

impl Clone for Verified {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            version: self.version,
        }
    }
}

impl Default for Verified {
    /// Children known by their resourceVersion.
    fn default() -> Self {
        Self::by(|meta| meta.resource_version.clone().map(ChildVersion::Stored))
    }
}

/// The version of a child a record was made for.
#[derive(Debug, PartialEq, Eq)]
enum ChildVersion {
    Stored(String),
    Content(u64),
}

struct Record {
    fleet: FleetVersion,
    child: ChildVersion,
}

impl Verified {
    /// Children known by their [`content_version`], for kinds whose generation the apiserver
    /// raises on every spec change: their status updates (a Deployment's, on each step of a
    /// rollout) do not make them look changed.
    pub fn by_content() -> Self {
        Self::by(|meta| content_version(meta).map(ChildVersion::Content))
    }

    /// [`Verified::by_content`] for Deployments, whose revision annotation moves with rollouts
    /// without changing anything the operator applied ([`deployment_content_version`]).
    pub fn by_deployment_content() -> Self {
        Self::by(|meta| deployment_content_version(meta).map(ChildVersion::Content))
    }

    fn by(version: fn(&ObjectMeta) -> Option<ChildVersion>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HashMap::new())),
            version,
        }
    }

    /// Whether `child`, in this very version, was found holding what `fleet` wants.
    pub fn holds<K: Resource>(&self, fleet: &FleetVersion, child: &K) -> bool {
        let Some((key, version)) = self.identify(child.meta()) else {
            return false;
        };
        self.lock()
            .get(&key)
            .is_some_and(|record| record.fleet == *fleet && record.child == version)
    }

    /// Remembers that `child` holds what `fleet` wants.
    pub fn record<K: Resource>(&self, fleet: &FleetVersion, child: &K) {
        let Some((key, version)) = self.identify(child.meta()) else {
            return;
        };
        let record = Record {
            fleet: fleet.clone(),
            child: version,
        };
        self.lock().insert(key, record);
    }

    /// The key and version of a child; `None` when it has no version: nothing is remembered
    /// of it.
    fn identify(&self, meta: &ObjectMeta) -> Option<(String, ChildVersion)> {
        let version = (self.version)(meta)?;
        Some((key_of(meta), version))
    }

    /// Called with each event of the kind's watch: a deleted child's record goes, and a relist
    /// starts afresh, so that the memory holds no more than the cache.
    pub fn saw<K: Resource>(&self, event: &Event<K>) {
        match event {
            Event::Delete(child) => {
                self.lock().remove(&key_of(child.meta()));
            }
            Event::Init => self.lock().clear(),
            Event::Apply(_) | Event::InitApply(_) | Event::InitDone => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::build::fixtures::example;
    use crate::content_version::DEPLOYMENT_REVISION;

    fn config_map(version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("chat-gateway".to_owned()),
                namespace: Some("team-a".to_owned()),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn fleet() -> FleetVersion {
        FleetVersion::of(&example("minimal.yaml")).expect("a stored object")
    }

    #[test]
    fn only_the_same_child_version_for_the_same_fleet_version_holds() {
        let verified = Verified::default();
        assert!(!verified.holds(&fleet(), &config_map("5")));
        verified.record(&fleet(), &config_map("5"));
        assert!(verified.holds(&fleet(), &config_map("5")));
        assert!(
            !verified.holds(&fleet(), &config_map("6")),
            "the child changed"
        );
        let mut changed_spec = example("minimal.yaml");
        changed_spec.metadata.generation = changed_spec.metadata.generation.map(|g| g + 1);
        let newer = FleetVersion::of(&changed_spec).unwrap();
        assert!(
            !verified.holds(&newer, &config_map("5")),
            "the spec changed"
        );
        let mut recreated = example("minimal.yaml");
        recreated.metadata.uid = Some("uid-2".to_owned());
        let recreated = FleetVersion::of(&recreated).unwrap();
        assert!(
            !verified.holds(&recreated, &config_map("5")),
            "another object of the same name"
        );
    }

    #[test]
    fn a_child_without_a_version_is_never_taken_as_verified() {
        let verified = Verified::default();
        let mut unversioned = config_map("5");
        unversioned.metadata.resource_version = None;
        verified.record(&fleet(), &unversioned);
        assert!(!verified.holds(&fleet(), &unversioned));
    }

    #[test]
    fn by_content_a_status_update_keeps_the_record_and_a_spec_or_metadata_change_drops_it() {
        let verified = Verified::by_deployment_content();
        let deployment = |version: &str, generation: i64| Deployment {
            metadata: ObjectMeta {
                name: Some("chat-gateway".to_owned()),
                namespace: Some("team-a".to_owned()),
                uid: Some("uid-9".to_owned()),
                generation: Some(generation),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        verified.record(&fleet(), &deployment("5", 1));
        let mut rolled_out = deployment("6", 1);
        rolled_out.status = Some(DeploymentStatus {
            ready_replicas: Some(1),
            ..DeploymentStatus::default()
        });
        assert!(verified.holds(&fleet(), &rolled_out));
        let mut revised = deployment("9", 1);
        let revision = (DEPLOYMENT_REVISION.to_owned(), "1".to_owned());
        revised.metadata.annotations = Some([revision].into());
        assert!(
            verified.holds(&fleet(), &revised),
            "the Deployment controller's revision"
        );
        assert!(
            !verified.holds(&fleet(), &deployment("7", 2)),
            "spec changed"
        );
        let mut relabelled = deployment("8", 1);
        relabelled.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
        assert!(!verified.holds(&fleet(), &relabelled));
    }

    #[test]
    fn deletions_and_relists_forget() {
        let verified = Verified::default();
        verified.record(&fleet(), &config_map("5"));
        verified.saw(&Event::Delete(config_map("6")));
        assert!(!verified.holds(&fleet(), &config_map("5")));
        verified.record(&fleet(), &config_map("5"));
        verified.saw(&Event::Apply(config_map("6")));
        assert!(
            verified.holds(&fleet(), &config_map("5")),
            "kept until deleted"
        );
        verified.saw(&Event::<ConfigMap>::Init);
        assert!(!verified.holds(&fleet(), &config_map("5")));
    }
}
