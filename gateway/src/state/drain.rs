//! Admitted-connection accounting and the drain on shutdown: readiness fails at once, and live
//! clients are closed one after another across the grace period, so they do not all
//! reconnect to the remaining pods at the same moment.
//!
//! The count of admitted connections here is what `limits.maxConnections` and the drain go by;
//! the `active_connections` gauge in the metrics follows it, but only reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::telemetry::metrics::Metrics;

/// Share of the grace period used to spread closes; the rest leaves time for close handshakes.
const SPREAD_SHARE: f64 = 0.8;

#[derive(Debug, Clone, Copy)]
struct DrainPlan {
    started: Instant,
    spread: Duration,
    live: u64,
}

impl DrainPlan {
    /// When, after the drain started, the connection dealt `turn` is closed.
    fn turn_delay(&self, turn: u64) -> Duration {
        // A connection admitted just as the drain started was not counted live: it goes last.
        let position = turn.min(self.live - 1) as f64 / self.live as f64;
        self.spread.mul_f64(position)
    }
}

/// Shutdown state shared by the accept loop, the connections and the health endpoint.
#[derive(Debug)]
pub(crate) struct Drain {
    draining: AtomicBool,
    plan: watch::Sender<Option<DrainPlan>>,
    all_closed: Notify,
    /// Turns dealt so far: each connection takes the next as it sees the drain start, so the
    /// live connections hold distinct turns however many opened and closed before.
    turns_dealt: AtomicU64,
    /// Connections holding a [`ConnectionSlot`].
    admitted: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A counted live connection; dropping it releases its place.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    drain: Arc<Drain>,
}

impl Drain {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            plan: watch::Sender::new(None),
            all_closed: Notify::new(),
            turns_dealt: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Connections admitted and not yet closed.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Acquire)
    }

    /// Takes a place among at most `max` live connections.
    pub fn try_open(self: &Arc<Self>, max: u32) -> Option<ConnectionSlot> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |admitted| {
                (admitted < u64::from(max)).then_some(admitted + 1)
            })
            .ok()?;
        self.metrics.connection_opened();
        Some(ConnectionSlot {
            drain: self.clone(),
        })
    }

    /// Starts draining: live connections are told when to close, spread over `grace`.
    pub fn start(&self, grace: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let live = self.admitted().max(1);
        self.plan.send_replace(Some(DrainPlan {
            started: Instant::now(),
            spread: grace.mul_f64(SPREAD_SHARE),
            live,
        }));
    }

    /// Waits until no connection is live or `deadline` passes; true if all closed.
    pub async fn wait_all_closed(&self, deadline: Instant) -> bool {
        loop {
            let closed = self.all_closed.notified();
            if self.admitted() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.admitted() == 0;
            }
        }
    }
}

impl ConnectionSlot {
    /// Resolves when draining has started and this connection's turn to close has come.
    pub fn drain_turn(&self) -> impl Future<Output = ()> + Send + 'static {
        let drain = self.drain.clone();
        let mut plans = drain.plan.subscribe();
        async move {
            let plan = match plans.wait_for(Option::is_some).await {
                Ok(plan) => *plan,
                Err(_) => None,
            };
            let Some(plan) = plan else {
                // The gateway is going away without a drain; nothing to wait for.
                return std::future::pending().await;
            };
            let turn = drain.turns_dealt.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(plan.started + plan.turn_delay(turn)).await;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.drain.metrics.connection_closed();
        if self.drain.admitted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drain.all_closed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_maximum_and_come_back() {
        let drain = Arc::new(Drain::new(Arc::new(Metrics::default())));
        let first = drain.try_open(2).unwrap();
        let _second = drain.try_open(2).unwrap();
        assert!(drain.try_open(2).is_none());
        assert_eq!(drain.admitted(), 2);
        drop(first);
        assert_eq!(drain.admitted(), 1);
        assert!(drain.try_open(2).is_some());
    }

    #[test]
    fn the_gauge_reports_admitted_connections_but_does_not_admit() {
        let metrics = Arc::new(Metrics::default());
        let gauge = |value| format!("wsfleet_gateway_active_connections {value}\n");
        let drain = Arc::new(Drain::new(metrics.clone()));
        let slot = drain.try_open(1).unwrap();
        assert!(metrics.render().contains(&gauge(1)));
        assert!(drain.try_open(1).is_none());
        assert!(
            metrics.render().contains(&gauge(1)),
            "a refused open leaves the gauge alone"
        );
        drop(slot);
        assert_eq!(drain.admitted(), 0);
        assert!(metrics.render().contains(&gauge(0)));
    }

    #[test]
    fn turns_spread_over_most_of_the_grace_period() {
        let plan = DrainPlan {
            started: Instant::now(),
            spread: Duration::from_secs(10).mul_f64(SPREAD_SHARE),
            live: 4,
        };
        let delays: Vec<_> = (0..5).map(|turn| plan.turn_delay(turn)).collect();
        assert_eq!(delays[..4], [0, 2, 4, 6].map(Duration::from_secs));
        assert_eq!(delays[4], Duration::from_secs(6), "a late turn goes last");
    }

    /// Connections that opened and closed before the drain leave gaps among those still
    /// live; the live ones still close one after another.
    #[tokio::test(start_paused = true)]
    async fn live_connections_among_closed_ones_close_at_distinct_times() {
        let drain = Arc::new(Drain::new(Arc::new(Metrics::default())));
        let opened: Vec<_> = (0..16).map(|_| drain.try_open(16).unwrap()).collect();
        // The 4th, 8th, 12th and 16th to open stay live; the others close.
        let live: Vec<_> = opened.into_iter().skip(3).step_by(4).collect();
        assert_eq!(live.len(), 4);
        let grace = Duration::from_secs(4);
        let turns: Vec<_> = live.iter().map(|slot| slot.drain_turn()).collect();
        let started = Instant::now();
        drain.start(grace);
        let mut closed_after: Vec<Duration> =
            futures::future::join_all(turns.into_iter().map(|turn| async move {
                turn.await;
                started.elapsed()
            }))
            .await;
        closed_after.sort();
        // On the paused clock each turn fires exactly: 80 % of 4 s over 4 connections.
        assert_eq!(
            closed_after,
            [0, 800, 1600, 2400].map(Duration::from_millis)
        );
    }

    #[tokio::test]
    async fn draining_waits_for_the_last_connection() {
        let drain = Arc::new(Drain::new(Arc::new(Metrics::default())));
        let slot = drain.try_open(10).unwrap();
        drain.start(Duration::from_secs(10));
        assert!(drain.is_draining());
        slot.drain_turn().await;
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move {
                drain
                    .wait_all_closed(Instant::now() + Duration::from_secs(60))
                    .await
            }
        });
        drop(slot);
        assert!(waiter.await.unwrap());
    }
}
