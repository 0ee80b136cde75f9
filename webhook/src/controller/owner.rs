//! Which workload owns a group's Service: read from the pod's ownerReferences, through its ReplicaSet once.

use std::sync::PoisonError;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::Api;

use super::apply::Call;
use super::cached::CachedPod;
use super::context::Context;
use super::desired::{self, PodIdentity, WorkloadOwner};
use super::reconcile::ReconcileError;

/// The top-level workload of a pod, reading its ReplicaSet once when it has one.
pub(super) async fn workload_owner(
    ctx: &Context,
    pod: &CachedPod,
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
