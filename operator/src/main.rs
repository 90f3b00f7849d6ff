use clap::{Parser, Subcommand};

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
}

fn main() {
    match Cli::parse().command {
        Command::Crd => print!("{}", wsfleet_operator::crdgen::crd_yaml()),
    }
}
