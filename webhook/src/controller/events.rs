//! Events the controller publishes (best effort): why a pod is not served, and what was set up once it is.

use std::sync::PoisonError;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::desired::{self, PodIdentity, ServiceSettings};
use crate::keys;

pub(super) async fn warn_uninjected(pod: &impl Resource<DynamicType = ()>, ctx: &Context) {
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

pub(super) fn ready_note(
    identity: &PodIdentity,
    role: &str,
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
        "ServiceAccount {} may read this pod and the other injected pods running as it in this namespace (Role/RoleBinding {}); Service {service} serves the health check on {port} (externalTrafficPolicy {policy})",
        identity.service_account, role
    )
}

pub(super) fn warning(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(truncate_note(note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

pub(super) fn normal(reason: &str, note: &str) -> Event {
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

pub(super) fn reference_to(owner: &OwnerReference, namespace: Option<String>) -> ObjectReference {
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
pub(super) async fn publish(ctx: &Context, event: &Event, reference: &ObjectReference) {
    report(ctx.recorder.publish(event, reference).await, event);
}

/// Publishes an Event that does not repeat (`Ready`, once per pod) through a recorder of its own: the shared one
/// keeps every Event it published for six minutes (to count a repeat as a series), which after a burst of 10,000
/// new pods is 10,000 Events held in memory for nothing.
pub(super) async fn publish_once(ctx: &Context, event: &Event, reference: &ObjectReference) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    report(recorder.publish(event, reference).await, event);
}

fn report(published: Result<(), kube::Error>, event: &Event) {
    if let Err(err) = published {
        tracing::warn!(reason = %event.reason, error = %err, "could not publish an Event (does the ClusterRole allow create/patch on events.k8s.io events?)");
    }
}
