//! Paces an accept loop while accepting fails. That mostly means the process (EMFILE) or the
//! system (ENFILE) is out of file descriptors: the connection stays queued, so retrying at
//! once fails again and again. Retries wait a growing interval instead, and the failure is
//! logged once per [`LOG_EVERY`] with a count, not once per attempt.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// The first wait after a failure; it doubles with each failure in a row.
const FIRST_DELAY: Duration = Duration::from_millis(5);
/// The longest wait, and so the longest a client waits once descriptors are free again.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one log line per listener this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The back-off state of one listener.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// The wait after the next failure; zero while accepting works.
    delay: Duration,
    /// Failures since the last log line.
    unlogged: u64,
    /// Kept across successes, so that a listener flapping between failure and success logs
    /// no more often.
    logged_at: Option<Instant>,
}

impl AcceptBackoff {
    /// Accepts the next connection, waiting out failures; `listener` names it in the log.
    pub async fn accept(
        &mut self,
        socket: &TcpListener,
        listener: &'static str,
    ) -> (TcpStream, SocketAddr) {
        loop {
            match socket.accept().await {
                Ok(accepted) => {
                    self.delay = Duration::ZERO;
                    return accepted;
                }
                Err(err) => {
                    let (delay, log) = self.failed(Instant::now());
                    if let Some(failures) = log {
                        tracing::warn!(listener, failures, retry_in = ?delay, error = %err, "accept failed");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Notes a failure at `now`: how long to wait, and the failures to log now, if any.
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.delay = (self.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if !due {
            return (self.delay, None);
        }
        self.logged_at = Some(now);
        (self.delay, Some(std::mem::take(&mut self.unlogged)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_a_second_and_start_over_after_a_success() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let waits: Vec<_> = (0..10).map(|_| backoff.failed(now).0).collect();
        assert_eq!(waits[..3], [FIRST_DELAY, FIRST_DELAY * 2, FIRST_DELAY * 4]);
        assert_eq!(waits[9], MAX_DELAY);
        backoff.delay = Duration::ZERO; // as after an accept
        assert_eq!(backoff.failed(now).0, FIRST_DELAY);
    }

    #[test]
    fn failures_are_logged_once_per_interval_with_a_count() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        assert_eq!(backoff.failed(start).1, Some(1));
        for n in 1..100 {
            let at = start + LOG_EVERY * n / 100;
            assert_eq!(backoff.failed(at).1, None);
        }
        assert_eq!(backoff.failed(start + LOG_EVERY).1, Some(100));
        backoff.delay = Duration::ZERO; // a success in between changes nothing
        assert_eq!(backoff.failed(start + LOG_EVERY * 3 / 2).1, None);
    }
}
