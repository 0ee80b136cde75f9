//! The agents' RBAC: per (namespace, ServiceAccount) of injected pods one Role listing their names and one
//! RoleBinding to that ServiceAccount (more of each only past [`super::desired::MAX_NAMES_PER_ROLE`] pods), so a namespace holds
//! as many RoleBindings as it has ServiceAccounts, not pods. Pods ask for their account to be synced; a sync runs
//! once per account per [`WINDOW`], whatever the number of pod events, and writes only what differs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::apply::{Call, ensure};
use super::cached::{CachedPod, PodView};
use super::context::Context;
use super::desired::{
    PodIdentity, SERVICE_ACCOUNT_ANNOTATION, desired_agent_rbac, granted_pods, is_injected,
    pod_identity,
};
use super::metrics::{Kind, Verb, metrics};
use super::names::{agent_rbac_name, object_name};
use super::reconcile::ReconcileError;

/// How long pod requests for one account are gathered before its Role is written: a rollout of 100 pods writes
/// the Role a few times, not 100 times.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Accounts synced at the same time.
const CONCURRENCY: usize = 4;

/// A ServiceAccount of injected pods: (namespace, name).
pub type Account = (String, String);

/// The accounts waiting for a sync, the pods to reconcile again after it, and the last failure of each account.
#[derive(Default)]
pub struct AgentAccounts {
    pending: Mutex<HashMap<Account, Vec<ObjectRef<CachedPod>>>>,
    wake: Notify,
    failures: Mutex<HashMap<Account, Arc<ReconcileError>>>,
    requeue: Option<UnboundedSender<ObjectRef<CachedPod>>>,
}

impl AgentAccounts {
    /// Pods that waited for their account are sent to `requeue` after its sync (the controller reconciles them).
    pub fn with_requeue(requeue: UnboundedSender<ObjectRef<CachedPod>>) -> Self {
        Self {
            requeue: Some(requeue),
            ..Self::default()
        }
    }

    /// Asks for a sync of `account` (a pod went, a Role changed): nobody waits for it.
    pub fn mark(&self, account: Account) {
        self.lock_pending().entry(account).or_default();
        self.wake.notify_one();
    }

    /// Asks for a sync of `account` that `pod` waits for: the pod is reconciled again once it ran.
    pub fn request(&self, account: Account, pod: ObjectRef<CachedPod>) {
        self.lock_pending().entry(account).or_default().push(pod);
        self.wake.notify_one();
    }

    /// The last sync of `account` failed with this; cleared by the next one that succeeds.
    pub fn failure(&self, account: &Account) -> Option<Arc<ReconcileError>> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .cloned()
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Account, Vec<ObjectRef<CachedPod>>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(
        &self,
        account: Account,
        result: Result<bool, ReconcileError>,
        waiting: Vec<ObjectRef<CachedPod>>,
    ) {
        {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(_) => failures.remove(&account),
                Err(error) => {
                    tracing::warn!(namespace = %account.0, service_account = %account.1, %error, "could not sync the agents' Role");
                    failures.insert(account, Arc::new(error))
                }
            };
        }
        if let Some(requeue) = &self.requeue {
            for pod in waiting {
                let _ = requeue.unbounded_send(pod);
            }
        }
    }
}

/// The account an agent Role or RoleBinding is for, from its annotation.
pub fn account_annotated(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Account> {
    let account = meta.annotations.as_ref()?.get(SERVICE_ACCOUNT_ANNOTATION)?;
    Some((meta.namespace.clone()?, account.clone()))
}

/// Key of the pod's account.
pub fn account_of(identity: &PodIdentity) -> Account {
    (identity.namespace.clone(), identity.service_account.clone())
}

/// The cached Role of the pod's account that grants its name, when that Role's RoleBinding to the account is in
/// place too.
pub fn covering_role(ctx: &Context, identity: &PodIdentity) -> Option<String> {
    (0..)
        .map_while(|chunk| {
            let name = agent_rbac_name(&identity.service_account, chunk);
            let reference = ObjectRef::new(&name).within(&identity.namespace);
            ctx.roles.get(&reference).map(|role| (role, name))
        })
        .find(|(role, name)| {
            granted_pods(role).binary_search(&identity.name).is_ok()
                && ctx
                    .role_bindings
                    .get(&ObjectRef::new(name).within(&identity.namespace))
                    .is_some_and(|binding| {
                        binding.subjects.as_deref().is_some_and(|subjects| {
                            subjects.iter().any(|subject| {
                                subject.kind == "ServiceAccount"
                                    && subject.name == identity.service_account
                            })
                        })
                    })
        })
        .map(|(_, name)| name)
}

/// The pods whose names the account's Roles grant: injected, carrying the verified agent, running as that very
/// ServiceAccount in that namespace (its own `spec.serviceAccountName`; nothing a pod author writes elsewhere
/// counts), terminating ones included (their agent still reports the drain).
pub fn granted_names(ctx: &Context, account: &Account) -> Vec<String> {
    let (namespace, service_account) = account;
    let mut names: Vec<String> = ctx
        .pods_of_account(namespace, service_account)
        .into_iter()
        .filter(|pod| {
            is_injected(pod.as_ref())
                && !ctx.never_injects(pod.as_ref())
                && pod.verify_agent(&ctx.agent_images).is_ok()
        })
        .filter_map(|pod| pod_identity(pod.as_ref()).ok())
        .filter(|identity| {
            &identity.namespace == namespace && &identity.service_account == service_account
        })
        .map(|identity| identity.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Brings the account's Roles and RoleBindings to what its pods need: applies the chunks that differ, deletes
/// those no longer needed (all of them after the last pod). True when it wrote.
pub async fn sync_account(ctx: &Context, account: &Account) -> Result<bool, ReconcileError> {
    let (namespace, service_account) = account;
    let names = granted_names(ctx, account);
    let desired = desired_agent_rbac(namespace, service_account, names.iter().map(String::as_str));
    let mut wrote = false;
    for rbac in &desired {
        // The Role before its binding: a binding to a missing Role grants nothing, but says nothing either.
        wrote |= ensure(ctx, &ctx.roles, Kind::Role, "roles", &rbac.role).await?;
        wrote |= ensure(
            ctx,
            &ctx.role_bindings,
            Kind::RoleBinding,
            "rolebindings",
            &rbac.binding,
        )
        .await?;
    }
    let keep: Vec<String> = desired.iter().map(|rbac| rbac.role.name_any()).collect();
    let of_account = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace.as_str())
            && meta
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(SERVICE_ACCOUNT_ANNOTATION))
                == Some(service_account)
            && meta.name.as_ref().is_some_and(|name| !keep.contains(name))
    };
    // Bindings first: a Role without its binding grants nothing.
    for binding in ctx
        .role_bindings
        .state()
        .into_iter()
        .filter(|binding| of_account(&binding.metadata))
    {
        wrote |= delete::<RoleBinding>(ctx, Kind::RoleBinding, "rolebindings", &binding.metadata)
            .await?;
    }
    for role in ctx
        .roles
        .state()
        .into_iter()
        .filter(|role| of_account(&role.metadata))
    {
        wrote |= delete::<Role>(ctx, Kind::Role, "roles", &role.metadata).await?;
    }
    Ok(wrote)
}

/// Deletes the per-pod Role and RoleBinding `<pod>-healthbridge` of older versions, once the account's Role
/// grants the pod: only when labelled managed by healthbridge (the caches hold nothing else) and owned by this pod.
pub async fn remove_legacy_pod_rbac(
    ctx: &Context,
    identity: &PodIdentity,
) -> Result<bool, ReconcileError> {
    let name = object_name(&identity.name);
    let legacy = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|owner| owner.kind == "Pod" && owner.uid == identity.uid)
            && meta
                .annotations
                .as_ref()
                .is_none_or(|annotations| !annotations.contains_key(SERVICE_ACCOUNT_ANNOTATION))
    };
    let mut wrote = false;
    if let Some(binding) = ctx
        .role_bindings
        .get(&ObjectRef::new(&name).within(&identity.namespace))
        .filter(|binding| legacy(&binding.metadata))
    {
        wrote |= delete::<RoleBinding>(ctx, Kind::RoleBinding, "rolebindings", &binding.metadata)
            .await?;
    }
    if let Some(role) = ctx
        .roles
        .get(&ObjectRef::new(&name).within(&identity.namespace))
        .filter(|role| legacy(&role.metadata))
    {
        wrote |= delete::<Role>(ctx, Kind::Role, "roles", &role.metadata).await?;
    }
    Ok(wrote)
}

/// Deletes a cached object with UID and resourceVersion preconditions: one re-created or changed since it was
/// seen is left alone (its watch event brings the account back for another look).
async fn delete<K>(
    ctx: &Context,
    kind: Kind,
    resource: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<bool, ReconcileError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            metrics().wrote(kind, Verb::Delete);
            Ok(true)
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
        Err(err) => Err(Call {
            verb: "delete",
            resource,
            namespace: &namespace,
            name: &name,
        }
        .error(err)),
    }
}

/// Syncs every account asked for so far; returns how many. What the background loop runs once per window.
pub async fn sync_pending(ctx: &Context) -> usize {
    let batch: Vec<(Account, Vec<ObjectRef<CachedPod>>)> =
        ctx.accounts.lock_pending().drain().collect();
    let count = batch.len();
    futures::stream::iter(batch)
        .for_each_concurrent(CONCURRENCY, |(account, waiting)| async move {
            let result = sync_account(ctx, &account).await;
            ctx.accounts.settle(account, result, waiting);
        })
        .await;
    count
}

/// Asks for a sync of every account that has agent Roles or RoleBindings: finds those whose pods went while no
/// event said so (a relist, a controller restart).
pub fn mark_all(ctx: &Context) {
    let accounts = ctx
        .roles
        .state()
        .iter()
        .map(|role| role.metadata.clone())
        .chain(
            ctx.role_bindings
                .state()
                .iter()
                .map(|binding| binding.metadata.clone()),
        )
        .filter_map(|meta| account_annotated(&meta))
        .collect::<std::collections::HashSet<_>>();
    for account in accounts {
        ctx.accounts.mark(account);
    }
}

/// The background loop: waits for requests, gathers them for [`WINDOW`], syncs, until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = ctx.accounts.wake.notified() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(WINDOW) => {}
        }
        sync_pending(&ctx).await;
    }
}
