//! The chat mode's single room. A broadcast never waits: each member has a bounded inbox, and
//! a member whose inbox is full is dropped from the room (its session then closes), so one slow
//! client cannot hold the others back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages a member may have waiting before the room gives up on it.
const INBOX_CAPACITY: usize = 256;

/// Every connected chat client's inbox.
#[derive(Default)]
pub struct Room {
    members: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    next_id: AtomicU64,
}

/// One client's place in the room; leaving is dropping it.
pub struct Membership {
    room: Arc<Room>,
    id: u64,
    inbox: mpsc::Receiver<Bytes>,
}

impl Room {
    /// Adds a member, which receives every broadcast from now on.
    pub fn join(self: &Arc<Self>) -> Membership {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, inbox) = mpsc::channel(INBOX_CAPACITY);
        self.lock().insert(id, sender);
        Membership {
            room: Arc::clone(self),
            id,
            inbox,
        }
    }

    /// Queues `message` for every member, dropping those whose inbox is full.
    fn broadcast(&self, message: &Bytes) {
        self.lock()
            .retain(|_, inbox| inbox.try_send(message.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        // The map stays consistent even if a holder panicked: every update is a single call.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Membership {
    /// Sends `message` to every member of the room, this one included.
    pub fn broadcast(&self, message: &Bytes) {
        self.room.broadcast(message);
    }

    /// The next broadcast, or None once the room has dropped this member.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.inbox.recv().await
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.room.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_inbox_drops_only_its_member() {
        let room = Arc::new(Room::default());
        let mut reader = room.join();
        let mut idle = room.join();
        for n in 0..=INBOX_CAPACITY {
            room.broadcast(&Bytes::from(n.to_string()));
            reader.next().await.expect("the reader keeps up");
        }
        for _ in 0..INBOX_CAPACITY {
            assert!(idle.next().await.is_some(), "what was queued is delivered");
        }
        assert_eq!(idle.next().await, None, "then the idle member is out");
        room.broadcast(&Bytes::from_static(b"after"));
        assert_eq!(reader.next().await.as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn leaving_removes_the_member() {
        let room = Arc::new(Room::default());
        drop(room.join());
        assert!(room.lock().is_empty());
    }
}
