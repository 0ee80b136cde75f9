//! The controller's writes: server-side apply of Roles, RoleBindings, Services and the per-pod label, each
//! skipped when the cached object already matches.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cached::{CachedPod, PodMarks};
use super::claim::{holder, may_apply};
use super::context::{APPLIED_MEMO, Applied, Context};
use super::desired::{PodIdentity, ServiceSettings, needs_apply, pod_label_value};
use super::metrics::{Kind, Verb, metrics};
use super::names::object_name;
use super::reconcile::ReconcileError;
use crate::keys;

/// One API call's identity, to turn its error into a [`ReconcileError`].
pub(super) struct Call<'a> {
    pub(super) verb: &'static str,
    pub(super) resource: &'static str,
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
}

impl Call<'_> {
    pub(super) fn error(&self, source: kube::Error) -> ReconcileError {
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

/// Applies `desired` unless the cached object already matches it; true when it wrote.
pub(super) async fn ensure<K>(
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
    let existing = match &observed {
        Some(observed) => Some(observed.meta().clone()),
        None => read_meta::<K>(ctx, resource, &namespace, &name).await?,
    };
    may_apply(kind.as_kind(), desired.meta(), existing.as_ref())?;
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

/// The metadata of an object the managed caches do not hold: it may exist without healthbridge's label, and then
/// it is not ours to overwrite. One read per object healthbridge is about to create.
async fn read_meta<K>(
    ctx: &Context,
    resource: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let call = Call {
        verb: "get",
        resource,
        namespace,
        name,
    };
    api.get_metadata_opt(name)
        .await
        .map(|found| found.map(|object| object.metadata))
        .map_err(|err| call.error(err))
}

fn apply_params() -> PatchParams {
    // `force`: fields we own are set back when someone else changed them; fields we never set stay theirs.
    PatchParams::apply(keys::FIELD_MANAGER).force()
}

/// Applies the Service when it differs; returns whether it wrote and the nodePort in effect.
pub(super) async fn ensure_service(
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
    let memo = last_applied
        .as_ref()
        .filter(|applied| applied.at.elapsed() < APPLIED_MEMO)
        .map(|applied| &applied.service);
    // Who holds the Service decides whether this pod may write it: a group belongs to one owner.
    let existing = match (&observed, memo) {
        (Some(observed), _) => Some(observed.metadata.clone()),
        (None, Some(applied)) => Some(applied.metadata.clone()),
        (None, None) => read_meta::<Service>(ctx, "services", &namespace, &name).await?,
    };
    may_apply("Service", &desired.metadata, existing.as_ref())?;
    if !needs_apply(desired, observed.as_deref()) {
        return Ok((false, observed.as_deref().and_then(node_port_of)));
    }
    if let Some(applied) = memo
        && !needs_apply(desired, Some(applied))
    {
        return Ok((false, node_port_of(applied)));
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
pub(super) async fn ensure_pod_label(
    ctx: &Context,
    pod: &CachedPod,
    identity: &PodIdentity,
) -> Result<bool, ReconcileError> {
    let value = pod_label_value(&identity.name);
    if pod.label(keys::POD_LABEL) == Some(value.as_str()) {
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

/// Deletes the per-pod Service an older healthbridge named `<pod>-healthbridge` (a name a group could also have),
/// once the pod has the one named `<pod>-healthbridge-pod`. Only when this very pod owns it and it selects the pod label.
pub(super) async fn remove_legacy_pod_service(
    ctx: &Context,
    identity: &PodIdentity,
) -> Result<bool, ReconcileError> {
    let name = object_name(&identity.name);
    let Some(legacy) = ctx
        .services
        .get(&ObjectRef::new(&name).within(&identity.namespace))
    else {
        return Ok(false);
    };
    let owned_by_pod = holder(&legacy.metadata)
        .is_some_and(|owner| owner.kind == "Pod" && owner.uid == identity.uid);
    let selects_pod = legacy
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.as_ref())
        .is_some_and(|selector| selector.contains_key(keys::POD_LABEL));
    if !(owned_by_pod && selects_pod) {
        return Ok(false);
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &identity.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: legacy.metadata.uid.clone(),
            resource_version: legacy.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            metrics().wrote(Kind::Service, Verb::Delete);
            Ok(true)
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
        Err(err) => Err(Call {
            verb: "delete",
            resource: "services",
            namespace: &identity.namespace,
            name: &name,
        }
        .error(err)),
    }
}
