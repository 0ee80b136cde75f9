//! Secret sync: the shared Secret is created, filled, renewed or its CA rotated (the old CA kept as the previous
//! one), and a replica that loses a race takes the winner's bundle.

use std::sync::Arc;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bundle::{
    CA_OVERLAP_SECONDS, CertBundle, PreviousCa, Renewal, SECRET_KEYS, rotation_requested,
};
use super::{CertError, SelfManaged};

/// Reads the shared Secret, creating, filling, renewing or rotating it as needed; another replica winning a race
/// is fine. `served_ca` is the CA whose certificate this replica serves now, if any: when the Secret was deleted
/// or emptied (an operator's way to start over) it stays in the caBundle as the previous CA, so the replicas
/// still serving its certificates are not rejected while they switch.
pub async fn ensure_secret(
    secrets: &Api<Secret>,
    cfg: &SelfManaged,
    now: i64,
    served_ca: Option<&str>,
) -> Result<CertBundle, CertError> {
    let names = cfg.dns_names();
    let fresh = || -> Result<CertBundle, CertError> {
        let mut bundle = CertBundle::generate(&names, now)?;
        bundle.previous_ca = served_ca.map(|cert| PreviousCa {
            cert: cert.to_owned(),
            until: now + CA_OVERLAP_SECONDS,
        });
        Ok(bundle)
    };
    // Absent: plain-manifest users who deleted it, or an install without the chart's empty Secret.
    let Some(existing) = secrets.get_opt(&cfg.secret_name).await? else {
        let bundle = fresh()?;
        return match secrets
            .create(
                &PostParams::default(),
                &bundle.to_secret(&cfg.secret_name, &cfg.namespace),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %cfg.secret_name, "created the webhook's CA and serving certificate");
                Ok(bundle)
            }
            // Another replica created it first: use theirs so every replica serves the same CA.
            Err(kube::Error::Api(e)) if e.code == 409 => read_filled(secrets, cfg).await,
            Err(e) => Err(e.into()),
        };
    };
    let (bundle, action) = match CertBundle::from_secret_if_filled(&existing)? {
        // Shipped empty by the chart (so that helm uninstall removes it), or emptied by an operator: fill it.
        None => (fresh()?, "filled the empty"),
        Some(mut bundle) => {
            let action = if rotation_requested(&existing) {
                bundle.rotate_ca(&names, now)?;
                "replaced the CA, as its rotate-ca annotation asked, in"
            } else {
                match bundle.renewal(&names, now) {
                    Renewal::Everything => {
                        bundle.rotate_ca(&names, now)?;
                        "replaced the expiring CA in"
                    }
                    Renewal::ServingCert => {
                        bundle.prune_previous_ca(now);
                        bundle.reissue(&names, now)?;
                        "renewed the serving certificate in"
                    }
                    Renewal::Fine if bundle.prune_previous_ca(now) => {
                        "dropped the previous CA, its overlap over, from"
                    }
                    Renewal::Fine => return Ok(bundle),
                }
            };
            (bundle, action)
        }
    };
    // Optimistic concurrency: fill_secret keeps the resourceVersion read above, so when another replica filled
    // or renewed first our write gets 409 and we take its bundle.
    match secrets
        .replace(
            &cfg.secret_name,
            &PostParams::default(),
            &bundle.fill_secret(&existing),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %cfg.secret_name, not_after = bundle.cert_not_after, "{action} Secret");
            Ok(bundle)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => read_filled(secrets, cfg).await,
        Err(e) => Err(e.into()),
    }
}

/// The Secret another replica just wrote.
async fn read_filled(secrets: &Api<Secret>, cfg: &SelfManaged) -> Result<CertBundle, CertError> {
    let secret = secrets.get(&cfg.secret_name).await?;
    CertBundle::from_secret_if_filled(&secret)?
        .ok_or_else(|| CertError::MissingKey(cfg.secret_name.clone(), SECRET_KEYS[0]))
}

/// Rings `changed` on every change of the Secret `name` (a watch with a field selector on its name, which the
/// Role's resourceNames allow), so a replica takes another replica's rotation, or an operator's `rotate-ca`
/// annotation, within seconds rather than at the hourly check.
pub async fn watch_secret(
    secrets: Api<Secret>,
    name: String,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let selector = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let seen = watcher(secrets, selector)
        .default_backoff()
        .touched_objects();
    let mut seen = std::pin::pin!(seen);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = seen.try_next() => event,
        };
        match event {
            Ok(Some(_)) => changed.notify_one(),
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, secret = %name, "watching the certificate Secret failed; retrying (the hourly check still runs)");
            }
        }
    }
}
