//! The operator's HTTP endpoint: `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use wsfleet_probes::Reply;

use crate::metrics::Metrics;

/// Binds `address`; the returned future serves until dropped.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<impl Future<Output = ()>> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics address {address}"))?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    Ok(wsfleet_probes::serve(listener, "metrics", move |path| {
        respond(path, &metrics)
    }))
}

fn respond(path: &str, metrics: &Metrics) -> Reply {
    match path {
        "/metrics" => Reply::openmetrics(metrics.encode()),
        // Serving at all is the health signal; a standby replica is healthy and ready too.
        "/healthz" | "/readyz" => Reply::text("ok\n"),
        _ => Reply::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use wsfleet_probes::StatusCode;

    use super::*;

    #[test]
    fn metrics_are_openmetrics_and_probes_always_pass() {
        let metrics = Metrics::default();
        let scrape = respond("/metrics", &metrics);
        assert_eq!(scrape.status, StatusCode::OK);
        assert!(
            scrape
                .content_type
                .starts_with("application/openmetrics-text")
        );
        assert!(scrape.body.ends_with("# EOF\n"), "{}", scrape.body);
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(respond(probe, &metrics), Reply::text("ok\n"));
        }
        assert_eq!(respond("/", &metrics), Reply::not_found());
    }
}
