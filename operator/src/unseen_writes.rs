//! The operator's own applies that a cache has not shown yet. Under load a watch can deliver
//! the event of an apply seconds after the apply returned; a reconcile in between would read
//! the child as it was before and apply it again.
//!
//! The rule is exact, with no time in it: an apply is remembered from just before it is sent
//! until the child's watch delivers any event about it (or relists), and it stands in for the
//! cached child only while the cache holds exactly the version the apply was decided on. A
//! cache changes only through its watch's events, so an unanswered entry means the cache has
//! not moved since; whatever happened to the child after the apply (a deletion, another
//! manager's write) arrives as an event, which drops the entry and wakes the owner again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Resource;
use kube::runtime::watcher::Event;

use crate::context::{key_of, object_key};

/// One kind's applies not yet seen by its watch, by `namespace/name`.
pub struct UnseenWrites<K> {
    inner: Arc<Mutex<Entries<K>>>,
}

impl<K> Clone for UnseenWrites<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Default for UnseenWrites<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Entries {
                next_ticket: 0,
                by_key: HashMap::new(),
            })),
        }
    }
}

struct Entries<K> {
    next_ticket: u64,
    by_key: HashMap<String, Entry<K>>,
}

struct Entry<K> {
    /// Tells this apply from a later one of the same child.
    ticket: u64,
    /// The cached child the apply was decided on.
    decided_on: Version,
    /// What the apply returned; `None` while it is in flight.
    written: Option<Arc<K>>,
}

/// A cached child's version, as far as the rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    Absent,
    Stored(String),
}

impl Version {
    /// `None` for an object without a resourceVersion: nothing can be said about it.
    fn of<K: Resource>(object: Option<&K>) -> Option<Self> {
        match object {
            None => Some(Self::Absent),
            Some(object) => object.meta().resource_version.clone().map(Self::Stored),
        }
    }
}

impl<K: Resource> UnseenWrites<K> {
    /// Called just before applying the child `namespace/name`, decided on `cached`.
    pub fn begin(&self, namespace: &str, name: &str, cached: Option<&K>) -> Pending<K> {
        let key = object_key(namespace, name);
        let ticket = Version::of(cached).map(|decided_on| {
            let mut entries = self.lock();
            entries.next_ticket += 1;
            let ticket = entries.next_ticket;
            entries.by_key.insert(
                key.clone(),
                Entry {
                    ticket,
                    decided_on,
                    written: None,
                },
            );
            ticket
        });
        Pending {
            writes: self.clone(),
            key,
            ticket,
        }
    }

    /// The child `namespace/name` as a reconcile should see it: the operator's own unseen
    /// apply when the cache still holds what it was decided on, else `cached`.
    pub fn newer(&self, namespace: &str, name: &str, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let Some(version) = Version::of(cached.as_deref()) else {
            return cached;
        };
        match self.lock().by_key.get(&object_key(namespace, name)) {
            Some(Entry {
                decided_on,
                written: Some(written),
                ..
            }) if *decided_on == version => Some(written.clone()),
            _ => cached,
        }
    }

    /// Called with each event of the kind's watch before its cache takes it: the cache is
    /// about to move, so no remembered apply may stand in for it any more. Returns whether the
    /// event is the echo of one of the operator's own applies: exactly the version the apply
    /// returned, which the reconcile that sent it has already read.
    pub fn saw(&self, event: &Event<K>) -> bool {
        let mut entries = self.lock();
        match event {
            Event::Apply(object) => {
                let entry = entries.by_key.remove(&key_of(object.meta()));
                let version = &object.meta().resource_version;
                version.is_some()
                    && entry
                        .and_then(|entry| entry.written)
                        .is_some_and(|written| written.meta().resource_version == *version)
            }
            Event::Delete(object) | Event::InitApply(object) => {
                entries.by_key.remove(&key_of(object.meta()));
                false
            }
            // A relist replaces the whole cache.
            Event::Init | Event::InitDone => {
                entries.by_key.clear();
                false
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many applies are remembered (for tests).
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.lock().by_key.len()
    }
}

/// An apply in flight. Dropped without [`Pending::written`] (the apply failed), it is forgotten.
pub struct Pending<K: Resource> {
    writes: UnseenWrites<K>,
    key: String,
    /// `None` when the decision was made on an object without a version: nothing to remember.
    ticket: Option<u64>,
}

impl<K: Resource> Pending<K> {
    /// The apply returned `written`. It is remembered unless the watch moved the cache since
    /// [`UnseenWrites::begin`], or the apply changed nothing (no event will come for it).
    pub fn written(mut self, written: &Arc<K>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let mut entries = self.writes.lock();
        let Some(entry) = entries.by_key.get_mut(&self.key) else {
            return;
        };
        if entry.ticket != ticket {
            return;
        }
        if Version::of(Some(written.as_ref())).as_ref() == Some(&entry.decided_on) {
            entries.by_key.remove(&self.key);
            return;
        }
        entry.written = Some(written.clone());
    }
}

impl<K: Resource> Drop for Pending<K> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut entries = self.writes.lock();
        if entries
            .by_key
            .get(&self.key)
            .is_some_and(|entry| entry.ticket == ticket)
        {
            entries.by_key.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn budget(version: &str) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("chat-gateway".to_owned()),
                namespace: Some("team-a".to_owned()),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            ..PodDisruptionBudget::default()
        }
    }

    fn version(object: Option<Arc<PodDisruptionBudget>>) -> Option<String> {
        object.and_then(|object| object.metadata.resource_version.clone())
    }

    /// A create whose watch event has not arrived: the cache still shows nothing.
    fn created_unseen() -> UnseenWrites<PodDisruptionBudget> {
        let writes = UnseenWrites::default();
        writes
            .begin("team-a", "chat-gateway", None)
            .written(&Arc::new(budget("7")));
        writes
    }

    #[test]
    fn an_unseen_create_stands_in_for_the_missing_child() {
        let writes = created_unseen();
        assert_eq!(
            version(writes.newer("team-a", "chat-gateway", None)),
            Some("7".to_owned())
        );
        assert_eq!(version(writes.newer("team-a", "other", None)), None);
    }

    #[test]
    fn an_unseen_update_stands_in_only_for_the_version_it_was_decided_on() {
        let writes = UnseenWrites::default();
        let before = budget("5");
        writes
            .begin("team-a", "chat-gateway", Some(&before))
            .written(&Arc::new(budget("7")));
        let cached = |version: &str| Some(Arc::new(budget(version)));
        assert_eq!(
            version(writes.newer("team-a", "chat-gateway", cached("5"))),
            Some("7".to_owned())
        );
        // The cache moved some other way: it is the truth.
        assert_eq!(
            version(writes.newer("team-a", "chat-gateway", cached("6"))),
            Some("6".to_owned())
        );
        assert_eq!(
            version(writes.newer("team-a", "chat-gateway", None)),
            None,
            "a deletion the cache shows is never hidden"
        );
    }

    #[test]
    fn a_child_deleted_right_after_its_create_is_missing_again() {
        let writes = created_unseen();
        writes.saw(&Event::Apply(budget("7")));
        writes.saw(&Event::Delete(budget("7")));
        assert_eq!(version(writes.newer("team-a", "chat-gateway", None)), None);
        assert_eq!(writes.remembered(), 0);
    }

    #[test]
    fn any_event_about_the_child_ends_the_stand_in() {
        let writes = created_unseen();
        writes.saw(&Event::Apply(budget("9")));
        assert_eq!(version(writes.newer("team-a", "chat-gateway", None)), None);
    }

    #[test]
    fn a_relist_forgets_every_unseen_write() {
        for marker in [Event::Init, Event::InitDone] {
            let writes = created_unseen();
            writes.saw(&marker);
            assert_eq!(writes.remembered(), 0);
        }
    }

    #[test]
    fn an_event_while_the_apply_is_in_flight_leaves_nothing_to_stand_in() {
        let writes = UnseenWrites::default();
        let pending = writes.begin("team-a", "chat-gateway", None);
        // The cache moves (here: a create by someone else) before the apply answers.
        writes.saw(&Event::Apply(budget("6")));
        pending.written(&Arc::new(budget("7")));
        assert_eq!(version(writes.newer("team-a", "chat-gateway", None)), None);
        assert_eq!(writes.remembered(), 0);
    }

    #[test]
    fn a_failed_or_empty_apply_is_not_remembered() {
        let writes = UnseenWrites::default();
        drop(writes.begin("team-a", "chat-gateway", None));
        assert_eq!(writes.remembered(), 0, "failed");
        let current = budget("5");
        writes
            .begin("team-a", "chat-gateway", Some(&current))
            .written(&Arc::new(budget("5")));
        assert_eq!(
            writes.remembered(),
            0,
            "changed nothing, so no event will come"
        );
    }

    #[test]
    fn an_object_without_a_version_is_never_stood_in_for() {
        let writes = created_unseen();
        let unversioned = Arc::new(PodDisruptionBudget::default());
        let seen = writes.newer("team-a", "chat-gateway", Some(unversioned.clone()));
        assert!(Arc::ptr_eq(&seen.unwrap(), &unversioned));
        let writes = UnseenWrites::default();
        writes
            .begin(
                "team-a",
                "chat-gateway",
                Some(&PodDisruptionBudget::default()),
            )
            .written(&Arc::new(budget("7")));
        assert_eq!(writes.remembered(), 0);
    }

    #[test]
    fn only_the_version_an_apply_returned_is_its_echo() {
        let writes = created_unseen();
        assert!(writes.saw(&Event::Apply(budget("7"))));
        assert!(!writes.saw(&Event::Apply(budget("7"))), "answered once");
        assert!(
            !created_unseen().saw(&Event::Apply(budget("8"))),
            "another write came after it"
        );
        assert!(
            !created_unseen().saw(&Event::InitApply(budget("7"))),
            "a relist may follow missed events"
        );
        let in_flight = UnseenWrites::default();
        let _pending = in_flight.begin("team-a", "chat-gateway", None);
        assert!(
            !in_flight.saw(&Event::Apply(budget("7"))),
            "the apply has not returned: nobody has read this version"
        );
    }
}
