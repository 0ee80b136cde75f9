//! `healthbridge-webhook`: parses flags, sets up logging and signals, runs the subcommand.

use clap::Parser;
use healthbridge_webhook::cli::Cli;
use healthbridge_webhook::run::execute;
use healthbridge_webhook::{logging, shutdown};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format());
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone());
    execute(cli, token).await?;
    Ok(())
}
