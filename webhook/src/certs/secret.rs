//! Secret sync: the shared Secret is created, filled or renewed, and a replica that loses a race takes the
//! winner's bundle.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;

use super::bundle::{CertBundle, Renewal, SECRET_KEYS};
use super::{CertError, SelfManaged};

/// Reads the shared Secret, creating, filling or renewing it as needed; another replica winning a race is fine.
pub async fn ensure_secret(
    secrets: &Api<Secret>,
    cfg: &SelfManaged,
    now: i64,
) -> Result<CertBundle, CertError> {
    let names = cfg.dns_names();
    // Absent: plain-manifest users who deleted it, or an install without the chart's empty Secret.
    let Some(existing) = secrets.get_opt(&cfg.secret_name).await? else {
        let bundle = CertBundle::generate(&names, now)?;
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
        // Shipped empty by the chart (so that helm uninstall removes it): fill it.
        None => (CertBundle::generate(&names, now)?, "filled the empty"),
        Some(mut bundle) => {
            match bundle.renewal(&names, now) {
                Renewal::Fine => return Ok(bundle),
                Renewal::ServingCert => bundle.reissue(&names, now)?,
                Renewal::Everything => bundle = CertBundle::generate(&names, now)?,
            }
            (bundle, "renewed the certificates in")
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
