//! Live connections per token subject (`limits.connectionsPerSubject`), counted per gateway.
//!
//! A subject holds an entry only while it has connections: the last one to close removes it,
//! so the map stays as large as the set of users connected now, not every user ever seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

/// Independent locks, so that handshakes of different users rarely wait on each other.
const SHARDS: usize = 16;

/// Live connections by subject.
#[derive(Debug, Default)]
pub struct SubjectConnections {
    shards: [Mutex<HashMap<Box<str>, u32>>; SHARDS],
    hasher: RandomState,
}

impl SubjectConnections {
    /// Counts a new connection of `subject`, or `None` when it already has `limit` of them.
    pub fn try_open(self: &Arc<Self>, subject: &str, limit: u32) -> Option<SubjectSlot> {
        let shard = self.shard(subject);
        let mut counts = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match counts.get_mut(subject) {
            Some(count) if *count >= limit => return None,
            Some(count) => *count += 1,
            // Limits are at least 1 (checked by the config).
            None => {
                counts.insert(subject.into(), 1);
            }
        }
        Some(SubjectSlot {
            connections: self.clone(),
            subject: subject.into(),
            shard,
        })
    }

    fn shard(&self, subject: &str) -> usize {
        (self.hasher.hash_one(subject) % SHARDS as u64) as usize
    }

    fn close(&self, subject: &str, shard: usize) {
        let mut counts = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(subject) {
            *count -= 1;
            if *count == 0 {
                counts.remove(subject);
            }
        }
    }
}

/// One counted connection of a subject; dropping it uncounts it.
#[derive(Debug)]
pub struct SubjectSlot {
    connections: Arc<SubjectConnections>,
    subject: Box<str>,
    shard: usize,
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        self.connections.close(&self.subject, self.shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(connections: &SubjectConnections, subject: &str) -> u32 {
        let counts = connections.shards[connections.shard(subject)]
            .lock()
            .unwrap();
        counts.get(subject).copied().unwrap_or(0)
    }

    fn subjects(connections: &SubjectConnections) -> usize {
        connections
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum()
    }

    #[test]
    fn each_subject_is_limited_on_its_own() {
        let connections = Arc::new(SubjectConnections::default());
        let mut alice: Vec<_> = (0..3)
            .map(|_| connections.try_open("alice", 3).unwrap())
            .collect();
        assert!(connections.try_open("alice", 3).is_none());
        let bob = connections.try_open("bob", 3).unwrap();
        assert_eq!(count(&connections, "alice"), 3);
        assert_eq!(count(&connections, "bob"), 1);
        alice.pop();
        assert_eq!(count(&connections, "alice"), 2);
        alice.push(connections.try_open("alice", 3).unwrap());
        assert!(connections.try_open("alice", 3).is_none());
        assert_eq!(count(&connections, "bob"), 1);
        drop(bob);
    }

    #[test]
    fn departed_subjects_leave_no_entry() {
        let connections = Arc::new(SubjectConnections::default());
        let slots: Vec<_> = (0..100)
            .map(|user| connections.try_open(&format!("user-{user}"), 1).unwrap())
            .collect();
        assert_eq!(subjects(&connections), 100);
        drop(slots);
        assert_eq!(subjects(&connections), 0);
        assert_eq!(count(&connections, "user-1"), 0);
    }

    /// A reload may lower the limit below what a subject holds: its connections stay, and
    /// new ones wait until it is under the new limit.
    #[test]
    fn a_lowered_limit_admits_again_once_under_it() {
        let connections = Arc::new(SubjectConnections::default());
        let mut held: Vec<_> = (0..3)
            .map(|_| connections.try_open("alice", 3).unwrap())
            .collect();
        assert!(connections.try_open("alice", 2).is_none());
        held.pop();
        assert!(connections.try_open("alice", 2).is_none());
        held.pop();
        assert!(connections.try_open("alice", 2).is_some());
    }
}
