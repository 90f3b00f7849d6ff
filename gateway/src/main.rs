//! `wsfleet-gateway`: runs the gateway, or checks a config with `--check`.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use wsfleet_config::GatewayConfig;

/// WebSocket gateway: TLS, JWT and IP admission, rate and size limits, heartbeats and
/// graceful draining in front of one WebSocket upstream.
///
/// The config file, and the certificate, JWT key and CA files it names, are watched and
/// reloaded on change without dropping connections; a change that does not validate is
/// logged and the running config stays. SIGTERM drains: /readyz fails at once, no new
/// connections are accepted, and live clients are closed with 1001 across drain.gracePeriod.
/// The log level comes from RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Gateway config file (YAML).
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// Log line format, on stderr; text is coloured only on a terminal.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate the config and exit: 0 when valid, 1 with the offending field otherwise.
    #[arg(long)]
    check: bool,
    /// Threads that serve connections [default: the CPUs this process may use, after its CPU
    /// affinity and cgroup CPU quota]. With 1, everything runs on the main thread, so no
    /// connection is ever handed from one thread to another.
    #[arg(long, value_name = "N", env = "WSFLEET_GATEWAY_WORKER_THREADS")]
    worker_threads: Option<NonZeroUsize>,
}

/// Name of the runtime's worker threads, as `ps -L` and /proc/PID/task/*/comm show it. Tokio
/// gives it to its blocking threads too, such as the one that resolves an upstream name.
const WORKER_THREAD_NAME: &str = "gateway-worker";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// In a reconnect storm glibc's malloc and free, consolidating freed chunks, were 7 % of the
/// gateway's CPU; with mimalloc a storm takes 4 to 8 % less CPU and an idle connection 3 % less
/// memory (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let config = match GatewayConfig::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "invalid config");
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        println!("{}: valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let threads = cli.worker_threads.unwrap_or_else(available_cpus);
    let runtime = match build_runtime(threads) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime with {threads} worker threads: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wsfleet_gateway::process::server::run(cli.config, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "gateway failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CPUs this process may run on; 1 when the platform cannot tell.
fn available_cpus() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// A current-thread runtime for one thread (the accept loop and every connection share the
/// main thread, with no cross-thread wake-ups), otherwise a pool of `threads` workers.
fn build_runtime(threads: NonZeroUsize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == NonZeroUsize::MIN {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads.get());
        builder
    };
    builder.thread_name(WORKER_THREAD_NAME).enable_all().build()
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal: a pod's log, or a file, would keep the escapes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
