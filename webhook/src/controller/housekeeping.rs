//! Periodic housekeeping of the leader: unused group Services deleted, gauges refreshed from the caches.

use std::collections::HashSet;
use std::sync::PoisonError;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};

use super::cached::{PodMarks, PodView};
use super::context::Context;
use super::desired::is_injected;
use super::metrics::{Kind, Verb, metrics};
use crate::keys;
use healthbridge_contract::service::shares_group_service;

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
                && pod.label(keys::GROUP_LABEL) == Some(group.as_str())
                && is_injected(pod)
                && pod.verify_agent(&ctx.agent_images).is_ok()
                && shares_group_service(pod.annotation(keys::SERVICE_SCOPE))
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
    metrics
        .uninjected_pods
        .set(gauge_value(ctx.uninjected.len()));
    // Forget warned pods that are no longer uninjected (gone), so the set stays as small as they are.
    ctx.warned_uninjected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|uid| ctx.uninjected.contains(uid));
    // And pods awaiting their Role that are gone.
    let live: HashSet<String> = ctx
        .pods
        .state()
        .iter()
        .filter_map(|pod| pod.uid())
        .collect();
    ctx.awaiting_rbac
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|uid| live.contains(uid));
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
