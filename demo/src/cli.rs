//! Command line of the demo workload; every flag is also an environment variable.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Port the echo server listens on (UDP and TCP) unless told otherwise.
pub const DEFAULT_PORT: u16 = 7000;
/// Marker file whose presence means "ready"; `/tmp` is an emptyDir in the example pods.
pub const DEFAULT_READY_FILE: &str = "/tmp/ready";

#[derive(Debug, Parser)]
#[command(
    name = "healthbridge-demo",
    version,
    about = "UDP/TCP echo server with no health check of its own; readiness is a marker file"
)]
pub struct Cli {
    /// Marker file: present = ready. Shared by every subcommand.
    #[arg(long, global = true, env = "HEALTHBRIDGE_DEMO_READY_FILE", default_value = DEFAULT_READY_FILE)]
    pub ready_file: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `serve`, also accepted without the subcommand name.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Echo UDP datagrams and TCP streams back to their sender (the default).
    Serve(ServeArgs),
    /// Exit 0 if the marker file exists, 1 otherwise: a readiness probe for images without a shell.
    CheckReady,
    /// Create the marker file: the app becomes ready at its next readiness probe.
    SetReady,
    /// Remove the marker file: the app becomes unready at its next readiness probe.
    RmReady,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port for both the UDP and the TCP echo.
    #[arg(long, env = "HEALTHBRIDGE_DEMO_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address to bind (0.0.0.0 for every IPv4 address, :: for dual stack).
    #[arg(long, env = "HEALTHBRIDGE_DEMO_ADDRESS", default_value = "0.0.0.0")]
    pub address: IpAddr,

    /// Also answer HTTP on this TCP port: 200 while ready, 503 otherwise (off by default).
    #[arg(long, env = "HEALTHBRIDGE_DEMO_HTTP_PORT")]
    pub http_port: Option<u16>,

    /// Start without the marker file, so the app is unready until `set-ready`.
    #[arg(long, env = "HEALTHBRIDGE_DEMO_START_UNREADY")]
    pub start_unready: bool,
}

impl Cli {
    /// The command to run: `serve` with the top-level options when none is named.
    pub fn command(&self) -> Command {
        match &self.command {
            Some(Command::Serve(args)) => Command::Serve(args.clone()),
            Some(Command::CheckReady) => Command::CheckReady,
            Some(Command::SetReady) => Command::SetReady,
            Some(Command::RmReady) => Command::RmReady,
            None => Command::Serve(self.serve.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("healthbridge-demo").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn no_subcommand_serves_on_the_default_port() {
        let Command::Serve(args) = parse(&[]).command() else {
            panic!("expected serve");
        };
        assert_eq!(args.port, DEFAULT_PORT);
        assert!(!args.start_unready);
        assert_eq!(
            args.http_port, None,
            "the demo has no HTTP endpoint unless asked"
        );
    }

    #[test]
    fn serve_options_work_with_and_without_the_subcommand_name() {
        for argv in [&["--port", "9000"][..], &["serve", "--port", "9000"][..]] {
            let Command::Serve(args) = parse(argv).command() else {
                panic!("expected serve for {argv:?}");
            };
            assert_eq!(args.port, 9000);
        }
    }

    #[test]
    fn the_ready_file_can_be_given_after_a_subcommand() {
        let cli = parse(&["rm-ready", "--ready-file", "/run/x"]);
        assert!(matches!(cli.command(), Command::RmReady));
        assert_eq!(cli.ready_file, PathBuf::from("/run/x"));
    }

    #[test]
    fn a_port_out_of_range_is_rejected() {
        let err = Cli::try_parse_from(["healthbridge-demo", "--port", "70000"]).unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
    }
}
