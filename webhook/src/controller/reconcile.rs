//! The reconciler: applies what [`super::desired`] computes when the observed objects differ, reports with
//! Events, and backs off on failure.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::apply::{ensure, ensure_pod_label, ensure_service};
use super::context::Context;
use super::desired::{
    ServiceScope, desired_role, desired_role_binding, desired_service, is_injected, pod_identity,
    service_settings, service_target,
};
use super::events::{normal, publish, ready_note, reference_to, warn_uninjected, warning};
use super::metrics::{Kind, Outcome, metrics};
use super::owner::workload_owner;
use crate::keys;
use healthbridge_contract::service::shares_group_service;

/// How long a healthy pod waits before its objects are checked again (reads only: from the caches).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry after a nodePort conflict or a missing permission: a person has to act first.
pub const SLOW_RETRY: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a reconcile failed; every message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(
        "nodePort {node_port} pinned by annotation {key} for Service {namespace}/{service} is already allocated to another Service: set {key} to a free port or remove it to let Kubernetes pick one"
    )]
    NodePortConflict {
        node_port: u16,
        key: &'static str,
        namespace: String,
        service: String,
    },
    #[error(
        "the controller may not {verb} {resource} in namespace {namespace}: grant it in the controller's ClusterRole (see docs/controller.md); the API server said: {message}"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        message: String,
    },
    #[error("could not {verb} {resource} {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Self::NodePortConflict { .. } => Outcome::NodePortConflict,
            Self::Forbidden { .. } => Outcome::Forbidden,
            Self::Api { .. } => Outcome::Error,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NodePortConflict { .. } => "NodePortConflict",
            Self::Forbidden { .. } => "Forbidden",
            Self::Api { .. } => "ReconcileFailed",
        }
    }
}

/// Reconciles one pod, records the outcome and reports failures as Events.
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    metrics().in_flight.inc();
    let result = reconcile_pod(&pod, &ctx).await;
    metrics().in_flight.dec();
    match &result {
        Ok((outcome, _)) => {
            metrics().reconciled(*outcome);
            ctx.failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&ObjectRef::from_obj(pod.as_ref()));
        }
        Err(failure) => {
            metrics().reconciled(failure.error.outcome());
            tracing::warn!(pod = %pod.name_any(), namespace = pod.namespace().unwrap_or_default(), error = %failure.error, "reconcile failed");
            let event = warning(failure.error.reason(), &failure.error.to_string());
            publish(&ctx, &event, &pod.object_ref(&())).await;
            if let (ReconcileError::NodePortConflict { .. }, Some(owner)) =
                (&failure.error, &failure.owner)
            {
                publish(&ctx, &event, &reference_to(owner, pod.namespace())).await;
            }
        }
    }
    result
        .map(|(_, action)| action)
        .map_err(|failure| failure.error)
}

/// A failed reconcile and the workload to tell as well.
struct Failure {
    error: ReconcileError,
    owner: Option<OwnerReference>,
}

impl From<ReconcileError> for Failure {
    fn from(error: ReconcileError) -> Self {
        Self { error, owner: None }
    }
}

async fn reconcile_pod(pod: &Pod, ctx: &Context) -> Result<(Outcome, Action), Failure> {
    if ctx.missed_by_webhook(pod) {
        warn_uninjected(pod, ctx).await;
        return Ok((Outcome::Skipped, Action::await_change()));
    }
    if !is_injected(pod) || pod.metadata.deletion_timestamp.is_some() {
        return Ok((Outcome::Skipped, Action::await_change()));
    }
    let Ok(identity) = pod_identity(pod) else {
        return Ok((Outcome::Skipped, Action::await_change()));
    };
    let mut changed = false;
    changed |= ensure(
        ctx,
        &ctx.roles,
        Kind::Role,
        "roles",
        &desired_role(&identity),
    )
    .await?;
    changed |= ensure(
        ctx,
        &ctx.role_bindings,
        Kind::RoleBinding,
        "rolebindings",
        &desired_role_binding(&identity),
    )
    .await?;

    // A group's Service follows its newest pod, so every pod of the group computes the same Service and a
    // rollout that changes an annotation moves the Service once, without flapping between old and new pods.
    let own = service_settings(pod, ctx.node_port_range);
    let newest = match &own {
        Ok(settings) if settings.scope == ServiceScope::Group => {
            newest_in_group(pod, ctx).filter(|newest| newest.metadata.uid != pod.metadata.uid)
        }
        _ => None,
    };
    let (source, settings) = match &newest {
        Some(newest) => (
            newest.as_ref(),
            service_settings(newest, ctx.node_port_range),
        ),
        None => (pod, own),
    };
    let settings = match settings {
        Ok(settings) => settings,
        Err(invalid) => {
            let note = format!(
                "{invalid}. The Role and RoleBinding are in place; the Service waits for a valid annotation."
            );
            publish(
                ctx,
                &warning("InvalidAnnotation", &note),
                &pod.object_ref(&()),
            )
            .await;
            return Ok((Outcome::Invalid, Action::await_change()));
        }
    };
    let source_identity = pod_identity(source).unwrap_or_else(|_| identity.clone());
    let workload = match settings.scope {
        ServiceScope::Group => workload_owner(ctx, source, &source_identity).await?,
        ServiceScope::Pod => None,
    };
    let target = match service_target(source, &source_identity, settings.scope, workload.clone()) {
        Ok(target) => target,
        Err(missing) => {
            publish(
                ctx,
                &warning("NoGroup", &missing.to_string()),
                &pod.object_ref(&()),
            )
            .await;
            return Ok((Outcome::Invalid, Action::await_change()));
        }
    };
    if settings.scope == ServiceScope::Pod {
        changed |= ensure_pod_label(ctx, pod, &identity).await?;
    }
    let service = desired_service(&target, &settings);
    let (service_changed, node_port) =
        ensure_service(ctx, &service, &settings)
            .await
            .map_err(|error| Failure {
                error,
                owner: workload,
            })?;
    changed |= service_changed;

    if changed {
        let note = ready_note(&identity, &target.name, node_port, &settings);
        publish(ctx, &normal("Ready", &note), &pod.object_ref(&())).await;
    }
    Ok((Outcome::Success, Action::requeue(RESYNC)))
}

/// The newest live, injected pod of the same group (by creation time, then name: deterministic).
fn newest_in_group(pod: &Pod, ctx: &Context) -> Option<Arc<Pod>> {
    let namespace = pod.namespace()?;
    let group = pod.labels().get(keys::GROUP_LABEL)?;
    ctx.pods_in_group(&namespace, group)
        .into_iter()
        .filter(|other| {
            is_injected(other)
                && other.metadata.deletion_timestamp.is_none()
                && shares_group_service(
                    other
                        .annotations()
                        .get(keys::SERVICE_SCOPE)
                        .map(String::as_str),
                )
        })
        .max_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|time| time.0),
                a.metadata.name.as_ref(),
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|time| time.0),
                    b.metadata.name.as_ref(),
                ))
        })
}

/// Backoff for failures: slow for what needs a person (a taken port, a missing permission), exponential otherwise.
pub fn error_policy(pod: Arc<Pod>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
    let count = failures
        .entry(ObjectRef::from_obj(pod.as_ref()))
        .or_insert(0);
    *count = count.saturating_add(1);
    Action::requeue(retry_after(error, *count))
}

/// Delay before retrying after the `attempt`-th consecutive failure.
pub fn retry_after(error: &ReconcileError, attempt: u32) -> Duration {
    match error {
        ReconcileError::NodePortConflict { .. } | ReconcileError::Forbidden { .. } => SLOW_RETRY,
        ReconcileError::Api { .. } => FIRST_BACKOFF
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF),
    }
}
