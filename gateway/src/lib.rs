//! wsfleet-gateway: a WebSocket gateway with TLS, authentication, limits, heartbeats and draining.

pub mod config;
