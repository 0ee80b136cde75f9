//! The reconciler: applies what [`super::desired`] computes when the observed objects differ, reports with Events,
//! and garbage-collects group Services that lost their last pod.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::desired::{
    self, NodePortRange, PodIdentity, ServiceScope, ServiceSettings, WorkloadOwner, desired_role,
    desired_role_binding, desired_service, is_injected, is_uninjected, needs_apply, pod_identity,
    pod_label_value, service_settings, service_target,
};
use super::group_index::GroupIndex;
use super::metrics::{Kind, Outcome, Verb, metrics};
use crate::keys;

/// How long a healthy pod waits before its objects are checked again (reads only: from the caches).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry after a nodePort conflict or a missing permission: a person has to act first.
pub const SLOW_RETRY: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Everything a reconcile needs: the client, the caches of observed objects and the event recorder.
pub struct Context {
    pub client: kube::Client,
    pub pods: Store<Pod>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub services: Store<Service>,
    pub recorder: Recorder,
    pub node_port_range: NodePortRange,
    /// ReplicaSet UID → its workload: a ReplicaSet's controller never changes, so it is fetched once.
    replica_set_owners: Mutex<HashMap<String, OwnerReference>>,
    /// Consecutive failures per pod, for the backoff of the error policy.
    failures: Mutex<HashMap<ObjectRef<Pod>, u32>>,
    /// Pods already warned about as uninjected, so each gets one Event, not one per change.
    warned_uninjected: Mutex<HashSet<String>>,
    /// Namespaces the webhook never injects: an opted-in pod there is not "uninjected", it is excluded.
    never_injected: HashSet<String>,
    /// Per Service: a lock so that pods of one group do not apply it concurrently, and what was last applied.
    service_slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Applied>>>>>,
    /// The pods of each group, fed from the same events as `pods`; without it (a store fed directly) a group is
    /// found by scanning every pod.
    group_index: Option<Arc<GroupIndex>>,
}

/// A Service as the API server returned it from our apply, and when.
struct Applied {
    service: Service,
    at: std::time::Instant,
}

/// How long a just-applied Service is trusted over the cache, which may not have seen it yet. Short: a user
/// edit landing within this window after our apply is set back at the next resync instead of at once.
const APPLIED_MEMO: Duration = Duration::from_secs(2);

impl Context {
    pub fn new(
        client: kube::Client,
        stores: Stores,
        recorder: Recorder,
        node_port_range: NodePortRange,
    ) -> Self {
        Self {
            client,
            pods: stores.pods,
            roles: stores.roles,
            role_bindings: stores.role_bindings,
            services: stores.services,
            recorder,
            node_port_range,
            replica_set_owners: Mutex::default(),
            failures: Mutex::default(),
            warned_uninjected: Mutex::default(),
            never_injected: ["kube-system", "kube-public", "kube-node-lease"]
                .map(str::to_owned)
                .into(),
            service_slots: Mutex::default(),
            group_index: None,
        }
    }

    /// Finds a group's pods through `index`, which must see the same watcher events as the pod store.
    #[must_use]
    pub fn with_group_index(mut self, index: Arc<GroupIndex>) -> Self {
        self.group_index = Some(index);
        self
    }

    /// The cached pods labelled with `group` in `namespace`: O(group size) with the index, O(pods) without.
    pub fn pods_in_group(&self, namespace: &str, group: &str) -> Vec<Arc<Pod>> {
        // The store is the truth: an index entry is only a candidate, checked against the cached pod.
        let in_group = |pod: &Pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.labels().get(keys::GROUP_LABEL).map(String::as_str) == Some(group)
        };
        match &self.group_index {
            Some(index) => index
                .members(namespace, group)
                .iter()
                .filter_map(|reference| self.pods.get(reference))
                .filter(|pod| in_group(pod))
                .collect(),
            None => self.pods.state_filter(|pod| in_group(pod)),
        }
    }

    /// Adds namespaces the webhook skips (its own, and any configured exclusions).
    #[must_use]
    pub fn never_injecting(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.never_injected.extend(namespaces);
        self
    }

    fn service_slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Applied>>> {
        let mut slots = self
            .service_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// Drops the slots no reconcile holds: their memo is past [`APPLIED_MEMO`] long before housekeeping runs.
    fn forget_idle_service_slots(&self) {
        let mut slots = self
            .service_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| Arc::strong_count(slot) > 1);
    }

    fn missed_by_webhook(&self, pod: &Pod) -> bool {
        is_uninjected(pod)
            && pod
                .namespace()
                .is_none_or(|namespace| !self.never_injected.contains(&namespace))
    }
}

/// The caches the reconciler compares against.
pub struct Stores {
    pub pods: Store<Pod>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub services: Store<Service>,
}

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
    fn outcome(&self) -> Outcome {
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

/// One API call's identity, to turn its error into a [`ReconcileError`].
struct Call<'a> {
    verb: &'static str,
    resource: &'static str,
    namespace: &'a str,
    name: &'a str,
}

impl Call<'_> {
    fn error(&self, source: kube::Error) -> ReconcileError {
        match source {
            kube::Error::Api(status) if status.code == 403 => ReconcileError::Forbidden {
                verb: self.verb,
                resource: self.resource,
                namespace: self.namespace.to_owned(),
                message: status.message.clone(),
            },
            source => ReconcileError::Api {
                verb: self.verb,
                resource: self.resource,
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
                source,
            },
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
    let source = match service_settings(pod, ctx.node_port_range).map(|settings| settings.scope) {
        Ok(ServiceScope::Group) => {
            newest_in_group(pod, ctx).unwrap_or_else(|| Arc::new(pod.clone()))
        }
        _ => Arc::new(pod.clone()),
    };
    let settings = match service_settings(&source, ctx.node_port_range) {
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
    let source_identity = pod_identity(&source).unwrap_or_else(|_| identity.clone());
    let workload = match settings.scope {
        ServiceScope::Group => workload_owner(ctx, &source, &source_identity).await?,
        ServiceScope::Pod => None,
    };
    let target = match service_target(&source, &source_identity, settings.scope, workload.clone()) {
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

fn ready_note(
    identity: &PodIdentity,
    service: &str,
    node_port: Option<i32>,
    settings: &ServiceSettings,
) -> String {
    let port = node_port.map_or_else(
        || "a nodePort not yet allocated".to_owned(),
        |port| format!("nodePort {port}"),
    );
    let policy = match settings.traffic_policy {
        desired::TrafficPolicy::Local => "Local: each node answers for its own pods",
        desired::TrafficPolicy::Cluster => "Cluster",
    };
    format!(
        "ServiceAccount {} may read this pod only (Role/RoleBinding {}); Service {service} serves the health check on {port} (externalTrafficPolicy {policy})",
        identity.service_account,
        super::names::object_name(&identity.name)
    )
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
                && other
                    .annotations()
                    .get(keys::SERVICE_SCOPE)
                    .is_none_or(|scope| !scope.eq_ignore_ascii_case("pod"))
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

/// The top-level workload of a pod, reading its ReplicaSet once when it has one.
async fn workload_owner(
    ctx: &Context,
    pod: &Pod,
    identity: &PodIdentity,
) -> Result<Option<OwnerReference>, ReconcileError> {
    let replica_set = match desired::workload_owner(pod.owner_references()) {
        WorkloadOwner::Resolved(owner) => return Ok(owner),
        WorkloadOwner::ViaReplicaSet(replica_set) => replica_set,
    };
    let cached = ctx
        .replica_set_owners
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&replica_set.uid)
        .cloned();
    if let Some(owner) = cached {
        return Ok(Some(owner));
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &identity.namespace);
    let call = Call {
        verb: "get",
        resource: "replicasets",
        namespace: &identity.namespace,
        name: &replica_set.name,
    };
    let Some(observed) = api
        .get_metadata_opt(&replica_set.name)
        .await
        .map_err(|err| call.error(err))?
    else {
        // The ReplicaSet is being deleted: own nothing rather than guess; the next change retries.
        return Ok(None);
    };
    let owner = desired::replica_set_owner(&replica_set, observed.owner_references());
    let mut cache = ctx
        .replica_set_owners
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Bounded: ReplicaSets come and go with rollouts; refetching is cheap.
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(replica_set.uid.clone(), owner.clone());
    Ok(Some(owner))
}

/// Applies `desired` unless the cached object already matches it; true when it wrote.
async fn ensure<K>(
    ctx: &Context,
    store: &Store<K>,
    kind: Kind,
    resource: &'static str,
    desired: &K,
) -> Result<bool, ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    let observed = store.get(&ObjectRef::new(&name).within(&namespace));
    if !needs_apply(desired, observed.as_deref()) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let call = Call {
        verb: "apply",
        resource,
        namespace: &namespace,
        name: &name,
    };
    api.patch(&name, &apply_params(), &Patch::Apply(desired))
        .await
        .map_err(|err| call.error(err))?;
    metrics().wrote(kind, Verb::Apply);
    Ok(true)
}

fn apply_params() -> PatchParams {
    // `force`: fields we own are set back when someone else changed them; fields we never set stay theirs.
    PatchParams::apply(keys::FIELD_MANAGER).force()
}

/// Applies the Service when it differs; returns whether it wrote and the nodePort in effect.
async fn ensure_service(
    ctx: &Context,
    desired: &Service,
    settings: &ServiceSettings,
) -> Result<(bool, Option<i32>), ReconcileError> {
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    // Pods of one group reconcile concurrently and would all see "no Service yet" in the cache: the slot
    // serialises them, and the memo tells the later ones that the first already applied it.
    let slot = ctx.service_slot(&format!("{namespace}/{name}"));
    let mut last_applied = slot.lock().await;
    let observed = ctx.services.get(&ObjectRef::new(&name).within(&namespace));
    if !needs_apply(desired, observed.as_deref()) {
        return Ok((false, observed.as_deref().and_then(node_port_of)));
    }
    if let Some(applied) = last_applied
        .as_ref()
        .filter(|applied| applied.at.elapsed() < APPLIED_MEMO)
        && !needs_apply(desired, Some(&applied.service))
    {
        return Ok((false, node_port_of(&applied.service)));
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let call = Call {
        verb: "apply",
        resource: "services",
        namespace: &namespace,
        name: &name,
    };
    match api
        .patch(&name, &apply_params(), &Patch::Apply(desired))
        .await
    {
        Ok(applied) => {
            metrics().wrote(Kind::Service, Verb::Apply);
            let node_port = node_port_of(&applied);
            *last_applied = Some(Applied {
                service: applied,
                at: std::time::Instant::now(),
            });
            Ok((true, node_port))
        }
        Err(kube::Error::Api(status))
            if status.code == 422 && status.message.contains("already allocated") =>
        {
            Err(ReconcileError::NodePortConflict {
                node_port: settings.node_port.unwrap_or_default(),
                key: keys::NODE_PORT,
                namespace,
                service: name,
            })
        }
        Err(err) => Err(call.error(err)),
    }
}

fn node_port_of(service: &Service) -> Option<i32> {
    service.spec.as_ref()?.ports.as_ref()?.first()?.node_port
}

/// Puts the per-pod label that a `service-scope: pod` Service selects, unless it is there already.
async fn ensure_pod_label(
    ctx: &Context,
    pod: &Pod,
    identity: &PodIdentity,
) -> Result<bool, ReconcileError> {
    let value = pod_label_value(&identity.name);
    if pod.labels().get(keys::POD_LABEL) == Some(&value) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": identity.name, "namespace": identity.namespace, "labels": { keys::POD_LABEL: value } },
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &identity.namespace);
    let call = Call {
        verb: "patch",
        resource: "pods",
        namespace: &identity.namespace,
        name: &identity.name,
    };
    api.patch(&identity.name, &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(|err| call.error(err))?;
    metrics().wrote(Kind::Pod, Verb::Apply);
    Ok(true)
}

async fn warn_uninjected(pod: &Pod, ctx: &Context) {
    let uid = pod.uid().unwrap_or_default();
    let first = ctx
        .warned_uninjected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(uid);
    if !first {
        return;
    }
    let note = format!(
        "{}=\"true\" but the healthbridge webhook did not inject the agent (it was unreachable and failurePolicy Ignore admitted the pod): check the webhook's pods, then delete this pod so it is re-created with the agent",
        keys::INJECT
    );
    tracing::warn!(pod = %pod.name_any(), namespace = pod.namespace().unwrap_or_default(), "{note}");
    publish(ctx, &warning("Uninjected", &note), &pod.object_ref(&())).await;
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

/// Deletes group Services that no pod needs any more and no workload owns (pods without a workload: bare
/// pods, Jobs). Services owned by a workload go with it; per-pod Services go with their pod.
pub async fn collect_garbage(ctx: &Context) -> usize {
    let mut deleted = 0;
    for service in ctx.services.state() {
        if !service.owner_references().is_empty() {
            continue;
        }
        let Some(group) = service.labels().get(keys::GROUP_LABEL) else {
            continue;
        };
        let namespace = service.namespace().unwrap_or_default();
        let wanted = ctx.pods.find(|pod| {
            pod.namespace().as_deref() == Some(namespace.as_str())
                && pod.labels().get(keys::GROUP_LABEL) == Some(group)
                && is_injected(pod)
                && pod
                    .annotations()
                    .get(keys::SERVICE_SCOPE)
                    .is_none_or(|scope| !scope.eq_ignore_ascii_case("pod"))
        });
        if wanted.is_some() {
            continue;
        }
        let name = service.name_any();
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        // Preconditions: never delete a Service re-created (new UID) or re-claimed since we looked.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: service.uid(),
                resource_version: service.resource_version(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                metrics().wrote(Kind::Service, Verb::Delete);
                tracing::info!(service = %name, %namespace, group = %group, "deleted the Service of a group whose last pod is gone");
                deleted += 1;
            }
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
            Err(err) => {
                tracing::warn!(service = %name, %namespace, error = %err, "could not delete an unused Service")
            }
        }
    }
    deleted
}

/// Refreshes the gauges computed from the caches.
pub fn update_gauges(ctx: &Context) {
    ctx.forget_idle_service_slots();
    let metrics = metrics();
    let managed = |kind| {
        metrics
            .managed
            .get_or_create(&super::metrics::KindLabels { kind })
    };
    managed(Kind::Role).set(gauge_value(ctx.roles.len()));
    managed(Kind::RoleBinding).set(gauge_value(ctx.role_bindings.len()));
    managed(Kind::Service).set(gauge_value(ctx.services.len()));
    let uninjected = ctx
        .pods
        .state_filter(|pod| ctx.missed_by_webhook(pod))
        .len();
    metrics.uninjected_pods.set(gauge_value(uninjected));
    // Forget warned pods that are gone, so the set stays as small as the cluster.
    let live: HashSet<String> = ctx
        .pods
        .state()
        .iter()
        .filter_map(|pod| pod.uid())
        .collect();
    ctx.warned_uninjected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|uid| live.contains(uid));
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn warning(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(truncate_note(note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

fn normal(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Normal,
        ..warning(reason, note)
    }
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate_note(note: &str) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note.to_owned();
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

fn reference_to(owner: &OwnerReference, namespace: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        uid: Some(owner.uid.clone()),
        namespace,
        ..ObjectReference::default()
    }
}

/// Events are best effort: a failure to report is logged, never fails the reconcile.
async fn publish(ctx: &Context, event: &Event, reference: &ObjectReference) {
    if let Err(err) = ctx.recorder.publish(event, reference).await {
        tracing::warn!(reason = %event.reason, error = %err, "could not publish an Event (does the ClusterRole allow create/patch on events.k8s.io events?)");
    }
}
