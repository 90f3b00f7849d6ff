//! End-to-end tests: one control plane for this test binary, one namespace per test, and
//! the real operator binary started by each test that needs it.

mod autoscaler_switch;
mod cert_manager;
mod crash_recovery;
mod examples;
mod leader;
mod lifecycle;
mod setup;
mod smoke;
mod steady_state;
mod tampering;
mod validation;
