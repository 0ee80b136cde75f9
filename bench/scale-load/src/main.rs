//! Load program of `bench/scale`: seeds pods through the real webhook, probes API latency as a normal user,
//! and runs N agents' pod watches (the agent's own watch code) with per-agent identities.

mod agents;
mod probe;
mod seed;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "scale-load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Seed(seed::Args),
    Probe(probe::Args),
    Agents(agents::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed(args) => seed::run(args).await,
        Command::Probe(args) => probe::run(args).await,
        Command::Agents(args) => agents::run(args).await,
    }
}
