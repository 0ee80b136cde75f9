//! The controller: per-pod least-privilege RBAC and per-group NodePort Services for injected pods.

pub mod desired;
pub mod leader;
pub mod metrics;
pub mod names;

use clap::Args;
use tokio_util::sync::CancellationToken;

/// Flags of the controller (also env vars with the `HEALTHBRIDGE_` prefix).
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Name of the coordination.k8s.io Lease that elects the active replica.
    #[arg(
        long,
        env = "HEALTHBRIDGE_LEASE_NAME",
        default_value = "healthbridge-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease: the controller's own namespace (downward API).
    #[arg(
        long = "namespace",
        env = "POD_NAMESPACE",
        default_value = "healthbridge-system"
    )]
    pub lease_namespace: String,
    /// Holder identity written into the Lease: the pod name (downward API), else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(
    args: ControllerArgs,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let _ = (args, client);
    shutdown.cancelled().await;
    Ok(())
}
