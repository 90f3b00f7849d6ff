//! Which changes of a WebSocketService call for a reconcile. Every write to the object moves
//! its resourceVersion, the operator's own status writes included; a reconcile for one of those
//! would find the fleet as it just left it. So the object's own watch lets through only
//! changes of what a reconcile acts on (see [`acted_on`]); the children's watches and the
//! requeues still wake the object as before.

use kube::core::error_boundary::DeserializeGuard;

use crate::content_version::content_version;
use crate::crd::WebSocketService;

/// A hash of everything in `guard` but its status and the bookkeeping every write moves
/// (resourceVersion, managedFields): the spec through its generation, which the apiserver
/// raises on each spec change (the CRD has a status subresource), and the metadata a user or
/// another controller may change ([`content_version`]). `None`, so that the event always
/// passes, for an object that does not parse or has no generation.
pub fn acted_on(guard: &DeserializeGuard<WebSocketService>) -> Option<u64> {
    content_version(&guard.0.as_ref().ok()?.metadata)
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::core::error_boundary::InvalidObject;
    use kube::runtime::{WatchStreamExt, watcher};

    use super::*;
    use crate::build::fixtures::example;
    use crate::crd::WebSocketServiceStatus;

    fn stored() -> WebSocketService {
        let mut wss = example("minimal.yaml");
        wss.metadata.resource_version = Some("100".to_owned());
        wss
    }

    /// Whether a watch that delivered `before` lets `after` through.
    fn passes(before: WebSocketService, after: WebSocketService) -> bool {
        let events = stream::iter(
            [before, after].map(|wss| Ok::<_, watcher::Error>(DeserializeGuard(Ok(wss)))),
        );
        let passed = futures::executor::block_on(
            events
                .predicate_filter(acted_on, Default::default())
                .collect::<Vec<_>>(),
        );
        passed.len() == 2
    }

    /// `stored()` after `change`, as a new version of the object.
    fn changed(change: impl FnOnce(&mut WebSocketService)) -> WebSocketService {
        let mut wss = stored();
        change(&mut wss);
        wss.metadata.resource_version = Some("101".to_owned());
        wss
    }

    #[test]
    fn a_status_write_alone_is_no_trigger() {
        let after = changed(|wss| {
            wss.status = Some(WebSocketServiceStatus {
                observed_generation: wss.metadata.generation,
                ..WebSocketServiceStatus::default()
            });
            wss.metadata.managed_fields = Some(Vec::new());
        });
        assert!(!passes(stored(), after));
    }

    #[test]
    fn spec_and_metadata_changes_are_triggers() {
        type Change = fn(&mut WebSocketService);
        let changes: [(&str, Change); 7] = [
            ("generation", |wss| {
                wss.metadata.generation = wss.metadata.generation.map(|g| g + 1);
            }),
            ("labels", |wss| {
                wss.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
            }),
            ("annotations", |wss| {
                wss.metadata.annotations = Some([("note".to_owned(), "x".to_owned())].into());
            }),
            ("finalizers", |wss| {
                wss.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
            }),
            ("deletionTimestamp", |wss| {
                wss.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            }),
            ("deletionGracePeriodSeconds", |wss| {
                wss.metadata.deletion_grace_period_seconds = Some(0);
            }),
            ("ownerReferences", |wss| {
                wss.metadata.owner_references = Some(vec![OwnerReference {
                    name: "parent".to_owned(),
                    ..OwnerReference::default()
                }]);
            }),
        ];
        for (what, change) in changes {
            assert!(passes(stored(), changed(change)), "{what}");
        }
    }

    #[test]
    fn a_new_object_of_the_same_name_is_a_trigger() {
        let recreated = changed(|wss| wss.metadata.uid = Some("uid-2".to_owned()));
        assert!(passes(stored(), recreated));
    }

    #[test]
    fn objects_that_cannot_be_judged_always_pass() {
        let without_generation = changed(|wss| wss.metadata.generation = None);
        assert_eq!(acted_on(&DeserializeGuard(Ok(without_generation))), None);
        let invalid = DeserializeGuard::<WebSocketService>(Err(InvalidObject {
            error: "spec: missing field `upstream`".to_owned(),
            metadata: stored().metadata,
        }));
        assert_eq!(acted_on(&invalid), None);
    }
}
