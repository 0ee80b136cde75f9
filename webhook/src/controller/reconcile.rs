//! The reconciler: applies what [`super::desired`] computes when the observed objects differ, reports with
//! Events, and backs off on failure.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::apply::{ensure_pod_label, ensure_service, remove_legacy_pod_service};
use super::cached::{CachedPod, PodMarks, PodView};
use super::claim::ClaimConflict;
use super::context::Context;
use super::desired::{
    ServiceScope, ServiceSettings, SettingsError, desired_service, is_injected, pod_identity,
    service_settings, service_target,
};
use super::events::{
    normal, publish, publish_once, ready_note, reference_to, warn_uninjected, warning,
};
use super::metrics::{Outcome, metrics};
use super::owner::workload_owner;
use super::rbac::{account_of, covering_role, remove_legacy_pod_rbac};
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
    #[error(transparent)]
    Claim(#[from] ClaimConflict),
    /// The last sync of the pod's ServiceAccount Role failed with this (every pod of the account reports it).
    #[error(transparent)]
    Shared(std::sync::Arc<ReconcileError>),
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
            Self::Claim(_) => Outcome::Conflict,
            Self::Api { .. } => Outcome::Error,
            Self::Shared(error) => error.outcome(),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NodePortConflict { .. } => "NodePortConflict",
            Self::Forbidden { .. } => "Forbidden",
            Self::Claim(conflict) => conflict.reason(),
            Self::Api { .. } => "ReconcileFailed",
            Self::Shared(error) => error.reason(),
        }
    }

    /// The error itself, through a shared one.
    pub fn root(&self) -> &Self {
        match self {
            Self::Shared(error) => error.root(),
            other => other,
        }
    }
}

/// Reconciles one pod, records the outcome and reports failures as Events.
pub async fn reconcile(pod: Arc<CachedPod>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
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
            // The object left unchanged hears of the claim too: its owner sees who tried to take it.
            if let ReconcileError::Claim(conflict) = failure.error.root() {
                publish(&ctx, &event, &claimed_object(conflict)).await;
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

async fn reconcile_pod(pod: &CachedPod, ctx: &Context) -> Result<(Outcome, Action), Failure> {
    if ctx.missed_by_webhook(pod) {
        warn_uninjected(pod, ctx).await;
        return Ok((Outcome::Skipped, Action::await_change()));
    }
    if !is_injected(pod) || pod.metadata.deletion_timestamp.is_some() || ctx.never_injects(pod) {
        return Ok((Outcome::Skipped, Action::await_change()));
    }
    let Ok(identity) = pod_identity(pod) else {
        return Ok((Outcome::Skipped, Action::await_change()));
    };
    // The marker is only a claim: act only on the agent as the webhook injects it, and publish only its port.
    let agent = match pod.verify_agent(&ctx.agent_images) {
        Ok(agent) => agent,
        Err(untrusted) => {
            // No longer trusted (an update changed the agent): its name leaves the account's Role.
            if covering_role(ctx, &identity).is_some() {
                ctx.accounts.mark(account_of(&identity));
            }
            let note = format!(
                "{}={} is set, but this is not a pod the healthbridge webhook injected: {untrusted}. healthbridge creates nothing for it; remove the annotation and opt in with {}: \"true\"",
                keys::STATUS,
                keys::STATUS_INJECTED,
                keys::INJECT
            );
            publish(ctx, &warning("Untrusted", &note), &pod.object_ref(&())).await;
            return Ok((Outcome::Untrusted, Action::await_change()));
        }
    };
    let mut changed = false;
    // The account's Role is written by the coalescing sync (one write per ServiceAccount per window, not per
    // pod); a pod that is not in it yet asks for a sync and is reconciled again after it.
    let role = covering_role(ctx, &identity);
    let uid = identity.uid.clone();
    match &role {
        Some(_) => {
            changed |= ctx
                .awaiting_rbac
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&uid);
            changed |= remove_legacy_pod_rbac(ctx, &identity).await?;
        }
        None => {
            ctx.awaiting_rbac
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(uid);
            let account = account_of(&identity);
            // A failed sync is reported by its pods and retried at their backoff, not at once.
            if let Some(failure) = ctx.accounts.failure(&account) {
                ctx.accounts.mark(account);
                return Err(ReconcileError::Shared(failure).into());
            }
            ctx.accounts.request(account, ObjectRef::from_obj(pod));
        }
    }

    let own = match service_settings(pod, ctx.node_port_range) {
        Ok(settings) => settings,
        Err(invalid) => return invalid_annotation(pod, ctx, &invalid).await,
    };
    let (settings, workload) = match own.scope {
        ServiceScope::Pod => (
            ServiceSettings {
                port: agent.port,
                ..own
            },
            None,
        ),
        ServiceScope::Group => {
            let workload = workload_owner(ctx, pod, &identity).await?;
            // A group's Service follows the newest pod of the group's owner, so every pod of the workload computes
            // the same Service and a rollout that changes an annotation moves it once; pods of another owner that
            // claim the group never count.
            let (source, port) = newest_of_owner(pod, ctx, workload.as_ref())
                .await?
                .unwrap_or_else(|| (Arc::new(pod.clone()), agent.port));
            match service_settings(source.as_ref(), ctx.node_port_range) {
                Ok(settings) => (ServiceSettings { port, ..settings }, workload),
                Err(invalid) => return invalid_annotation(pod, ctx, &invalid).await,
            }
        }
    };
    let target = match service_target(pod, &identity, settings.scope, workload.clone()) {
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
    if settings.scope == ServiceScope::Pod {
        changed |= remove_legacy_pod_service(ctx, &identity).await?;
    }

    if let (true, Some(role)) = (changed, &role) {
        let note = ready_note(&identity, role, &target.name, node_port, &settings);
        publish_once(ctx, &normal("Ready", &note), &pod.object_ref(&())).await;
    }
    Ok((Outcome::Success, Action::requeue(RESYNC)))
}

async fn invalid_annotation(
    pod: &CachedPod,
    ctx: &Context,
    invalid: &SettingsError,
) -> Result<(Outcome, Action), Failure> {
    let note = format!(
        "{invalid}. The agent's Role and RoleBinding are kept; the Service waits for a valid annotation."
    );
    publish(
        ctx,
        &warning("InvalidAnnotation", &note),
        &pod.object_ref(&()),
    )
    .await;
    Ok((Outcome::Invalid, Action::await_change()))
}

/// The newest live pod of `pod`'s group that the webhook injected and that has the same workload owner (by creation
/// time, then name: deterministic), with its agent's port. Candidates are checked newest first, so this usually
/// resolves one owner, from the cache.
async fn newest_of_owner(
    pod: &CachedPod,
    ctx: &Context,
    workload: Option<&OwnerReference>,
) -> Result<Option<(Arc<CachedPod>, u16)>, ReconcileError> {
    let (Some(namespace), Some(group)) = (pod.namespace(), pod.label(keys::GROUP_LABEL)) else {
        return Ok(None);
    };
    let mut candidates: Vec<Arc<CachedPod>> = ctx
        .pods_in_group(&namespace, group)
        .into_iter()
        .filter(|other| {
            is_injected(other.as_ref())
                && other.metadata.deletion_timestamp.is_none()
                && shares_group_service(other.annotation(keys::SERVICE_SCOPE))
        })
        .collect();
    candidates.sort_by(|a, b| {
        let key = |pod: &CachedPod| {
            (
                pod.metadata.creation_timestamp.as_ref().map(|time| time.0),
                pod.metadata.name.clone(),
            )
        };
        key(b).cmp(&key(a))
    });
    for candidate in candidates {
        let Ok(agent) = candidate.verify_agent(&ctx.agent_images) else {
            continue;
        };
        let same_owner = if candidate.metadata.uid == pod.metadata.uid {
            true
        } else {
            let Ok(identity) = pod_identity(candidate.as_ref()) else {
                continue;
            };
            let owner = workload_owner(ctx, &candidate, &identity).await?;
            owner.as_ref().map(|owner| &owner.uid) == workload.map(|owner| &owner.uid)
        };
        if same_owner {
            return Ok(Some((candidate, agent.port)));
        }
    }
    Ok(None)
}

/// The object a claim conflict left unchanged, as the regarding object of an Event.
fn claimed_object(conflict: &ClaimConflict) -> ObjectReference {
    let (kind, namespace, name) = conflict.object();
    let api_version = match kind {
        "Role" | "RoleBinding" => "rbac.authorization.k8s.io/v1",
        _ => "v1",
    };
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectReference::default()
    }
}

/// Backoff for failures: slow for what needs a person (a taken port, a missing permission), exponential otherwise.
pub fn error_policy(pod: Arc<CachedPod>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
    let count = failures
        .entry(ObjectRef::from_obj(pod.as_ref()))
        .or_insert(0);
    *count = count.saturating_add(1);
    Action::requeue(retry_after(error, *count))
}

/// Delay before retrying after the `attempt`-th consecutive failure.
pub fn retry_after(error: &ReconcileError, attempt: u32) -> Duration {
    match error.root() {
        ReconcileError::NodePortConflict { .. }
        | ReconcileError::Forbidden { .. }
        | ReconcileError::Claim(_) => SLOW_RETRY,
        ReconcileError::Api { .. } => FIRST_BACKOFF
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF),
        ReconcileError::Shared(_) => MAX_BACKOFF,
    }
}
