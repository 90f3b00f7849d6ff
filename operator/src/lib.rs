//! wsfleet-operator: reconciles `WebSocketService` resources into fleets of wsfleet gateways.

#![forbid(unsafe_code)]

pub mod apply;
pub mod build;
pub mod cert_manager;
pub mod certificate;
pub mod certs;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod fence;
pub mod http;
pub mod idle_timeout;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod status;
