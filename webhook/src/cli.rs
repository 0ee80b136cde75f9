//! Command line of `healthbridge-webhook`: the flags of `serve`, `run` and `controller` (the wiring is in [`crate::run`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_AGENT_PORT, NativeSidecar};
use crate::controller::ControllerArgs;
use crate::server;
use healthbridge_runtime::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "healthbridge-webhook",
    version,
    about = "Injects the healthbridge agent into opted-in pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The admission server alone; needs no API server (certificates from files).
    Serve(ServeArgs),
    /// Admission server, controller and (without cert files) self-managed certificates.
    Run(RunArgs),
    /// The controller alone.
    Controller(ControllerOnlyArgs),
}

/// Flags of the admission server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// PEM serving certificate (chain); reloaded when it changes on disk.
    #[arg(long, env = "HEALTHBRIDGE_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the serving certificate.
    #[arg(long, env = "HEALTHBRIDGE_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "HEALTHBRIDGE_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
    /// HTTPS address of the admission endpoints.
    #[arg(long, env = "HEALTHBRIDGE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "HEALTHBRIDGE_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// Image of the injected agent (pods may override it with healthbridge.io/agent-image).
    #[arg(long, env = "HEALTHBRIDGE_AGENT_IMAGE")]
    pub agent_image: String,
    /// More image repositories (or images) that may run as the agent, e.g. a mirror: healthbridge.io/agent-image
    /// must name one of them or --agent-image's repository, and the controller trusts only agents from them.
    #[arg(long, env = "HEALTHBRIDGE_ALLOWED_AGENT_IMAGES", value_delimiter = ',')]
    pub allowed_agent_images: Vec<String>,
    /// Port of the injected agent (pods may override it with healthbridge.io/port).
    #[arg(long, env = "HEALTHBRIDGE_AGENT_PORT", default_value_t = DEFAULT_AGENT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub agent_port: u16,
    /// Agent as native sidecar: auto (Kubernetes ≥ 1.29; `serve` assumes yes), always, never.
    #[arg(
        long,
        env = "HEALTHBRIDGE_NATIVE_SIDECAR",
        value_enum,
        default_value = "auto"
    )]
    pub native_sidecar: NativeSidecar,
    /// Default CPU request of the agent.
    #[arg(long, env = "HEALTHBRIDGE_AGENT_CPU_REQUEST", default_value = "10m", value_parser = quantity)]
    pub agent_cpu_request: String,
    /// Default CPU limit of the agent (none by default: CPU limits only add throttling).
    #[arg(long, env = "HEALTHBRIDGE_AGENT_CPU_LIMIT", value_parser = quantity)]
    pub agent_cpu_limit: Option<String>,
    /// Default memory request of the agent.
    #[arg(long, env = "HEALTHBRIDGE_AGENT_MEMORY_REQUEST", default_value = "16Mi", value_parser = quantity)]
    pub agent_memory_request: String,
    /// Default memory limit of the agent.
    #[arg(long, env = "HEALTHBRIDGE_AGENT_MEMORY_LIMIT", default_value = "32Mi", value_parser = quantity)]
    pub agent_memory_limit: String,
    /// More namespaces whose pods are never injected (kube-system, kube-public, kube-node-lease and the webhook's own always are).
    #[arg(long, env = "HEALTHBRIDGE_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
    /// Connection bounds of the admission listener.
    #[command(flatten)]
    pub limits: server::LimitArgs,
    /// How long in-flight admissions may take to finish after SIGTERM.
    #[arg(long, env = "HEALTHBRIDGE_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    #[arg(
        long,
        env = "HEALTHBRIDGE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

fn quantity(value: &str) -> Result<String, String> {
    healthbridge_contract::quantity::parse_quantity(value)
        .map(|quantity| quantity.text)
        .map_err(|error| error.to_string())
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The webhook's own namespace, never injected.
    #[arg(long, env = "HEALTHBRIDGE_NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// The webhook's Service: the serving certificate is made for `<service>.<namespace>.svc`.
    #[arg(
        long,
        env = "HEALTHBRIDGE_SERVICE_NAME",
        default_value = "healthbridge-webhook"
    )]
    pub service_name: String,
    /// Secret holding the self-managed CA and serving certificate, shared by replicas.
    #[arg(
        long,
        env = "HEALTHBRIDGE_CERT_SECRET",
        default_value = "healthbridge-webhook-tls"
    )]
    pub cert_secret: String,
    /// MutatingWebhookConfiguration whose caBundle is kept equal to the self-managed CA.
    #[arg(
        long,
        env = "HEALTHBRIDGE_WEBHOOK_CONFIG",
        default_value = "healthbridge"
    )]
    pub webhook_config: String,
}

#[derive(Debug, Clone, Args)]
pub struct ControllerOnlyArgs {
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// Image of the agent the webhook injects: the controller acts only on pods whose agent comes from its repository.
    #[arg(long, env = "HEALTHBRIDGE_AGENT_IMAGE")]
    pub agent_image: String,
    /// More image repositories (or images) the controller trusts as the agent, as the webhook's flag of that name.
    #[arg(long, env = "HEALTHBRIDGE_ALLOWED_AGENT_IMAGES", value_delimiter = ',')]
    pub allowed_agent_images: Vec<String>,
    #[arg(
        long,
        env = "HEALTHBRIDGE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl Cli {
    pub fn log_format(&self) -> LogFormat {
        match &self.command {
            Command::Serve(a) => a.server.log_format,
            Command::Run(a) => a.server.log_format,
            Command::Controller(a) => a.log_format,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serve_needs_no_api_server_flags_and_fills_the_defaults() {
        let cli = Cli::try_parse_from([
            "healthbridge-webhook",
            "serve",
            "--tls-cert-file",
            "tls.crt",
            "--tls-key-file",
            "tls.key",
            "--listen",
            "127.0.0.1:8443",
            "--agent-image",
            "docker.io/healthbridge/agent:0.1.0",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.server.admin_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.server.agent_port, 13000);
        assert_eq!(args.server.native_sidecar, NativeSidecar::Auto);
    }

    #[test]
    fn a_cert_file_without_its_key_and_a_bad_quantity_are_refused() {
        let base = ["healthbridge-webhook", "serve", "--agent-image", "img"];
        assert!(
            Cli::try_parse_from(base.iter().copied().chain(["--tls-cert-file", "tls.crt"]))
                .is_err()
        );
        let error =
            Cli::try_parse_from(base.iter().copied().chain(["--agent-memory-limit", "lots"]))
                .unwrap_err();
        assert!(
            error.to_string().contains("not a Kubernetes quantity"),
            "{error}"
        );
        assert!(Cli::try_parse_from(base.iter().copied().chain(["--agent-port", "0"])).is_err());
    }

    #[test]
    fn run_takes_the_controller_flags_too() {
        let cli = Cli::try_parse_from([
            "healthbridge-webhook",
            "run",
            "--agent-image",
            "img",
            "--namespace",
            "hb",
            "--webhook-config",
            "hb-webhook",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.controller.lease_namespace, "hb");
        assert_eq!(args.webhook_config, "hb-webhook");
        assert_eq!(args.cert_secret, "healthbridge-webhook-tls");
    }
}
