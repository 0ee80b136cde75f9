//! Command line: `serve` (the default when no subcommand is given) and `probe`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use healthbridge_contract::env;

use crate::config::ServeArgs;
use crate::probe::ProbeArgs;
use crate::probe::grpc_health_probe::{self, GrpcHealthProbeArgs};
use healthbridge_runtime::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "healthbridge-agent",
    version,
    about = "HTTP health endpoint for any pod: pod status by watch, aggregated endpoints, exec checks, exec-probe mode",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        env = env::LOG_FORMAT,
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,

    /// Log only warnings and errors (the exec bridge's `-quiet`); `RUST_LOG` still wins.
    #[arg(long, env = env::QUIET, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// `serve` settings, accepted without the subcommand name.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /health, /all, /self and exec URLs, and /metrics on the admin port (the default).
    Serve(ServeArgs),
    /// One HTTP(S) or gRPC health check for exec probes; exit 0 healthy, 2 bad arguments, 3 could not connect,
    /// 4 unhealthy. Also runs when the binary is called `healthbridge-probe`; with `-addr` (or called
    /// `grpc_health_probe`) it takes grpc_health_probe's flags and exit codes.
    Probe(ProbeArgs),
}

/// What the process was asked to do.
// Parsed once at start-up: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Invocation {
    /// `healthbridge-probe …`, `healthbridge-agent probe …` or `healthbridge-agent [global flags] probe …`.
    Probe(ProbeArgs),
    /// `grpc_health_probe -addr=…`, or `healthbridge-agent probe -addr=…`: that tool's flags and exit codes.
    GrpcHealthProbe(GrpcHealthProbeArgs),
    Serve {
        args: ServeArgs,
        log_format: LogFormat,
        quiet: bool,
    },
}

impl Cli {
    /// The command to run, `serve` when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }

    /// What to run.
    pub fn into_invocation(self) -> Invocation {
        let (log_format, quiet) = (self.log_format, self.quiet);
        match self.into_command() {
            Command::Probe(args) => Invocation::Probe(args),
            Command::Serve(args) => Invocation::Serve {
                args,
                log_format,
                quiet,
            },
        }
    }
}

/// Reads the process arguments. A probe goes through its own parser first, so it starts fast and accepts the old
/// single-dash flags; the exec bridge's command line is translated into `serve` flags. `Err` is the exit code once
/// help, the version or what is wrong has been printed (2 for bad arguments, before anything starts; 1 in
/// grpc_health_probe's mode, as that tool exits).
pub fn parse(args: Vec<OsString>) -> Result<Invocation, ExitCode> {
    if let Some(probe_args) = grpc_health_probe::argv(&args) {
        return grpc_health_probe::parse_args(probe_args).map(Invocation::GrpcHealthProbe);
    }
    if let Some(probe_args) = crate::probe::probe_argv(&args) {
        return crate::probe::parse_args(probe_args).map(Invocation::Probe);
    }
    let args = if crate::bridge::invoked_as_bridge(&args) {
        match crate::bridge::translate(&args, std::env::var_os(env::PORT).is_some()) {
            Ok(args) => args,
            Err(error) => {
                eprintln!("error: {error}");
                return Err(ExitCode::from(2));
            }
        }
    } else {
        args
    };
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli.into_invocation()),
        Err(err) => {
            let _ = err.print();
            Err(ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("healthbridge-agent").chain(args.iter().copied()))
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        match parse(args).unwrap().into_command() {
            Command::Serve(args) => args,
            Command::Probe(_) => panic!("parsed as probe: {args:?}"),
        }
    }

    #[test]
    fn serve_is_the_default_subcommand() {
        let args = serve_args(&["--port", "4000"]);
        assert_eq!(args.port, 4000);
    }

    #[test]
    fn serve_can_be_named() {
        let args = serve_args(&["serve", "--target-container", "app"]);
        assert_eq!(args.target_container.as_deref(), Some("app"));
    }

    #[test]
    fn the_old_checker_positional_args_are_accepted() {
        let args = serve_args(&[
            "8081",
            "3",
            "http://127.0.0.1:8080/a",
            "http://127.0.0.1:8080/b",
        ]);
        assert_eq!(
            args.legacy,
            [
                "8081",
                "3",
                "http://127.0.0.1:8080/a",
                "http://127.0.0.1:8080/b"
            ]
        );
    }

    #[test]
    fn endpoint_flags_are_serve_flags() {
        let args = serve_args(&[
            "--endpoint",
            "http://127.0.0.1:8080/a",
            "--timeout",
            "500ms",
        ]);
        assert_eq!(args.endpoints.endpoints, ["http://127.0.0.1:8080/a"]);
    }

    #[test]
    fn on_stale_defaults_to_unhealthy_and_takes_last_known() {
        use crate::pod_status::OnStale;
        assert_eq!(serve_args(&[]).on_stale, OnStale::Unhealthy);
        assert_eq!(
            serve_args(&["--on-stale", "last-known"]).on_stale,
            OnStale::LastKnown
        );
        let error = parse(&["--on-stale", "maybe"]).unwrap_err().to_string();
        assert!(
            error.contains("HTTP_HEALTHCHECK_SIDECAR_ON_STALE"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_state_override_is_rejected_at_start_up() {
        let error = parse(&["--state-override", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE"),
            "{error}"
        );
    }
}
