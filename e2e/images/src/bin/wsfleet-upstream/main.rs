//! A WebSocket upstream for the end-to-end tests and the demo, run behind the wsfleet gateway.
//!
//! The life of a connection: `server` accepts it and answers plain HTTP (GET /healthz) or the
//! WebSocket upgrade, negotiating permessage-deflate when the client offers it; `session` then
//! echoes or chats until either side closes. `whoami` is the JSON a client asks for to learn
//! which pod answered and what the gateway forwarded; `room` is the chat mode's one room.

#![forbid(unsafe_code)]

mod room;
mod server;
mod session;
mod whoami;

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A WebSocket upstream for wsfleet's tests: echo or chat, with permessage-deflate.
#[derive(Parser)]
#[command(name = "wsfleet-upstream", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves WebSocket connections on every path, and GET /healthz, until SIGTERM or SIGINT.
    ///
    /// A text message `whoami` is answered with JSON naming the pod, the TCP peer (the gateway
    /// pod that forwarded the connection) and the forwarded headers. No subprotocol is ever
    /// selected, deliberately.
    Serve {
        /// Address to listen on; port 0 picks a free port (see the `listening` line on stdout).
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// What to do with messages.
        #[arg(long, value_enum, default_value_t = Mode::Echo)]
        mode: Mode,
        /// The pod name `whoami` reports; the host name when unset.
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
    },
}

/// What the upstream does with the messages it receives.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Send every message back to its sender as it came.
    Echo,
    /// One room: every text message goes to every client, the sender included, as JSON
    /// {"from": SENDER'S PEER IP, "text": MESSAGE}.
    Chat,
}

fn main() -> Result<()> {
    let Command::Serve {
        listen,
        mode,
        pod_name,
    } = Cli::parse().command;
    let pod = match pod_name {
        Some(name) => name,
        None => whoami::hostname().context("reading the host name (set POD_NAME instead)")?,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            let address = listener.local_addr().context("reading the bound address")?;
            let shutdown = shutdown_on_signal()?;
            let mode_name = mode.to_possible_value().expect("no mode is skipped");
            println!("listening {address} mode {}", mode_name.get_name());
            server::serve(listener, server::Upstream::new(mode, pod), shutdown).await;
            println!("stopped");
            Ok(())
        })
}

/// A token cancelled by the first SIGTERM (the kubelet stopping the pod) or SIGINT.
fn shutdown_on_signal() -> Result<CancellationToken> {
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        trigger.cancel();
    });
    Ok(shutdown)
}
