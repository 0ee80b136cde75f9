//! Runs what was asked: the probe, or `serve` wiring configuration, the pod watch and the HTTP server together.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cli::Invocation;
use crate::config::{ChecksConfigError, ServeArgs};
use crate::endpoints::{EndpointChecker, EndpointConfigError};
use crate::exec::{ExecChecks, ExecConfigError};
use crate::metrics::Metrics;
use crate::pod_status::watch::{self, Followed};
use crate::pod_status::{Freshness, PodStatusSource};
use crate::probe;
use crate::server::{self, AppState, ServeError, admin_app, published};
use healthbridge_runtime::serve::{PlainHttp, serve as serve_http};
use healthbridge_runtime::{logging, shutdown};

/// Why the agent stopped; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl StartError {
    /// 2 for bad configuration, like an argument error; 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Run(error) if error.is_configuration() => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs the invocation to its end: the probe's verdict, or `serve` until SIGTERM.
pub fn start(invocation: Invocation) -> Result<ExitCode, StartError> {
    match invocation {
        Invocation::Probe(args) => Ok(probe::check(&args)),
        Invocation::GrpcHealthProbe(args) => Ok(probe::grpc_health_probe::check(&args)),
        Invocation::Serve {
            args,
            log_format,
            quiet,
        } => {
            logging::init_with_level(log_format, if quiet { "warn" } else { "info" });
            // A health sidecar needs little parallelism; on a big node one worker per core would only cost memory.
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .map_err(StartError::Runtime)?;
            // The signal listener is a task: it must be spawned inside the runtime.
            runtime.block_on(async { serve(args, shutdown::on_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration: the process exits 2, like an argument error.
    #[error(transparent)]
    Endpoints(#[from] EndpointConfigError),
    #[error(transparent)]
    Exec(#[from] ExecConfigError),
    #[error(transparent)]
    Checks(#[from] ChecksConfigError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl RunError {
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::Endpoints(_) | Self::Exec(_) | Self::Checks(_))
    }
}

/// Serves until `cancel`; returns once in-flight requests are drained.
pub async fn serve(mut args: ServeArgs, cancel: CancellationToken) -> Result<(), RunError> {
    let mut port = args.port;
    if !args.legacy.is_empty() {
        port = args.endpoints.apply_legacy_positional(&args.legacy)?.port;
    }
    let endpoints = EndpointChecker::new(&args.endpoints)?;
    args.validate_check_specs()?;
    let exec = ExecChecks::new(&args.exec)?;
    let sockets = args
        .sockets
        .validate(&args.endpoints.tls)
        .map_err(ChecksConfigError::from)?;
    let metrics = Arc::new(Metrics::default());
    let pod = pod_status_source(&args, &metrics, &cancel).await;
    let mut state = AppState::new(pod, args.unhealthy_status, metrics);
    if !endpoints.is_empty() {
        state.all_checks.push(Arc::new(endpoints));
    }
    if !exec.is_empty() {
        let handle = exec.spawn(Arc::clone(&state.metrics), cancel.clone());
        state.all_checks.push(Arc::new(handle.clone()));
        state.exec = Some(handle);
    }
    if !sockets.is_empty() {
        let handle = sockets.spawn(Arc::clone(&state.metrics), cancel.clone());
        state.all_checks.push(Arc::new(handle.clone()));
        state.sockets = Some(handle);
    }
    let listeners = server::bind(port).await?;
    let admin = server::bind_admin(args.listen.admin_address, args.listen.admin_port).await;
    let longest_check = args.endpoints.timeout;
    let published = serve_http(
        listeners,
        PlainHttp,
        published(state.clone()),
        args.listen.limits(longest_check),
        cancel.clone(),
    );
    match admin {
        Some(admin) => {
            let admin = serve_http(
                vec![admin],
                PlainHttp,
                admin_app(state),
                args.listen.admin_limits(longest_check),
                cancel,
            );
            futures::future::join(published, admin).await;
        }
        None => published.await,
    }
    Ok(())
}

/// The override when set; else a watch on the pod; else (no pod name or no API configuration) a source that says why.
pub async fn pod_status_source(
    args: &ServeArgs,
    metrics: &Arc<Metrics>,
    cancel: &CancellationToken,
) -> PodStatusSource {
    if let Some(healthy) = args.state_override.fixed() {
        tracing::info!(
            healthy,
            "HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE set: the API is not used"
        );
        return PodStatusSource::fixed(healthy);
    }
    let Some(name) = args.pod_name() else {
        let why = "no pod to watch: set POD_NAME from the downward API or HTTP_HEALTHCHECK_SIDECAR_TARGET_POD_OVERRIDE";
        tracing::error!("{why}");
        return PodStatusSource::unavailable(why);
    };
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(error) => {
            let why = format!(
                "no Kubernetes API configuration (not in a cluster and no usable KUBECONFIG: {error})"
            );
            tracing::error!("{why}");
            return PodStatusSource::unavailable(why);
        }
    };
    let namespace = args
        .pod_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = match watch::client(config) {
        Ok(client) => client,
        Err(error) => {
            let why = format!("cannot build a Kubernetes client: {error}");
            tracing::error!("{why}");
            return PodStatusSource::unavailable(why);
        }
    };
    tracing::info!(pod = name, %namespace, "watching the pod");
    let followed = Followed {
        name: name.to_owned(),
        namespace,
        target: args.target(),
    };
    let state = watch::spawn(
        client,
        followed,
        args.max_staleness,
        Arc::clone(metrics),
        cancel.clone(),
    );
    PodStatusSource::watching(
        state,
        Freshness {
            max_staleness: args.max_staleness,
            on_stale: args.on_stale,
        },
    )
}
