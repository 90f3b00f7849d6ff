//! Waiting for a condition by polling it, with a deadline instead of a guessed sleep.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// Deadline for anything the control plane or the operator should do on its own. Generous
/// on purpose: a loaded 2-core machine can be slow, and a poll returns as soon as it holds.
pub const DEADLINE: Duration = Duration::from_secs(180);

const INTERVAL: Duration = Duration::from_millis(300);

/// Marks a probe error as final: [`eventually`] stops polling and returns it at once
/// (for example when the process that should bring the condition about has died).
#[derive(Debug)]
pub struct GiveUp(pub String);

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GiveUp {}

/// Wraps `err` so that [`eventually`] stops at once.
pub fn give_up(err: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(GiveUp(format!("{err:#}")))
}

/// Calls `probe` until it returns `Ok`, or fails after `deadline` naming `what` and the
/// last thing `probe` reported (its `Err` means "not yet, and here is what I saw", unless
/// it is a [`GiveUp`]).
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<T>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(err) if err.is::<GiveUp>() => {
                return Err(err.context(format!("gave up waiting for {what}")));
            }
            Err(not_yet) if started.elapsed() >= deadline => {
                return Err(anyhow!(
                    "timed out after {}s waiting for {what}; last seen: {not_yet:#}",
                    deadline.as_secs()
                ));
            }
            Err(_) => std::thread::sleep(INTERVAL),
        }
    }
}
