//! End-to-end tests on a real node: the chart's operator and real gateway pods that serve
//! clients on the host through kube-proxy. One cluster for this test binary (started on first
//! use, host restored at exit), one namespace per test. Needs root, as kubelet does.

mod affinity;
mod autoscaling;
mod browser;
mod chart;
mod isolation;
mod load;
mod metrics;
mod reload;
mod rollout;
mod rotation;
mod serving;
mod setup;
