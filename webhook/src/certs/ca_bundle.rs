//! The caBundle guard: the CA is published in the MutatingWebhookConfiguration and set back whenever someone
//! else changes it.

use futures::TryStreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::CertError;

/// Sets the caBundle of every webhook entry of `name` to `ca_pem`, writing only when one differs.
/// Returns whether a write happened.
pub async fn publish_ca_bundle(
    configs: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_pem: &str,
) -> Result<bool, CertError> {
    let Some(mut config) = configs.get_opt(name).await? else {
        return Err(CertError::NoWebhookConfig(name.to_owned()));
    };
    let changed = ca_bundle_differs(&config, ca_pem);
    if changed {
        let wanted = ByteString(ca_pem.as_bytes().to_vec());
        for webhook in config.webhooks.iter_mut().flatten() {
            webhook.client_config.ca_bundle = Some(wanted.clone());
        }
        // replace carries the resourceVersion read above, so a concurrent edit makes this fail and retry.
        configs
            .replace(name, &PostParams::default(), &config)
            .await?;
        tracing::info!(webhook_config = name, "published the CA in caBundle");
    }
    Ok(changed)
}

/// Whether some webhook entry of `config` does not carry `ca_pem` as its caBundle.
pub fn ca_bundle_differs(config: &MutatingWebhookConfiguration, ca_pem: &str) -> bool {
    config.webhooks.iter().flatten().any(|webhook| {
        webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            != Some(ca_pem.as_bytes())
    })
}

/// Watches the MutatingWebhookConfiguration `name` (only it: a field selector on its name) and sets its caBundle
/// back as soon as it stops matching the CA in `ca`, so a `helm upgrade --force` or a GitOps sync that strips it
/// leaves pods uninjected for seconds, not until the hourly check. Writes only when it differs, so a
/// write never triggers another write; each set-back is logged, which makes a fight with another manager visible.
pub async fn guard_ca_bundle(
    configs: Api<MutatingWebhookConfiguration>,
    name: String,
    ca: watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) {
    let selector = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let configs_seen = watcher(configs.clone(), selector)
        .default_backoff()
        .applied_objects();
    let mut configs_seen = std::pin::pin!(configs_seen);
    loop {
        let seen = tokio::select! {
            () = shutdown.cancelled() => return,
            seen = configs_seen.try_next() => seen,
        };
        let config = match seen {
            Ok(Some(config)) => config,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, webhook_config = %name, "watching the webhook configuration failed; retrying");
                continue;
            }
        };
        // Before the first certificate is in place there is nothing to compare with: the set-up publishes it.
        let Some(wanted) = ca.borrow().clone() else {
            continue;
        };
        if !ca_bundle_differs(&config, &wanted) {
            continue;
        }
        match publish_ca_bundle(&configs, &name, &wanted).await {
            Ok(true) => tracing::warn!(
                webhook_config = %name,
                "the caBundle was changed by someone else (helm upgrade --force, a GitOps sync without ignoreDifferences?); set it back"
            ),
            Ok(false) => {}
            // Another replica set it back first; its write comes through the watch and matches.
            Err(CertError::Kube(kube::Error::Api(e))) if e.code == 409 => {}
            Err(error) => {
                tracing::warn!(%error, webhook_config = %name, "could not set the caBundle back; the hourly check retries");
            }
        }
    }
}
