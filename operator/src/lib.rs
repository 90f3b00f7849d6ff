//! wsfleet-operator: reconciles `WebSocketService` resources into fleets of wsfleet gateways.

#![forbid(unsafe_code)]

pub mod apply;
pub mod build;
pub mod child_triggers;
pub mod conditions;
pub mod content_version;
pub mod context;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod event_recorders;
pub mod fence;
pub mod http;
pub mod idle_timeout;
pub mod lean;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod observation_hold;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod references;
pub mod status;
pub mod stores;
pub mod triggers;
pub mod unseen_writes;
pub mod verified;
pub mod x509;
