//! `healthbridge-agent`: parse, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use healthbridge_agent::cli::{Cli, Command};
use healthbridge_agent::run::RunError;
use healthbridge_agent::{logging, run, shutdown};

fn main() -> ExitCode {
    // Bad arguments exit 2 with clap's message, before anything starts.
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match start(cli.into_command()) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            let configuration = error
                .downcast_ref::<RunError>()
                .is_some_and(RunError::is_configuration);
            if configuration {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn start(command: Command) -> anyhow::Result<ExitCode> {
    // A health sidecar needs little parallelism; on a big node one worker per core would only cost memory.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            Command::Serve(args) => {
                let cancel = shutdown::on_signal();
                run::serve(args, cancel).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
