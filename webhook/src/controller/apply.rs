//! The controller's writes: server-side apply of Roles, RoleBindings, Services and the per-pod label, each
//! skipped when the cached object already matches.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{APPLIED_MEMO, Applied, Context};
use super::desired::{PodIdentity, ServiceSettings, needs_apply, pod_label_value};
use super::metrics::{Kind, Verb, metrics};
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
pub(super) async fn ensure_pod_label(
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
