//! With the webhook scaled to zero, failurePolicy Ignore admits annotated pods, and the controller reports them.
//! (Its own test binary: cargo runs test binaries one after another, so no other test sees the webhook down.)

use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::fixtures::{describe, has_agent};
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::{Cluster, Scenario, demo_pod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

async fn scale_webhook(cluster: &Cluster, name: &str, replicas: i32) -> anyhow::Result<()> {
    let deployments: Api<Deployment> =
        Api::namespaced(cluster.client.clone(), &cluster.release_namespace);
    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
    poll_until(
        &format!("the webhook to run {replicas} ready replicas"),
        Duration::from_secs(120),
        || async {
            let deployment = deployments.get(name).await?;
            let status = deployment.status.unwrap_or_default();
            let ready = status.ready_replicas.unwrap_or(0);
            let total = status.replicas.unwrap_or(0);
            Ok((ready == replicas && total == replicas).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn annotated_pods_are_admitted_while_the_webhook_is_down_and_reported_as_uninjected()
-> anyhow::Result<()> {
    Scenario::run("webhook-down", |s| async move {
        let deployment = s.cluster.webhook_deployment().await?;
        let name = deployment
            .metadata
            .name
            .clone()
            .context("the webhook Deployment has no name")?;
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1);

        scale_webhook(&s.cluster, &name, 0).await?;
        let admitted = s.create_pod(&demo_pod("unlucky").opted_in()).await;
        // Bring the webhook (and its controller) back whatever happened, so later tests find it.
        let restored = scale_webhook(&s.cluster, &name, replicas).await;
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
