//! End-to-end harness for wsfleet: a local Kubernetes control plane built from Go modules,
//! the real operator binary, and kubectl, used exactly as a platform engineer would.

// A child's parent-death signal is set in a pre-exec hook and shared processes are stopped from
// an atexit callback, both unsafe to the compiler; those two blocks (src/process.rs) allow it
// and say why they are sound, and nothing else may be unsafe.
#![deny(unsafe_code)]

pub mod aggregation;
pub mod apiserver_metrics;
pub mod binaries;
pub mod blackhole;
pub mod browser;
pub mod cert_checks;
pub mod cert_manager;
pub mod children;
pub mod command;
pub mod conditions;
pub mod controlplane;
pub mod convergence;
pub mod custom_metrics;
pub mod discovery;
pub mod fixtures;
pub mod fleet;
pub mod helm;
pub mod inspect;
pub mod keda;
pub mod kubectl;
pub mod metrics_server;
pub mod monitoring;
pub mod namespace;
pub mod net;
pub mod node;
pub mod operator;
pub mod panels;
pub mod poll;
pub mod process;
pub mod prometheus;
pub mod test_ca;
pub mod wire;

pub use conditions::{Expected, await_conditions, condition};
pub use controlplane::{ControlPlane, Nodes};
pub use kubectl::{Kubectl, Outcome};
pub use namespace::TestNamespace;
pub use operator::Operator;
pub use poll::{DEADLINE, eventually};
