//! Policy: who may connect and at what pace. The running [`Policy`](running::Policy) swapped in
//! on reload, admission checks, JWTs and their keys, rate limits, and live counts per address
//! and per subject.

pub mod admission;
pub mod jwks;
pub mod jwt;
pub mod live_counts;
pub mod pending;
pub mod rate;
pub mod running;
pub mod staged;
