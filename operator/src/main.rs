#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::Client;
use kube::client::ClientBuilder;
use kube::runtime::events::Reporter;
use tokio::sync::watch;
use wsfleet_operator::context::Context;
use wsfleet_operator::event_recorders::EventRecorders;
use wsfleet_operator::fence::{Fence, FenceLayer};
use wsfleet_operator::lease::{LeaderLease, LeaseSettings};
use wsfleet_operator::metrics::Metrics;
use wsfleet_operator::names::FIELD_MANAGER;
use wsfleet_operator::stores::{self, Served};
use wsfleet_operator::{controller, crdgen, http};

/// The wsfleet Kubernetes operator: turns each WebSocketService into a fleet of WebSocket gateways.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the WebSocketService CustomResourceDefinition as YAML.
    Crd,
    /// Reconcile WebSocketServices (the operator itself).
    ///
    /// Reads the kubeconfig from KUBECONFIG, ~/.kube/config or the in-cluster service account.
    /// Several replicas may run; only the one holding the Lease acts.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Gateway image for WebSocketServices that do not set spec.image.
    #[arg(
        long,
        env = "WSFLEET_GATEWAY_IMAGE",
        default_value = "wsfleet/wsfleet:0.1.0"
    )]
    gateway_image: String,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Log lines as text (coloured only on a terminal) or as JSON objects; RUST_LOG sets the
    /// level (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Name of the coordination.k8s.io Lease that elects the acting replica.
    #[arg(long, default_value = "wsfleet-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: --namespace, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease (default: hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// glibc's allocator was a sixth of the operator's CPU at 1,000 objects; with mimalloc the
/// operator takes 4 % less CPU and no more memory (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crdgen::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            init_logging(args.log_format);
            // One thread: the operator waits on the apiserver, not on a core. With worker
            // threads each request crossed between threads several times; on one, the kernel's
            // share of the operator's CPU fell from 28 % to 17 % at 1,000 objects, and the
            // per-thread allocator arenas that held peak memory are gone (BENCHMARKS.md).
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|runtime| runtime.block_on(run(args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    // One line with the whole cause chain, in the chosen log format.
                    tracing::error!(error = format!("{err:#}"), "wsfleet-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a pod's log, or a file, would keep the escapes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(http::serve(args.metrics_address, metrics.clone()).await?);
    let config = kube::Config::infer().await.context(
        "loading the Kubernetes client config (KUBECONFIG, ~/.kube/config or in-cluster)",
    )?;
    let fence = Fence::default();
    // The controller writes only through the fence; the lease has a client of its own.
    let client = ClientBuilder::try_from(config.clone())
        .context("building the Kubernetes client")?
        .with_layer(&FenceLayer(fence.clone()))
        .build();
    let identity = args.identity.unwrap_or_else(default_identity);
    let lease = LeaderLease::new(
        Client::try_from(config).context("building the Kubernetes client for the lease")?,
        LeaseSettings::new(
            args.lease_name,
            args.lease_namespace
                .or_else(|| args.namespace.clone())
                .unwrap_or_else(|| "default".to_owned()),
            identity.clone(),
        ),
        fence,
    );
    let stop = stop_signal();
    // A replica that loses the lease steps down and stands again: an unreachable apiserver is
    // a reason to stop acting, not to exit.
    loop {
        tokio::select! {
            () = lease.acquire() => {}
            () = stopped(stop.clone()) => return Ok(()),
        }
        metrics.set_leader(true);
        // Each term starts from fresh watches and state: nothing seen in an earlier term is
        // trusted.
        let served = Served::discover(&client).await;
        let (stores, watches) = stores::watch(&client, args.namespace.as_deref(), served);
        let ctx = Arc::new(Context::new(
            client.clone(),
            stores,
            EventRecorders::new(
                &client,
                &Reporter {
                    controller: FIELD_MANAGER.to_owned(),
                    instance: Some(identity.clone()),
                },
            ),
            metrics.clone(),
            args.gateway_image.clone(),
        ));
        tracing::info!(
            namespace = args.namespace.as_deref().unwrap_or("<all>"),
            "running the controller"
        );
        let lost = tokio::select! {
            biased;
            lost = lease.keep() => Some(lost),
            () = controller::run(ctx, watches, args.namespace.as_deref(), stopped(stop.clone())) => None,
        };
        metrics.set_leader(false);
        match lost {
            Some(lost) => tracing::warn!(
                error = format!("{lost:#}"),
                "stepped down; standing for the lease again"
            ),
            None => {
                lease.release().await;
                return Ok(());
            }
        }
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "wsfleet-operator".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Flips to true on SIGINT or SIGTERM.
fn stop_signal() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stop signal received; finishing reconciles");
        let _ = sender.send(true);
    });
    receiver
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
