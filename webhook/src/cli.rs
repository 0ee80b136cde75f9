//! Command line of `healthbridge-webhook` (`serve`, `run`, `controller`) and the wiring behind each subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, AdmissionState};
use crate::certs::{self, SelfManaged};
use crate::config::{
    AgentResources, DEFAULT_AGENT_PORT, InjectionConfig, NativeSidecar, supports_native_sidecars,
};
use crate::controller::{self, ControllerArgs, ControllerError};
use crate::metrics::Metrics;
use crate::server::{self, Readiness};
use crate::tls::{CertFiles, CertStore, TlsError};
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
    crate::annotations::parse_quantity(value)
        .ok_or_else(|| format!("{value:?} is not a Kubernetes quantity (e.g. 10m, 0.5, 32Mi)"))
}

impl ServerArgs {
    /// The injection configuration these flags describe, excluding `own_namespace` too.
    pub fn injection_config(&self, own_namespace: Option<&str>) -> InjectionConfig {
        let mut cfg = InjectionConfig::new(self.agent_image.clone(), own_namespace);
        cfg.agent_port = self.agent_port;
        cfg.native_sidecar = self.native_sidecar;
        cfg.resources = AgentResources {
            cpu_request: self.agent_cpu_request.clone(),
            cpu_limit: self.agent_cpu_limit.clone(),
            memory_request: self.agent_memory_request.clone(),
            memory_limit: self.agent_memory_limit.clone(),
        };
        cfg.excluded_namespaces.extend(
            self.exclude_namespaces
                .iter()
                .filter(|ns| !ns.is_empty())
                .cloned(),
        );
        cfg
    }
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

/// Why the webhook stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("no Kubernetes API configuration (in-cluster or KUBECONFIG): {0}")]
    Kubeconfig(#[source] kube::Error),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("admin server failed: {0}")]
    Admin(#[source] std::io::Error),
}

/// Runs the chosen subcommand until `shutdown` is cancelled.
pub async fn execute(cli: Cli, shutdown: CancellationToken) -> Result<(), RunError> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.server.injection_config(args.namespace.as_deref());
            // Without an API server the version is unknown; clusters before 1.29 are out of support.
            let native = true;
            serve_admission(&args.server, cfg, native, Metrics::new(), None, shutdown).await
        }
        Command::Run(args) => {
            let client = kube::Client::try_default()
                .await
                .map_err(RunError::Kubeconfig)?;
            let namespace = args.controller.lease_namespace.clone();
            let cfg = args.server.injection_config(Some(&namespace));
            let native = match client.apiserver_version().await {
                Ok(info) => supports_native_sidecars(&info.major, &info.minor),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the API server version; assuming native sidecars are supported");
                    true
                }
            };
            let self_managed = args.server.tls_cert_file.is_none().then(|| SelfManaged {
                namespace,
                service_name: args.service_name.clone(),
                secret_name: args.cert_secret.clone(),
                webhook_config: args.webhook_config.clone(),
            });
            let controller = tokio::spawn(controller::run(
                args.controller.clone(),
                client.clone(),
                shutdown.clone(),
            ));
            let served = serve_admission(
                &args.server,
                cfg,
                native,
                Metrics::with_controller(),
                self_managed.map(|s| (client, s)),
                shutdown.clone(),
            )
            .await;
            shutdown.cancel();
            match controller.await {
                Ok(result) => result?,
                Err(error) => tracing::error!(%error, "controller task failed"),
            }
            served
        }
        Command::Controller(args) => {
            let client = kube::Client::try_default()
                .await
                .map_err(RunError::Kubeconfig)?;
            Ok(controller::run(args.controller, client, shutdown).await?)
        }
    }
}

async fn serve_admission(
    args: &ServerArgs,
    cfg: InjectionConfig,
    cluster_supports_native_sidecar: bool,
    metrics: Metrics,
    self_managed: Option<(kube::Client, SelfManaged)>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(metrics);
    let readiness = Readiness::new();
    let store = CertStore::new();
    let tls = store.server_config()?;
    match (&args.tls_cert_file, &args.tls_key_file, self_managed) {
        (Some(cert), Some(key), _) => {
            let mut files = CertFiles::new(cert.clone(), key.clone());
            files.reload_if_changed(&store)?;
            crate::tls::record_expiry(&store, &metrics);
            readiness.set_ready(true);
            tokio::spawn(crate::tls::watch_files(
                files,
                store.clone(),
                metrics.clone(),
                args.tls_reload_interval,
                shutdown.clone(),
            ));
        }
        (_, _, Some((client, self_managed))) => {
            tokio::spawn(certs::run(
                client,
                self_managed,
                store.clone(),
                metrics.clone(),
                readiness.clone(),
                shutdown.clone(),
            ));
        }
        _ => {
            return Err(
                TlsError::Certificate("give --tls-cert-file and --tls-key-file".into()).into(),
            );
        }
    }
    let listener =
        healthbridge_runtime::serve::listen(args.listen).map_err(|source| RunError::Listen {
            addr: args.listen,
            source,
        })?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.admin_listen,
            source,
        })?;
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, image = %cfg.agent_image, "admission server started");
    let state = Arc::new(AdmissionState {
        cfg,
        metrics: metrics.clone(),
        cluster_supports_native_sidecar,
    });
    let admin = tokio::spawn(server::serve_admin(
        admin_listener,
        server::admin_app(metrics, readiness),
        shutdown.clone(),
    ));
    server::serve_tls(
        listener,
        tls,
        admission::app(state),
        shutdown.clone(),
        args.limits.limits(args.drain_timeout),
    )
    .await;
    shutdown.cancel();
    if let Err(error) = admin.await {
        tracing::error!(%error, "admin server task failed");
    }
    Ok(())
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
        let cfg = args.server.injection_config(Some("hb"));
        assert_eq!(cfg.agent_port, 13000);
        assert_eq!(cfg.native_sidecar, NativeSidecar::Auto);
        assert!(cfg.is_excluded("hb") && cfg.is_excluded("kube-system"));
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
