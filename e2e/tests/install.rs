//! healthbridge as installed by e2e/run (Helm chart, or plain manifests): webhook ready and registered.

use std::time::Duration;

use anyhow::ensure;
use healthbridge_e2e::Cluster;
use healthbridge_e2e::poll::poll_until;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn the_webhook_deployment_becomes_available() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    poll_until(
        "the webhook Deployment to have all replicas available",
        Duration::from_secs(120),
        || async {
            let deployment = cluster.webhook_deployment().await?;
            let wanted = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let available = deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            Ok((wanted > 0 && available == wanted).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn the_mutating_webhook_is_registered_with_its_ca_and_fails_open() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(cluster.client.clone());
    let release = cluster.release_namespace.clone();
    // Self-managed certificates: the webhook patches the caBundle in once it has made its CA.
    let webhooks = poll_until(
        "the webhook configuration with a caBundle",
        Duration::from_secs(120),
        || async {
            let ours: Vec<_> = configs
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .flat_map(|config| config.webhooks.unwrap_or_default())
                .filter(|webhook| {
                    webhook
                        .client_config
                        .service
                        .as_ref()
                        .map(|s| s.namespace.as_str())
                        == Some(release.as_str())
                })
                .collect();
            let all_have_ca = !ours.is_empty()
                && ours.iter().all(|w| {
                    w.client_config
                        .ca_bundle
                        .as_ref()
                        .is_some_and(|ca| !ca.0.is_empty())
                });
            Ok(all_have_ca.then_some(ours))
        },
    )
    .await?;
    for webhook in &webhooks {
        ensure!(
            webhook.failure_policy.as_deref() == Some("Ignore"),
            "webhook {} has failurePolicy {:?}, expected Ignore (pod creation must not depend on the webhook)",
            webhook.name,
            webhook.failure_policy
        );
        ensure!(
            webhook.side_effects == "None",
            "webhook {} declares sideEffects {}, expected None (dry-run requests must reach it)",
            webhook.name,
            webhook.side_effects
        );
    }
    Ok(())
}
