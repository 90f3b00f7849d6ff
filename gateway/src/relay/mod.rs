//! The relay: frames between a client and its upstream once both handshakes are done, checked
//! by the frame tracker, with a waker per part so that a wake-up polls only what woke it, and
//! heartbeats on a coarse process-wide clock.

pub(crate) mod heartbeat_clock;
mod lane;
pub(crate) mod outcome;
pub(crate) mod session;
pub mod tracker;
pub(crate) mod wakes;
