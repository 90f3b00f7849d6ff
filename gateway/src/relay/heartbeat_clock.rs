//! A coarse clock for heartbeats, so that no connection holds a tokio timer.
//!
//! With a timer per connection, tokio's driver reads the clock and walks its timer wheel on
//! every park, and the relay re-registered its heartbeat `Sleep` after each message. Here one
//! thread ticks once a second and wakes only the connections whose heartbeat deadline has come:
//! a connection asks once per heartbeat period, by the tick it wants, and between those the
//! relay reads one atomic. Deadlines fall on whole ticks, so a heartbeat fires up to one
//! [`TICK`] late, never early.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

/// The clock's resolution, which the operator counts on (see `wsfleet_config::HEARTBEAT_TICK`).
pub(crate) const TICK: Duration = wsfleet_config::HEARTBEAT_TICK;
/// Slots of the wheel, one per tick; a deadline further ahead waits in its slot for later
/// turns of the wheel.
const SLOTS: usize = 64;

/// Ticks since the clock started, and the wakers waiting for a tick to come.
#[derive(Debug)]
pub(crate) struct HeartbeatClock {
    started: Instant,
    /// The last tick reached: every waker due at it or before has been woken.
    now: AtomicU64,
    wheel: Mutex<[Vec<Due>; SLOTS]>,
}

#[derive(Debug)]
struct Due {
    tick: u64,
    waker: Waker,
}

impl HeartbeatClock {
    /// The process's clock; its ticking thread starts on first use.
    pub(crate) fn global() -> &'static Self {
        static CLOCK: LazyLock<&'static HeartbeatClock> = LazyLock::new(|| {
            let clock: &'static HeartbeatClock =
                Box::leak(Box::new(HeartbeatClock::new(Instant::now())));
            std::thread::Builder::new()
                .name("heartbeat-clock".into())
                .spawn(move || clock.run())
                .expect("starting the heartbeat clock's thread");
            clock
        });
        &CLOCK
    }

    fn new(started: Instant) -> Self {
        Self {
            started,
            now: AtomicU64::new(0),
            wheel: Mutex::new(std::array::from_fn(|_| Vec::new())),
        }
    }

    /// The last tick reached.
    pub(crate) fn now(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }

    /// The first tick at or after `delay` from now.
    pub(crate) fn tick_after(&self, delay: Duration) -> u64 {
        self.tick_at_or_after(Instant::now() + delay)
    }

    fn tick_at_or_after(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.started);
        let tick_nanos = TICK.as_nanos();
        let ticks = since.as_nanos().div_ceil(tick_nanos);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(self.now() + 1)
    }

    /// Wakes `waker` once tick `due` has come (at once if it has).
    pub(crate) fn wake_at(&self, due: u64, waker: &Waker) {
        let mut wheel = self.wheel.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock that `advance_to` holds while it moves the clock on, so that a
        // deadline is either already past here or still in the wheel when its tick comes.
        if due <= self.now() {
            drop(wheel);
            waker.wake_by_ref();
            return;
        }
        wheel[slot(due)].push(Due {
            tick: due,
            waker: waker.clone(),
        });
    }

    /// Moves the clock on to `tick` and returns the wakers now due, to be woken outside the
    /// lock.
    fn advance_to(&self, tick: u64) -> Vec<Waker> {
        let mut wheel = self.wheel.lock().unwrap_or_else(PoisonError::into_inner);
        let from = self.now() + 1;
        if tick < from {
            return Vec::new();
        }
        self.now.store(tick, Ordering::Release);
        let mut woken = Vec::new();
        // A clock that fell a whole turn behind looks at every slot once.
        let passed = (tick - from + 1).min(SLOTS as u64);
        for offset in 0..passed {
            let waiting = &mut wheel[slot(from + offset)];
            let mut index = 0;
            while index < waiting.len() {
                if waiting[index].tick <= tick {
                    woken.push(waiting.swap_remove(index).waker);
                } else {
                    index += 1;
                }
            }
        }
        woken
    }

    /// Ticks for the life of the process.
    fn run(&self) {
        loop {
            let next = self.now() + 1;
            let at = self.started + TICK * u32::try_from(next).unwrap_or(u32::MAX);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let reached = self.tick_reached(Instant::now());
            for waker in self.advance_to(reached) {
                waker.wake();
            }
        }
    }

    /// The last whole tick at `at`.
    fn tick_reached(&self, at: Instant) -> u64 {
        let ticks = at.saturating_duration_since(self.started).as_nanos() / TICK.as_nanos();
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

fn slot(tick: u64) -> usize {
    (tick % SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    fn wake_all(wakers: Vec<Waker>) -> usize {
        let count = wakers.len();
        wakers.into_iter().for_each(Waker::wake);
        count
    }

    #[test]
    fn deadlines_round_up_to_the_next_whole_tick() {
        let started = Instant::now();
        let clock = HeartbeatClock::new(started);
        let ms = Duration::from_millis;
        assert_eq!(clock.tick_at_or_after(started + ms(300)), 1);
        assert_eq!(clock.tick_at_or_after(started + ms(1000)), 1);
        assert_eq!(clock.tick_at_or_after(started + ms(1001)), 2);
        assert_eq!(clock.tick_at_or_after(started + ms(2500)), 3);
        clock.advance_to(5);
        assert_eq!(
            clock.tick_at_or_after(started + ms(2500)),
            6,
            "never a tick already passed"
        );
        assert_eq!(clock.tick_reached(started + ms(2999)), 2);
        assert_eq!(clock.tick_reached(started + ms(3000)), 3);
    }

    #[test]
    fn a_waker_is_woken_once_when_its_tick_comes() {
        let clock = HeartbeatClock::new(Instant::now());
        let (early, early_waker) = counter();
        let (late, late_waker) = counter();
        clock.wake_at(2, &early_waker);
        clock.wake_at(3, &late_waker);

        assert_eq!(wake_all(clock.advance_to(1)), 0);
        assert_eq!(wake_all(clock.advance_to(2)), 1);
        assert_eq!(early.0.load(Ordering::Relaxed), 1);
        assert_eq!(late.0.load(Ordering::Relaxed), 0);
        assert_eq!(wake_all(clock.advance_to(3)), 1);
        assert_eq!(wake_all(clock.advance_to(4)), 0, "each waker once");
        assert_eq!(late.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_tick_already_reached_wakes_at_once() {
        let clock = HeartbeatClock::new(Instant::now());
        clock.advance_to(7);
        let (woken, waker) = counter();
        clock.wake_at(7, &waker);
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        assert_eq!(wake_all(clock.advance_to(8)), 0);
    }

    #[test]
    fn deadlines_beyond_a_turn_of_the_wheel_wait_for_their_own_turn() {
        let clock = HeartbeatClock::new(Instant::now());
        let far = SLOTS as u64 + 5;
        let (woken, waker) = counter();
        clock.wake_at(far, &waker);
        assert_eq!(wake_all(clock.advance_to(5)), 0, "same slot, earlier turn");
        assert_eq!(wake_all(clock.advance_to(far - 1)), 0);
        assert_eq!(wake_all(clock.advance_to(far)), 1);
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_clock_that_fell_behind_wakes_everything_it_passed() {
        let clock = HeartbeatClock::new(Instant::now());
        let wakers: Vec<_> = (1..=3 * SLOTS as u64)
            .map(|tick| {
                let (_, waker) = counter();
                clock.wake_at(tick, &waker);
                waker
            })
            .collect();
        assert_eq!(wakers.len(), 3 * SLOTS);
        assert_eq!(wake_all(clock.advance_to(2 * SLOTS as u64)), 2 * SLOTS);
        assert_eq!(wake_all(clock.advance_to(3 * SLOTS as u64)), SLOTS);
    }

    #[test]
    fn the_global_clock_ticks() {
        let clock = HeartbeatClock::global();
        let start = clock.now();
        let deadline = Instant::now() + 3 * TICK;
        while clock.now() == start {
            assert!(Instant::now() < deadline, "no tick within three");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
