//! Policy: who may connect and at what pace. The running [`Policy`](running::Policy) swapped in
//! on reload, admission checks, JWTs and their keys, rate limits, and live counts per address
//! and per subject.

pub(crate) mod admission;
pub(crate) mod jwks;
pub mod jwt;
pub(crate) mod live_counts;
pub(crate) mod pending;
pub(crate) mod rate;
pub(crate) mod running;
pub(crate) mod staged;
