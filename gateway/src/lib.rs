//! wsfleet-gateway: a WebSocket gateway with TLS, authentication, limits, heartbeats and draining.
//!
//! A tour, from the outside in:
//!
//! - [`process`] is the running process: [`process::server`] accepts,
//!   [`process::connection`] reads top to bottom as the life of one client connection
//!   (accept, admit, upgrade, relay, close), [`process::reload`] swaps in changed files, and
//!   [`process::admin`] serves metrics and health.
//! - [`state`] is what all of those share: the policy handle, metrics, counters, readiness,
//!   the count of admitted connections with the drain on SIGTERM ([`state::drain`]), and the
//!   access log's writer.
//! - [`policy`] decides who may connect and at what pace (admission, JWT and JWKS, rates,
//!   live counts); the policy in force is one [`policy::running::Policy`], swapped whole.
//! - [`upstream`] opens the upstream connection for a client.
//! - [`relay`] moves frames once both handshakes are done, checked by its frame tracker.
//! - [`wire`] parses and encodes what travels: frames, handshakes, deflate, UTF-8, the PROXY
//!   header, TLS and TCP options. It depends on nothing else in the crate.
//! - [`telemetry`] holds every counter and renders them for Prometheus.
//!
//! Rooms depend downwards: `process` on everything; `state` on `relay`, `policy`,
//! `telemetry` and `wire`; `relay` on `policy`, `telemetry` and `wire`; `policy` on
//! `upstream`, `telemetry` and `wire`; `upstream` and `telemetry` on `wire`. No room depends
//! on `process`, and none below `state` on `state`. The config and the metric names are the
//! `wsfleet-config` crate's, shared with the operator.

#![forbid(unsafe_code)]

pub mod policy;
pub mod process;
pub mod relay;
pub(crate) mod state;
pub mod telemetry;
pub(crate) mod upstream;
pub mod wire;
