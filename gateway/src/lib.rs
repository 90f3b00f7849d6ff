//! wsfleet-gateway: a WebSocket gateway with TLS, authentication, limits, heartbeats and draining.
//!
//! [`connection`] reads top to bottom as the life of one client connection; the policy it
//! applies lives in small modules ([`proxy_protocol`], [`admission`], [`pending`],
//! [`jwt`] with [`jwks`], [`rate`], [`live_counts`], [`refusal`], [`socket_options`]), and
//! [`relay`] moves frames once the handshake is done, checked by [`tracker`] ([`deflate`]
//! measures compressed messages, [`utf8`] checks text). [`server`] accepts ([`accept_backoff`]
//! paces it when out of descriptors) and [`reload`] swaps in changes to the files [`watched`]
//! names ([`staged`] holds a policy back until its new JWKS source answers).
//! [`metrics`] holds every counter (its histograms are [`histogram`]s); [`admin`] serves them.
//! [`access_log`] writes a JSON line per connection and refusal. The config and the metric
//! names are the `wsfleet-config` crate's, shared with the operator.

pub mod accept_backoff;
pub mod access_log;
pub mod addresses;
pub mod admin;
pub mod admission;
pub mod connection;
pub mod deflate;
pub mod drain;
pub mod frame;
pub mod handshake;
pub mod histogram;
pub mod jwks;
pub mod jwt;
pub mod live_counts;
pub mod metrics;
pub mod pending;
pub mod policy;
pub mod proxy_protocol;
pub mod rate;
pub mod refusal;
pub mod relay;
pub mod reload;
pub mod server;
pub mod socket_options;
pub mod staged;
pub mod tls;
pub mod tracker;
pub mod transport;
pub mod upstream;
pub mod utf8;
pub mod wakes;
pub mod watched;
