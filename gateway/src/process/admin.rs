//! The metrics port: `/metrics` (OpenMetrics text), `/healthz` (the process runs) and
//! `/readyz` (accepting connections and able to check tokens; fails as soon as draining
//! starts), served by the same small server as the operator's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use wsfleet_probes::{Reply, StatusCode};

use crate::state::Shared;

/// Serves the endpoints until the process exits.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    wsfleet_probes::serve(listener, "metrics", move |path| respond(path, &shared)).await;
}

fn respond(path: &str, shared: &Shared) -> Reply {
    match path {
        "/metrics" => Reply::openmetrics(shared.metrics.render()),
        "/healthz" => Reply::text("ok\n"),
        "/readyz" if is_ready(shared) => Reply::text("ready\n"),
        "/readyz" => Reply::new(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
        _ => Reply::not_found(),
    }
}

/// Listening and not draining; with keys from an identity provider, once they were fetched:
/// until then every token would be refused.
fn is_ready(shared: &Shared) -> bool {
    shared.ready.load(Ordering::Relaxed)
        && shared
            .policy
            .load()
            .jwt
            .as_ref()
            .is_none_or(|verifier| verifier.has_keys())
}
