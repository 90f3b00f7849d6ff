//! Faults that disrupt a whole control plane: the apiserver killed, etcd or the controller
//! manager stalled. Each test runs its own control plane (the shared one of the `e2e` binary
//! would stall every other test), so at most two run at once on a small machine.

mod apiserver_outage;
mod controller_manager_stall;
mod etcd_stall;
mod plane;
mod scenario;
mod writer;
