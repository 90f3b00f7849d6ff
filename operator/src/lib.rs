//! wsfleet-operator: reconciles `WebSocketService` resources into fleets of wsfleet gateways.

pub mod build;
pub mod certs;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod names;
pub mod plan;
