//! `wsfleet-gateway`: runs the gateway, or checks a config with `--check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use wsfleet_gateway::config::GatewayConfig;

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
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate the config and exit: 0 when valid, 1 with the offending field otherwise.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wsfleet_gateway::server::run(cli.config, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "gateway failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
