//! `wsfleet-bench`: the gateway against a direct connection, nginx and HAProxy.

// The io_uring floor (src/floor.rs) hands the kernel buffers and takes descriptors back, which
// only unsafe code can express; those blocks allow it and say why they are sound, and nothing
// else may be unsafe.
#![deny(unsafe_code)]

mod certs;
mod client;
mod echo;
mod floor;
mod frame;
mod handshake;
mod load;
mod matrix;
mod procstat;
mod proxies;
mod report;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::certs::KeyKind;
use crate::handshake::Endpoint;
use crate::matrix::{Plan, ScenarioKind, StormShape, StreamShape, TargetKind};

/// Benchmark of the wsfleet gateway against a direct connection, nginx and HAProxy.
///
/// `run` does everything: it starts an echo upstream and every proxy (each proxy pinned to
/// --proxy-core, the echo upstream to --load-core, where this process should run too: start
/// it with `taskset -c 0`), runs each scenario against each target in turn for several
/// rounds, and prints a Markdown table with the gateway's ratios to nginx and HAProxy.
/// `echo`, `floor` and `load` are the pieces, for profiling one target by hand.
#[derive(Parser)]
#[command(name = "wsfleet-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the whole matrix and print the table.
    Run(RunArgs),
    /// Serve as the echo upstream: every data frame is answered with the same payload.
    Echo {
        #[arg(long, default_value = "127.0.0.1:18400")]
        listen: SocketAddr,
    },
    /// Relay bytes to an upstream and do nothing else: the least CPU any proxy can spend.
    ///
    /// An io_uring byte relay with no WebSocket parsing, joining the stream and storm scenarios
    /// as the `floor` target: its CPU per message and per upgrade is the kernel's share of every
    /// proxy's figure.
    Floor {
        #[arg(long, default_value = "127.0.0.1:18405")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18400")]
        upstream: SocketAddr,
    },
    /// Load one target with one scenario and print the result as JSON.
    Load(LoadArgs),
}

#[derive(Parser)]
struct RunArgs {
    /// Times the whole matrix is repeated; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of load before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Seconds each measured window lasts.
    #[arg(long, default_value_t = 5.0)]
    measure_secs: f64,
    /// Message streams as CONNECTIONSxBYTES@PACED_RATE (aggregate messages/s for latency).
    #[arg(long = "shape", default_values = ["64x128@10000", "256x1024@10000"])]
    shapes: Vec<ShapeArg>,
    /// Idle connections held to measure memory per connection.
    #[arg(long, default_value_t = 9_000)]
    idle_connections: usize,
    /// Seconds idle connections are held before the proxy's RSS is read.
    #[arg(long, default_value_t = 2.0)]
    idle_settle_secs: f64,
    /// Concurrent upgrade-and-close loops in the handshake scenario.
    #[arg(long, default_value_t = 32)]
    handshake_concurrency: usize,
    /// Connection storms as CLIENTS (all at once) or CLIENTS@RATE (connections started per
    /// second), for the storm scenario.
    #[arg(long = "storm", default_values = ["9000", "9000@3000"])]
    storms: Vec<StormArg>,
    /// Certificate keys the TLS scenario serves, each in turn.
    #[arg(long, value_delimiter = ',', default_value = "ecdsa,rsa")]
    tls_keys: Vec<KeyKind>,
    /// Message stream of the TLS scenario, as CONNECTIONSxBYTES@PACED_RATE.
    #[arg(long, default_value = "256x1024@10000")]
    tls_shape: ShapeArg,
    /// Scenarios run in every round (always in the order streams, idle, handshakes, storm,
    /// tls); storm and tls are left out unless named.
    #[arg(long, value_delimiter = ',', default_value = "streams,idle,handshakes")]
    scenarios: Vec<ScenarioKind>,
    /// Targets, run in this order within every round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,floor,nginx,haproxy,gateway"
    )]
    targets: Vec<TargetKind>,
    /// Echo on this port, nginx +1, HAProxy +2, gateway +3, gateway metrics +4, floor +5
    /// (all 127.0.0.1).
    #[arg(long, default_value_t = 18_400)]
    base_port: u16,
    /// CPU the proxies are pinned to.
    #[arg(long, default_value_t = 1)]
    proxy_core: usize,
    /// CPU the echo upstream is pinned to (run this process there too).
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// Gateway binary; default: wsfleet-gateway next to this binary.
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Directory the results (Markdown and JSON) are written to.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Parser)]
struct LoadArgs {
    /// Target, e.g. ws://127.0.0.1:18403/.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Aggregate messages/s for the latency scenario.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    #[arg(long, default_value_t = 10.0)]
    measure_secs: f64,
    /// Process whose CPU time and memory are charged to the target.
    #[arg(long)]
    pid: Option<u32>,
    /// Sent as `Authorization: Bearer TOKEN`.
    #[arg(long)]
    token: Option<String>,
    /// Storm: connections started per second [default: as fast as possible].
    #[arg(long)]
    connect_rate: Option<f64>,
    /// For a wss:// URL: the certificate (PEM) the target serves, the only one trusted.
    #[arg(long)]
    server_cert: Option<PathBuf>,
    /// For a wss:// URL: offer earlier sessions again (tickets) instead of full handshakes.
    #[arg(long)]
    resume: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Throughput,
    Latency,
    Idle,
    Handshakes,
    Storm,
}

/// `CONNECTIONSxBYTES@RATE`, e.g. `64x128@10000`.
#[derive(Clone, Copy, Debug)]
struct ShapeArg(StreamShape);

impl FromStr for ShapeArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("expected CONNECTIONSxBYTES@RATE such as 64x128@10000, got {text:?}");
        let (shape, rate) = text.split_once('@').ok_or_else(bad)?;
        let (connections, size) = shape.split_once('x').ok_or_else(bad)?;
        let shape = StreamShape {
            connections: connections.parse().map_err(|_| bad())?,
            size: size.parse().map_err(|_| bad())?,
            paced_rate: rate.parse().map_err(|_| bad())?,
        };
        if shape.connections == 0 || shape.size < 8 || shape.paced_rate <= 0.0 {
            return Err(format!(
                "{text:?}: needs at least 1 connection, 8 bytes and a positive rate"
            ));
        }
        Ok(Self(shape))
    }
}

/// `CLIENTS` or `CLIENTS@RATE`, e.g. `9000@3000`.
#[derive(Clone, Copy, Debug)]
struct StormArg(StormShape);

impl FromStr for StormArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("expected CLIENTS or CLIENTS@RATE such as 9000@3000, got {text:?}");
        let (clients, rate) = match text.split_once('@') {
            Some((clients, rate)) => (clients, Some(rate.parse().map_err(|_| bad())?)),
            None => (text, None),
        };
        let shape = StormShape {
            clients: clients.parse().map_err(|_| bad())?,
            rate,
        };
        if shape.clients == 0 || shape.rate.is_some_and(|rate: f64| rate <= 0.0) {
            return Err(format!(
                "{text:?}: needs at least 1 client and a positive rate"
            ));
        }
        Ok(Self(shape))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: the load generator and the echo upstream each stay on the core they are given.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    match cli.command {
        Commands::Echo { listen } => local.block_on(&runtime, async {
            let listener = echo::listener(listen).with_context(|| format!("binding {listen}"))?;
            echo::serve(listener).await
        }),
        Commands::Floor { listen, upstream } => {
            let ring = floor::ring()?;
            let listener =
                std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
            floor::serve(ring, listener, upstream)
        }
        Commands::Load(args) => local.block_on(&runtime, load_once(args)),
        Commands::Run(args) => local.block_on(&runtime, run_matrix(args)),
    }
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value)
}

async fn load_once(args: LoadArgs) -> anyhow::Result<()> {
    let endpoint = Endpoint::parse(&args.url)?;
    let tls = match (&args.server_cert, endpoint.tls) {
        (Some(path), true) => {
            use rustls::pki_types::pem::PemObject as _;
            let certificate = rustls::pki_types::CertificateDer::from_pem_file(path)
                .with_context(|| format!("reading a certificate from {}", path.display()))?;
            Some(client::TlsClient::new(certificate, args.resume)?)
        }
        (None, true) => bail!("a wss:// URL needs --server-cert"),
        (_, false) => None,
    };
    let target = load::Target {
        endpoint,
        bearer: args.token,
        pid: args.pid,
        tls,
    };
    let window = load::Window {
        warmup: secs(args.warmup_secs),
        measure: secs(args.measure_secs),
    };
    let json = match args.scenario {
        Scenario::Throughput => serde_json::to_string(
            &load::throughput(&target, args.connections, args.size, window).await?,
        ),
        Scenario::Latency => serde_json::to_string(
            &load::latency(&target, args.connections, args.size, args.rate, window).await?,
        ),
        Scenario::Idle => {
            serde_json::to_string(&load::idle(&target, args.connections, window.measure).await?)
        }
        Scenario::Handshakes => {
            serde_json::to_string(&load::handshakes(&target, args.connections, window).await?)
        }
        Scenario::Storm => {
            serde_json::to_string(&load::storm(&target, args.connections, args.connect_rate).await?)
        }
    }?;
    println!("{json}");
    Ok(())
}

async fn run_matrix(args: RunArgs) -> anyhow::Result<()> {
    for (needed, program) in [
        (TargetKind::Nginx, "nginx"),
        (TargetKind::Haproxy, "haproxy"),
    ] {
        if args.targets.contains(&needed) && Command::new(program).arg("-v").output().is_err() {
            bail!("{program} is not installed (apt-get install -y nginx-light haproxy)");
        }
    }
    let gateway = match args.gateway {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark binary has no directory")?
            .join("wsfleet-gateway"),
    };
    let plan = Plan {
        rounds: args.rounds,
        warmup: secs(args.warmup_secs),
        measure: secs(args.measure_secs),
        shapes: args.shapes.iter().map(|shape| shape.0).collect(),
        idle_connections: args.idle_connections,
        idle_settle: secs(args.idle_settle_secs),
        handshake_concurrency: args.handshake_concurrency,
        storms: args.storms.iter().map(|storm| storm.0).collect(),
        tls_keys: args.tls_keys,
        tls_shape: args.tls_shape.0,
        scenarios: args.scenarios,
        targets: args.targets,
        base_port: args.base_port,
        proxy_core: args.proxy_core,
        load_core: args.load_core,
        gateway,
    };
    let work_dir = std::env::temp_dir().join(format!("wsfleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    eprintln!("config files and process logs: {}", work_dir.display());
    let samples = until_interrupted(matrix::run(&plan, work_dir.clone())).await?;

    let environment = environment(&plan.gateway);
    let mut markdown = String::new();
    for (what, value) in &environment {
        markdown.push_str(&format!("- {what}: {value}\n"));
    }
    markdown.push('\n');
    markdown.push_str(&report::render(
        &matrix::metrics(&plan),
        &plan.targets,
        plan.rounds,
        &samples,
    ));
    println!("{markdown}");

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let base = args.out.join(format!("results-{stamp}"));
    std::fs::write(base.with_extension("md"), &markdown)?;
    let json = serde_json::json!({ "plan": plan, "environment": environment, "samples": samples });
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!("results written to {}.md and .json", base.display());
    std::fs::remove_dir_all(&work_dir)
        .with_context(|| format!("removing {}", work_dir.display()))?;
    Ok(())
}

/// Runs `work` unless SIGINT or SIGTERM comes first; dropping `work` then stops every
/// process it started, so an interrupted run leaves no proxy behind.
async fn until_interrupted<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = work => result,
        _ = interrupt.recv() => bail!("interrupted (SIGINT); every started process was stopped"),
        _ = terminate.recv() => bail!("terminated (SIGTERM); every started process was stopped"),
    }
}

/// What the numbers were measured on.
fn environment(gateway: &std::path::Path) -> Vec<(String, String)> {
    let first_line = |program: &str, args: &[&str]| -> String {
        Command::new(program)
            .args(args)
            .output()
            .map(|out| {
                let text = [out.stdout, out.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|err| format!("unavailable ({err})"))
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    vec![
        ("CPU".into(), cpu),
        ("kernel".into(), first_line("uname", &["-r"])),
        ("nginx".into(), first_line("nginx", &["-v"])),
        ("HAProxy".into(), first_line("haproxy", &["-v"])),
        (
            "repository".into(),
            first_line("git", &["describe", "--always", "--dirty"]),
        ),
        (
            "gateway binary built".into(),
            first_line(
                "date",
                &["-u", "-r", &gateway.display().to_string(), "+%FT%TZ"],
            ),
        ),
    ]
}
