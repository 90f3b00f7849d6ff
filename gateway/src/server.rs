//! The gateway process: listeners, shared state, reloads, and the drain on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

use crate::config::GatewayConfig;
use crate::drain::Drain;
use crate::metrics::{HandshakeOutcome, Metrics};
use crate::policy::Policy;
use crate::rate::PerIpRate;
use crate::refusal::Refusal;
use crate::tls::ReloadingCertificate;
use crate::{admin, connection, reload};

/// Back-off after a failed accept (out of file descriptors, usually), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// State every connection and background task shares.
pub struct Shared {
    pub policy: ArcSwap<Policy>,
    pub metrics: Arc<Metrics>,
    pub per_ip: PerIpRate,
    pub drain: Arc<Drain>,
    pub tls: Option<TlsAcceptor>,
    pub certificate: Option<Arc<ReloadingCertificate>>,
    /// False until the listener is bound, and again once draining starts.
    pub ready: AtomicBool,
}

impl Shared {
    /// Counts a refusal under its reason and the handshake under its outcome.
    pub fn count_refusal(&self, refusal: Refusal) {
        self.metrics.refusal(refusal);
        self.metrics.handshake(if refusal.is_upstream_failure() {
            HandshakeOutcome::UpstreamFailed
        } else {
            HandshakeOutcome::Refused
        });
    }
}

/// Runs the gateway until SIGTERM (or SIGINT) and the drain that follows.
pub async fn run(config_path: PathBuf, config: GatewayConfig) -> anyhow::Result<()> {
    let listen_address = config.listen.address;
    let metrics_address = config.metrics.address;
    let certificate = config
        .tls
        .as_ref()
        .map(|files| ReloadingCertificate::load(files).map(Arc::new))
        .transpose()?;
    let tls = certificate
        .as_ref()
        .map(|certificate| certificate.server_config().map(TlsAcceptor::from))
        .transpose()?;
    let policy = Policy::build(config)?;
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        policy: ArcSwap::from_pointee(policy),
        drain: Arc::new(Drain::new(metrics.clone())),
        metrics,
        per_ip: PerIpRate::default(),
        tls,
        certificate,
        ready: AtomicBool::new(false),
    });

    let admin_listener = TcpListener::bind(metrics_address)
        .await
        .with_context(|| format!("metrics.address: cannot listen on {metrics_address}"))?;
    tokio::spawn(admin::serve(admin_listener, shared.clone()));
    reload::watch(shared.clone(), config_path)?;
    let listener = TcpListener::bind(listen_address)
        .await
        .with_context(|| format!("listen.address: cannot listen on {listen_address}"))?;
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!(%listen_address, %metrics_address, tls = shared.tls.is_some(), "gateway listening");

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(connection::serve(shared.clone(), tcp, peer));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    // Drain: not ready at once, no new connections, live ones closed across the grace period.
    shared.ready.store(false, Ordering::Relaxed);
    drop(listener);
    let grace = shared.policy.load().config.drain.grace_period;
    let live = shared.metrics.active_connections();
    tracing::info!(live, grace = %crate::config::duration_text::format(grace), "draining");
    shared.drain.start(grace);
    let all_closed = shared
        .drain
        .wait_all_closed(tokio::time::Instant::now() + grace)
        .await;
    tracing::info!(
        all_closed,
        remaining = shared.metrics.active_connections(),
        "drain finished"
    );
    Ok(())
}
