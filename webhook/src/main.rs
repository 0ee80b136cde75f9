//! `healthbridge-webhook`: parses flags, sets up logging and signals, runs the subcommand.

use clap::Parser;
use healthbridge_runtime::{logging, shutdown};
use healthbridge_webhook::cli::Cli;
use healthbridge_webhook::run::execute;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format());
    let token = shutdown::on_signal();
    execute(cli, token).await?;
    Ok(())
}
