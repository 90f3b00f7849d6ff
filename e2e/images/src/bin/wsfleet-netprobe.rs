//! One network check from inside a pod, for the isolation tests. The result is one line on
//! stdout and, when the kubelet provides it, in /dev/termination-log, where
//! `kubectl get pod -o jsonpath='{.status.containerStatuses[0].state.terminated.message}'`
//! reads it back without fetching logs.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use clap::{Parser, Subcommand};

const TERMINATION_LOG: &str = "/dev/termination-log";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Probes the network from inside a pod: exits 0 when the probe succeeds, 1 when it fails.
#[derive(Parser)]
#[command(name = "wsfleet-netprobe", version)]
struct Cli {
    #[command(subcommand)]
    probe: Probe,
}

#[derive(Subcommand)]
enum Probe {
    /// Opens one TCP connection; prints `connected` or `unreachable: ERROR`.
    Connect {
        /// Where to connect: IP:PORT or NAME:PORT (the name goes through the system resolver).
        target: String,
        /// How long to wait for the name lookup and the TCP handshake together.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Looks NAME up once with the system resolver; prints the addresses or `unresolved: ERROR`.
    Resolve {
        /// A host name, e.g. `kubernetes.default.svc.cluster.local`.
        name: String,
    },
    /// Prints /etc/resolv.conf, the resolver configuration the kubelet gave the pod.
    ResolvConf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (result, failure) = match Cli::parse().probe {
        Probe::Connect { target, timeout } => (connect(&target, timeout).await, "unreachable"),
        Probe::Resolve { name } => (resolve(&name).await, "unresolved"),
        Probe::ResolvConf => (resolv_conf(), "unreadable"),
    };
    let (report, code) = match result {
        Ok(report) => (report, ExitCode::SUCCESS),
        Err(error) => (format!("{failure}: {error:#}"), ExitCode::FAILURE),
    };
    println!("{report}");
    write_termination_log(&report);
    code
}

async fn connect(target: &str, timeout: Duration) -> Result<String> {
    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|_| anyhow!("no answer within {}", humantime::format_duration(timeout)))?
        .with_context(|| format!("connecting to {target}"))?;
    Ok("connected".to_owned())
}

async fn resolve(name: &str) -> Result<String> {
    // The port is required by getaddrinfo's interface and ignored here.
    let addresses: Vec<String> = tokio::net::lookup_host((name, 0))
        .await
        .with_context(|| format!("looking up {name}"))?
        .map(|address: SocketAddr| address.ip().to_string())
        .collect();
    Ok(addresses.join(" "))
}

fn resolv_conf() -> Result<String> {
    let text =
        std::fs::read_to_string(RESOLV_CONF).with_context(|| format!("reading {RESOLV_CONF}"))?;
    Ok(text.trim_end().to_owned())
}

/// Best effort: the file exists only in a container whose kubelet mounted it.
fn write_termination_log(report: &str) {
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .write(true)
        .open(TERMINATION_LOG)
    {
        let _ = writeln!(log, "{report}");
    }
}
