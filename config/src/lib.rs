//! wsfleet-config: the contract between the operator and the gateway, with no Kubernetes and
//! no networking in it.
//!
//! - [`GatewayConfig`] (in `gateway`) is the gateway's whole configuration: the operator renders
//!   it from a `WebSocketService` into the `<name>-gateway` ConfigMap, a standalone gateway reads
//!   it from `--config`. [`GatewayConfig::validate`] is the one place its rules live, so the
//!   operator refuses what a gateway would refuse at start.
//! - [`metric_names`] names the metric families the operator's autoscalers and the chart's
//!   dashboards read.
//! - [`path`] is the rule for request paths that both the config (`listen.path`) and the
//!   gateway's handshake apply.

#![forbid(unsafe_code)]

mod gateway;
pub mod metric_names;
pub mod path;

pub use gateway::*;

/// How late a heartbeat may come: the gateway keeps heartbeats on a clock of whole ticks of this
/// length, so a ping goes out up to one tick after `heartbeat.interval`, never before. The
/// operator counts it when it checks the interval against a load balancer's idle timeout.
pub const HEARTBEAT_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The prefix of a `Sec-WebSocket-Protocol` entry that carries a token (`bearer.<token>`); such
/// an entry is never a subprotocol, so no allowlist may name one.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";
