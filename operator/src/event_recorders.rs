//! The Event recorders. kube's `Recorder` keeps each Event it published for six minutes, so that
//! a repeat becomes a count on the first, and walks all it keeps on every publish to drop the
//! old ones. With one recorder, each new fleet's Ready Event walked the Events of every fleet
//! made in the minutes before it: quadratic in a burst of new fleets. Objects are spread over
//! shards by name instead, each shard a recorder with a cache of its own, so an object's repeats
//! still meet its earlier Events and a walk covers a shard's share.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

/// Shards: a burst of 1,000 new fleets leaves about 16 Events in each shard's cache.
const SHARDS: usize = 64;

/// Event recorders, one per shard of the objects.
pub struct EventRecorders {
    shards: Vec<Recorder>,
}

impl EventRecorders {
    pub fn new(client: &Client, reporter: &Reporter) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Recorder::new(client.clone(), reporter.clone()))
            .collect();
        Self { shards }
    }

    /// The recorder of the object `regarding`: always the same one for the same object.
    pub fn of(&self, regarding: &ObjectReference) -> &Recorder {
        &self.shards[shard(regarding)]
    }
}

/// The shard of `regarding`, by its namespace and name.
fn shard(regarding: &ObjectReference) -> usize {
    let mut hasher = DefaultHasher::new();
    (&regarding.namespace, &regarding.name).hash(&mut hasher);
    // The remainder is below SHARDS, so it fits a usize.
    (hasher.finish() % SHARDS as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some("team-a".to_owned()),
            name: Some(name.to_owned()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn an_object_keeps_its_shard_and_many_objects_spread_over_all() {
        let chat = reference("chat");
        let mut later = chat.clone();
        later.resource_version = Some("7".to_owned());
        assert_eq!(shard(&chat), shard(&later));
        let used: BTreeSet<usize> = (0..1000)
            .map(|n| shard(&reference(&format!("ws-{n}"))))
            .collect();
        assert_eq!(used.len(), SHARDS);
    }
}
