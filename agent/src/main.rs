//! `healthbridge-agent`: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use healthbridge_agent::{cli, run};

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os().collect()) {
        Ok(invocation) => invocation,
        Err(exit) => return exit,
    };
    match run::start(invocation) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            error.exit_code()
        }
    }
}
