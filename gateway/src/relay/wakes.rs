//! A waker per part of a future, so that a wake-up polls only the part it was meant for.
//!
//! A task has one waker, so a future made of parts (a relay: two lanes, a timer, a drain turn)
//! cannot tell which of them is ready and must poll them all on every wake-up. Here each part
//! is polled with a waker of its own, which records the part before waking the task; the
//! future then asks which parts were woken and polls only those.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;

/// A set of parts, at most eight, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts(u8);

impl Parts {
    pub const ALL: Parts = Parts(u8::MAX);

    /// The part with this index (0 to 7).
    pub const fn one(index: usize) -> Self {
        assert!(index < 8, "at most eight parts");
        Self(1 << index)
    }

    pub const fn with(self, other: Parts) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn contains(self, index: usize) -> bool {
        self.0 & Self::one(index).0 != 0
    }
}

/// The wakers of `N` parts of one future.
#[derive(Debug)]
pub(crate) struct PartWakers<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
}

#[derive(Debug)]
struct Shared {
    /// Parts woken since the future last asked.
    woken: AtomicU8,
    /// The waker of the task that polls the future. A wake takes it out: the task registers
    /// it again on its next poll, and a part woken before then finds the task already due.
    task: AtomicWaker,
}

struct PartWaker {
    shared: Arc<Shared>,
    marks: Parts,
}

impl Wake for PartWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.marks.0, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

impl<const N: usize> PartWakers<N> {
    /// Part `i`'s waker marks `marks[i]` as woken. Parts that may wait on the same thing (the
    /// same socket in the same direction, where a second waker would replace the first) must
    /// mark each other, so that they are always polled together.
    pub fn new(marks: [Parts; N]) -> Self {
        let shared = Arc::new(Shared {
            // Every part is polled the first time.
            woken: AtomicU8::new(u8::MAX),
            task: AtomicWaker::new(),
        });
        let wakers = marks.map(|marks| {
            Waker::from(Arc::new(PartWaker {
                shared: shared.clone(),
                marks,
            }))
        });
        Self { shared, wakers }
    }

    /// Remembers `task` as the waker to wake, and returns the parts woken since the last call.
    pub fn take_woken(&self, task: &Waker) -> Parts {
        self.shared.task.register(task);
        // After the task is stored: a part woken from here on wakes it again.
        Parts(self.shared.woken.swap(0, Ordering::AcqRel))
    }

    /// The waker part `index` is polled with.
    pub fn waker(&self, index: usize) -> &Waker {
        &self.wakers[index]
    }
}

impl<const N: usize> Drop for PartWakers<N> {
    /// Part wakers may outlive the future (the heartbeat clock holds one until its tick): they
    /// must not keep the finished task, and with it the memory of its future, alive.
    fn drop(&mut self) {
        drop(self.shared.task.take());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts how often the task was woken.
    struct CountingTask(AtomicUsize);

    impl Wake for CountingTask {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_part_waker_wakes_the_task_and_records_its_marks() {
        let counter = Arc::new(CountingTask(AtomicUsize::new(0)));
        let task = Waker::from(counter.clone());
        let shared_lanes = Parts::one(1).with(Parts::one(2));
        let wakers = PartWakers::new([Parts::one(0), shared_lanes, shared_lanes]);

        assert_eq!(
            wakers.take_woken(&task),
            Parts::ALL,
            "all parts start woken"
        );
        assert_eq!(wakers.take_woken(&task), Parts(0));

        wakers.waker(0).wake_by_ref();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        let woken = wakers.take_woken(&task);
        assert!(woken.contains(0) && !woken.contains(1) && !woken.contains(2));

        // Wakers are also woken by value, as when an I/O driver hands back the one it kept.
        let kept = wakers.waker(2).clone();
        kept.wake();
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
        let woken = wakers.take_woken(&task);
        assert!(!woken.contains(0) && woken.contains(1) && woken.contains(2));
    }

    #[test]
    fn a_part_waker_kept_after_the_future_does_not_hold_the_task() {
        let task = Arc::new(CountingTask(AtomicUsize::new(0)));
        let wakers = PartWakers::new([Parts::one(0)]);
        wakers.take_woken(&Waker::from(task.clone()));
        assert_eq!(Arc::strong_count(&task), 2);
        let kept = wakers.waker(0).clone();
        drop(wakers);
        assert_eq!(Arc::strong_count(&task), 1);
        kept.wake();
        assert_eq!(task.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_task_last_given_is_the_one_woken() {
        let wakers = PartWakers::new([Parts::one(0), Parts::one(1)]);
        let task = Waker::from(Arc::new(CountingTask(AtomicUsize::new(0))));
        wakers.take_woken(&task);
        let other_task = Arc::new(CountingTask(AtomicUsize::new(0)));
        wakers.waker(1).wake_by_ref();
        // The future moved to another task: the new one is woken from now on.
        let woken = wakers.take_woken(&Waker::from(other_task.clone()));
        assert!(woken.contains(1) && !woken.contains(0));
        wakers.waker(0).wake_by_ref();
        assert_eq!(other_task.0.load(Ordering::Relaxed), 1);
    }
}
