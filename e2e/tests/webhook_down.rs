//! With the webhook scaled to zero, failurePolicy Ignore admits annotated pods, and the controller reports them.
//! (Its own test binary: cargo runs test binaries one after another, so no other test sees the webhook down.)

use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::fixtures::{describe, has_agent, is_ready};
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::{Cluster, Scenario, demo_pod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// Scales the webhook and waits until exactly `replicas` of its pods exist and are ready: a
/// terminating pod still answers admissions (kube-proxy keeps serving-terminating endpoints),
/// so "down" means no pod left at all.
async fn scale_webhook(
    cluster: &Cluster,
    deployment: &Deployment,
    replicas: i32,
) -> anyhow::Result<()> {
    let name = deployment
        .metadata
        .name
        .as_deref()
        .context("the webhook Deployment has no name")?;
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.match_labels.as_ref())
        .context("the webhook Deployment has no matchLabels selector")?
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let deployments: Api<Deployment> =
        Api::namespaced(cluster.client.clone(), &cluster.release_namespace);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.release_namespace);
    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
    let wanted = usize::try_from(replicas)?;
    poll_until(
        &format!("exactly {replicas} ready webhook pods"),
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items;
            let ready = list
                .iter()
                .filter(|pod| is_ready(pod) && pod.metadata.deletion_timestamp.is_none())
                .count();
            Ok((list.len() == wanted && ready == wanted).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn annotated_pods_are_admitted_while_the_webhook_is_down_and_reported_as_uninjected()
-> anyhow::Result<()> {
    Scenario::run("webhook-down", |s| async move {
        let deployment = s.cluster.webhook_deployment().await?;
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1);

        let admitted = match scale_webhook(&s.cluster, &deployment, 0).await {
            Ok(()) => s.create_pod(&demo_pod("unlucky").opted_in()).await,
            Err(error) => Err(error),
        };
        // Bring the webhook (and its controller) back whatever happened, so later tests find it.
        let restored = scale_webhook(&s.cluster, &deployment, replicas).await;
        let pod: Pod = admitted
            .context("failurePolicy Ignore should admit the pod while the webhook is down")?;
        restored?;
        ensure!(
            !has_agent(&pod),
            "the pod got the agent although the webhook was down: {}",
            describe(&pod)
        );

        let events: Api<Event> = s.api();
        let about_pod = ListParams::default().fields("involvedObject.name=unlucky,type=Warning");
        poll_until(
            "the controller's Warning Event Uninjected on the pod",
            Duration::from_secs(120),
            || async {
                let list = events.list(&about_pod).await?;
                Ok(list
                    .items
                    .into_iter()
                    .find(|event| event.reason.as_deref() == Some("Uninjected")))
            },
        )
        .await?;
        Ok(())
    })
    .await
}
