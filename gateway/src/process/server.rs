//! The gateway process: listeners, reloads, and the drain on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};

use crate::policy::live_counts::LiveCounts;
use crate::policy::pending::PendingHandshakes;
use crate::policy::rate::PerIpRate;
use crate::policy::running::Policy;
use crate::process::{admin, connection, reload};
use crate::relay::heartbeat_clock::HeartbeatClock;
use crate::state::Shared;
use crate::state::access_log::AccessLog;
use crate::state::drain::Drain;
use crate::telemetry::metrics::Metrics;
use crate::wire::tls::ReloadingCertificate;
use wsfleet_config::GatewayConfig;
use wsfleet_probes::accept_backoff::AcceptBackoff;

/// The client-facing listener, queueing `backlog` connections (`tcp.listenBacklog`).
/// TCP_NODELAY is set here once: Linux copies it to every accepted socket, which saves a
/// system call per connection (frames are written whole, so waiting to coalesce them would
/// only add latency).
fn client_listener(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Gives the open listener a new backlog: Linux takes a second `listen` on a listening socket
/// as a resize of its queue, with the queued connections kept.
fn resize_backlog(listener: &TcpListener, backlog: u32) {
    let requested = i32::try_from(backlog).unwrap_or(i32::MAX);
    match rustix::net::listen(listener, requested) {
        Ok(()) => tracing::info!(backlog, "listen backlog changed"),
        Err(err) => tracing::warn!(backlog, error = %err, "cannot change the listen backlog"),
    }
}

/// Runs the gateway until SIGTERM (or SIGINT) and the drain that follows.
pub async fn run(config_path: PathBuf, config: GatewayConfig) -> anyhow::Result<()> {
    let listen_address = config.listen.address;
    let listen_backlog = config.tcp.listen_backlog;
    let metrics_address = config.metrics.address;
    let certificate = config
        .tls
        .as_ref()
        .map(|files| ReloadingCertificate::load(files).map(Arc::new))
        .transpose()?;
    let tls = certificate
        .as_ref()
        .map(|certificate| certificate.server_config())
        .transpose()?;
    let metrics = Arc::new(Metrics::default());
    let policy = Policy::build(config, None, &metrics)?;
    let shared = Arc::new(Shared {
        policy: ArcSwap::from_pointee(policy),
        drain: Arc::new(Drain::new(metrics.clone())),
        access_log: AccessLog::to_stdout(metrics.clone()),
        metrics,
        per_ip: PerIpRate::default(),
        pending_handshakes: PendingHandshakes::default(),
        per_subject: LiveCounts::default(),
        tls,
        certificate,
        ready: AtomicBool::new(false),
        listen_backlog: tokio::sync::watch::Sender::new(listen_backlog),
    });
    if let Some(certificate) = &shared.certificate {
        shared.served_certificate_changed(certificate);
    }
    // Its thread starts here rather than with the first connection's heartbeat.
    HeartbeatClock::global();

    let admin_listener = TcpListener::bind(metrics_address)
        .await
        .with_context(|| format!("metrics.address: cannot listen on {metrics_address}"))?;
    tokio::spawn(admin::serve(admin_listener, shared.clone()));
    reload::watch(shared.clone(), config_path)?;
    let mut backlog = shared.listen_backlog.subscribe();
    let listener = client_listener(listen_address, *backlog.borrow_and_update())
        .with_context(|| format!("listen.address: cannot listen on {listen_address}"))?;
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!(%listen_address, %metrics_address, tls = shared.tls.is_some(), "gateway listening");

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            (tcp, peer) = backoff.accept(&listener, "clients") => {
                let accepted = std::time::Instant::now();
                tokio::spawn(connection::serve(shared.clone(), tcp, peer, accepted));
            }
            Ok(()) = backlog.changed() => resize_backlog(&listener, *backlog.borrow_and_update()),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    // Drain: not ready at once, no new connections, live ones closed across the grace period.
    shared.ready.store(false, Ordering::Relaxed);
    drop(listener);
    let grace = shared.policy.load().config.drain.grace_period;
    let live = shared.drain.admitted();
    tracing::info!(live, grace = %wsfleet_config::duration_text::format(grace), "draining");
    shared.drain.start(grace);
    let all_closed = shared
        .drain
        .wait_all_closed(tokio::time::Instant::now() + grace)
        .await;
    tracing::info!(
        all_closed,
        remaining = shared.drain.admitted(),
        "drain finished"
    );
    shared.access_log.flush().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = client_listener("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        let (accepted, _) = accepted.unwrap();
        assert!(accepted.nodelay().unwrap());
        assert!(
            !client.unwrap().nodelay().unwrap(),
            "a fresh socket has Nagle on"
        );
    }
}
