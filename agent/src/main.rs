//! `healthbridge-agent`: parse, set up logging, run, map the outcome to an exit code.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use healthbridge_agent::cli::{Cli, Command};
use healthbridge_agent::probe::{ProbeArgs, ProbeExit};
use healthbridge_agent::run::RunError;
use healthbridge_agent::{probe, run};
use healthbridge_runtime::{logging, shutdown};

fn main() -> ExitCode {
    // `probe` (or a binary named `healthbridge-probe`) must start fast and accept the old single-dash flags.
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = probe::run_if_probe(&args) {
        return code;
    }
    // Bad arguments exit 2 with clap's message, before anything starts.
    let cli = Cli::parse_from(args);
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
    if let Command::Probe(args) = command {
        return Ok(probe_with_global_flags(&args));
    }
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
            Command::Probe(args) => Ok(probe_with_global_flags(&args)),
        }
    })
}

/// `probe` after global flags (`--log-format json probe …`): the fast path in `main` did not see it.
fn probe_with_global_flags(args: &ProbeArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("healthbridge-probe: cannot start the async runtime");
        return ProbeExit::CouldNotConnect.into();
    };
    let verdict = runtime.block_on(probe::run(args));
    if verdict.exit != ProbeExit::Healthy {
        eprintln!("healthbridge-probe: {}", verdict.message);
    }
    verdict.exit.into()
}
