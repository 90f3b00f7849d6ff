//! Telemetry: every counter, gauge and histogram the gateway exports, and their Prometheus
//! text.

pub(crate) mod histogram;
pub mod metrics;
