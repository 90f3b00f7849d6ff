//! End-to-end tests: one control plane for this test binary, one namespace per test, and
//! the real operator binary started by each test that needs it.

mod examples;
mod smoke;
mod validation;
