//! Live things counted per key under a cap, each held by a guard: handshakes in progress per
//! client address ([`crate::policy::pending`]) and connections per token subject
//! (`limits.connectionsPerSubject`).
//!
//! A key holds an entry only while something of it is live: the last guard to drop removes
//! it, so the table stays as large as the set of keys active now, not every key ever seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Independent locks, so that handshakes of different keys rarely wait on each other.
const SHARDS: usize = 16;

/// Live counts by key.
#[derive(Debug)]
pub(crate) struct LiveCounts<K> {
    shards: Arc<Shards<K>>,
}

#[derive(Debug)]
struct Shards<K> {
    counts: [Mutex<HashMap<K, u32>>; SHARDS],
    hasher: RandomState,
}

impl<K> Default for LiveCounts<K> {
    fn default() -> Self {
        Self {
            shards: Arc::new(Shards {
                counts: std::array::from_fn(|_| Mutex::new(HashMap::new())),
                hasher: RandomState::new(),
            }),
        }
    }
}

impl<K: Hash + Eq + Clone> LiveCounts<K> {
    /// Counts one more of `key` until the returned guard drops, or `None` when `key` already
    /// has `limit` live. A limit lowered below a key's count admits again once under it.
    pub fn try_open(&self, key: K, limit: u32) -> Option<LiveCount<K>> {
        let shard = self.shards.index(&key);
        let mut counts = self.shards.lock(shard);
        match counts.get_mut(&key) {
            Some(count) if *count >= limit => return None,
            Some(count) => *count += 1,
            None if limit == 0 => return None,
            None => {
                counts.insert(key.clone(), 1);
            }
        }
        Some(LiveCount {
            shards: self.shards.clone(),
            key,
            shard,
        })
    }
}

impl<K: Hash + Eq> Shards<K> {
    fn index(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, HashMap<K, u32>> {
        self.counts[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One live thing of a key; dropping it uncounts it.
#[derive(Debug)]
pub(crate) struct LiveCount<K: Hash + Eq> {
    shards: Arc<Shards<K>>,
    key: K,
    shard: usize,
}

impl<K: Hash + Eq> Drop for LiveCount<K> {
    fn drop(&mut self) {
        let mut counts = self.shards.lock(self.shard);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Subjects = LiveCounts<Box<str>>;

    fn open(counts: &Subjects, subject: &str, limit: u32) -> Option<LiveCount<Box<str>>> {
        counts.try_open(subject.into(), limit)
    }

    fn count(counts: &Subjects, subject: &str) -> u32 {
        let key: Box<str> = subject.into();
        let shard = counts.shards.index(&key);
        counts.shards.lock(shard).get(&key).copied().unwrap_or(0)
    }

    fn keys(counts: &Subjects) -> usize {
        (0..SHARDS)
            .map(|shard| counts.shards.lock(shard).len())
            .sum()
    }

    #[test]
    fn each_key_is_limited_on_its_own() {
        let counts = Subjects::default();
        let mut alice: Vec<_> = (0..3).map(|_| open(&counts, "alice", 3).unwrap()).collect();
        assert!(open(&counts, "alice", 3).is_none());
        let bob = open(&counts, "bob", 3).unwrap();
        assert_eq!(count(&counts, "alice"), 3);
        assert_eq!(count(&counts, "bob"), 1);
        alice.pop();
        assert_eq!(count(&counts, "alice"), 2);
        alice.push(open(&counts, "alice", 3).unwrap());
        assert!(open(&counts, "alice", 3).is_none());
        assert_eq!(count(&counts, "bob"), 1);
        drop(bob);
    }

    #[test]
    fn departed_keys_leave_no_entry() {
        let counts = Subjects::default();
        let slots: Vec<_> = (0..100)
            .map(|user| open(&counts, &format!("user-{user}"), 1).unwrap())
            .collect();
        assert_eq!(keys(&counts), 100);
        drop(slots);
        assert_eq!(keys(&counts), 0);
        assert_eq!(count(&counts, "user-1"), 0);
    }

    /// A reload may lower the limit below what a key holds: its live ones stay, and new ones
    /// wait until it is under the new limit.
    #[test]
    fn a_lowered_limit_admits_again_once_under_it() {
        let counts = Subjects::default();
        let mut held: Vec<_> = (0..3).map(|_| open(&counts, "alice", 3).unwrap()).collect();
        assert!(open(&counts, "alice", 2).is_none());
        held.pop();
        assert!(open(&counts, "alice", 2).is_none());
        held.pop();
        assert!(open(&counts, "alice", 2).is_some());
    }
}
