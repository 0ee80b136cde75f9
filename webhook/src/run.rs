//! The wiring behind each subcommand: admission server, controller, certificates, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, AdmissionState};
use crate::certs::{self, SelfManaged};
use crate::cli::{Cli, Command, ServerArgs};
use crate::config::{
    AgentResources, InjectionConfig, NativeSidecar, supports_native_sidecars, supports_sleep_action,
};
use crate::controller::{self, ControllerError};
use crate::metrics::Metrics;
use crate::nodes::{FIRST_DECISION_TIMEOUT, SidecarSupport, follow_nodes};
use crate::server::{self, Readiness};
use crate::tls::{CertFiles, CertStore, TlsError};
use crate::trust::AgentImages;

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
            let cfg = injection_config(&args.server, args.namespace.as_deref());
            // Without an API server the nodes are unknown: `auto` assumes a supported cluster (every kubelet ≥ 1.29);
            // `--native-sidecar never` is the choice for older nodes.
            let native = SidecarSupport::fixed(true);
            // Likewise every kubelet ≥ 1.30 for the preStop sleep of `drain-delay`.
            let metrics = Arc::new(Metrics::new());
            serve_admission(&args.server, cfg, native, true, metrics, None, shutdown).await
        }
        Command::Run(args) => {
            let client = kube::Client::try_default()
                .await
                .map_err(RunError::Kubeconfig)?;
            let namespace = args.controller.lease_namespace.clone();
            let mut cfg = injection_config(&args.server, Some(&namespace));
            cfg.node_port_range = args.controller.node_port_range;
            let metrics = Arc::new(Metrics::with_controller());
            // Read once: both the native-sidecar and the preStop-sleep decisions follow it.
            let version = match client.apiserver_version().await {
                Ok(info) => Some(info),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the API server version; the nodes' kubelet versions decide native sidecars alone, and the preStop sleep action is assumed");
                    None
                }
            };
            let apiserver_native = version
                .as_ref()
                .map(|info| supports_native_sidecars(&info.major, &info.minor));
            let native =
                native_sidecar_support(&client, &cfg, apiserver_native, &metrics, &shutdown).await;
            // The preStop sleep action (drain-delay) follows the API server's version: a kubelet older than it
            // ignores the hook (the pod still stops, only without the delay), it never leaves a pod stuck.
            let sleep_action = version
                .as_ref()
                .is_none_or(|info| supports_sleep_action(&info.major, &info.minor));
            let self_managed = args.server.tls_cert_file.is_none().then(|| SelfManaged {
                namespace,
                service_name: args.service_name.clone(),
                secret_name: args.cert_secret.clone(),
                webhook_config: args.webhook_config.clone(),
            });
            let controller = tokio::spawn(controller::run(
                args.controller.clone(),
                cfg.agent_images.clone(),
                client.clone(),
                shutdown.clone(),
            ));
            let served = serve_admission(
                &args.server,
                cfg,
                native,
                sleep_action,
                metrics,
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
            let images = AgentImages::new(&args.agent_image, &args.allowed_agent_images);
            Ok(controller::run(args.controller, images, client, shutdown).await?)
        }
    }
}

/// What `--native-sidecar auto` chooses, kept current from the nodes' kubelet versions (and the API server's
/// version) by a Node watch. `always`/`never` need no watch. Waits a bounded time for the first decision so that
/// the first admissions already follow the nodes.
async fn native_sidecar_support(
    client: &kube::Client,
    cfg: &InjectionConfig,
    apiserver: Option<bool>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> SidecarSupport {
    if cfg.native_sidecar != NativeSidecar::Auto {
        return SidecarSupport::fixed(cfg.native_sidecar == NativeSidecar::Always);
    }
    let support = SidecarSupport::fixed(false);
    let (first, mut first_seen) = tokio::sync::watch::channel(false);
    tokio::spawn(follow_nodes(
        kube::Api::all(client.clone()),
        apiserver,
        support.clone(),
        metrics.clone(),
        first,
        shutdown.clone(),
    ));
    if tokio::time::timeout(FIRST_DECISION_TIMEOUT, first_seen.wait_for(|seen| *seen))
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?FIRST_DECISION_TIMEOUT, "the nodes were not listed in time; injecting regular containers until they are");
    }
    support
}

async fn serve_admission(
    args: &ServerArgs,
    cfg: InjectionConfig,
    cluster_supports_native_sidecar: SidecarSupport,
    cluster_supports_sleep_action: bool,
    metrics: Arc<Metrics>,
    self_managed: Option<(kube::Client, SelfManaged)>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
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
        cluster_supports_sleep_action,
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

/// The injection configuration the flags describe, excluding `own_namespace` too.
pub fn injection_config(args: &ServerArgs, own_namespace: Option<&str>) -> InjectionConfig {
    let mut cfg = InjectionConfig::new(args.agent_image.clone(), own_namespace);
    cfg.agent_images = AgentImages::new(&args.agent_image, &args.allowed_agent_images);
    cfg.agent_port = args.agent_port;
    cfg.native_sidecar = args.native_sidecar;
    cfg.resources = AgentResources {
        cpu_request: args.agent_cpu_request.clone(),
        cpu_limit: args.agent_cpu_limit.clone(),
        memory_request: args.agent_memory_request.clone(),
        memory_limit: args.agent_memory_limit.clone(),
    };
    cfg.excluded_namespaces.extend(
        args.exclude_namespaces
            .iter()
            .filter(|ns| !ns.is_empty())
            .cloned(),
    );
    cfg
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_flags_make_the_injection_config_excluding_the_own_namespace() {
        let cli = Cli::try_parse_from([
            "healthbridge-webhook",
            "serve",
            "--tls-cert-file",
            "tls.crt",
            "--tls-key-file",
            "tls.key",
            "--agent-image",
            "docker.io/healthbridge/agent:0.1.0",
            "--exclude-namespaces",
            "batch,,ci",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let cfg = injection_config(&args.server, Some("hb"));
        assert_eq!(cfg.agent_port, 13000);
        assert_eq!(cfg.native_sidecar, NativeSidecar::Auto);
        for namespace in ["hb", "kube-system", "batch", "ci"] {
            assert!(cfg.is_excluded(namespace), "{namespace}");
        }
        assert!(!cfg.is_excluded(""));
    }
}
