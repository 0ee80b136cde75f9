//! Self-managed certificates: a CA and serving cert made with rcgen, shared by replicas through a Secret,
//! with the CA (and, after a rotation, the previous one) published in the MutatingWebhookConfiguration's caBundle.

pub mod bundle;
pub mod ca_bundle;
pub mod secret;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::bundle::{
    CA_OVERLAP_SECONDS, CA_RENEW_BEFORE_DAYS, CA_VALIDITY_DAYS, CERT_VALIDITY_DAYS, CertBundle,
    PREVIOUS_CA_KEY, PreviousCa, RENEW_BEFORE_DAYS, Renewal, ca_bundle_pem,
};
pub use self::ca_bundle::{ca_bundle_differs, guard_ca_bundle, publish_ca_bundle};
pub use self::secret::{ensure_secret, watch_secret};
use crate::metrics::Metrics;
use crate::server::Readiness;
use crate::tls::CertStore;

/// Failure to make, store or publish the certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0} lacks key {1}; delete the Secret or empty its data to have it regenerated")]
    MissingKey(String, &'static str),
    #[error(
        "the MutatingWebhookConfiguration {0} does not exist; install the chart or set --webhook-config"
    )]
    NoWebhookConfig(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Where the certificates live and whom they are for.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    pub namespace: String,
    pub service_name: String,
    pub secret_name: String,
    pub webhook_config: String,
}

impl SelfManaged {
    /// DNS names of the webhook Service, as the API server may address it.
    pub fn dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service_name, &self.namespace);
        vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}"),
            svc.clone(),
        ]
    }
}

/// Time the API server gets to take up a caBundle holding a new CA before this replica serves a certificate of
/// that CA. Its webhook client reads the configuration from an informer, which we cannot observe; it lags the
/// write by well under a second, and until the switch the old certificate (still in the caBundle) is served.
const CA_BUNDLE_UPTAKE: Duration = Duration::from_secs(5);
/// The full check, a backstop: the Secret and the caBundle are watched, renewals are days ahead.
const RECHECK: Duration = Duration::from_secs(3600);

/// Keeps the serving certificate and caBundle current until `shutdown`; ready once both are in place.
/// Any change of the Secret (another replica's rotation, an operator's `rotate-ca` annotation) is acted on at once.
pub async fn run(
    client: kube::Client,
    cfg: SelfManaged,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client);
    let (ca, ca_seen) = watch::channel(None);
    tokio::spawn(guard_ca_bundle(
        configs.clone(),
        cfg.webhook_config.clone(),
        ca_seen,
        shutdown.clone(),
    ));
    let secret_changed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(watch_secret(
        secrets.clone(),
        cfg.secret_name.clone(),
        secret_changed.clone(),
        shutdown.clone(),
    ));
    let mut served_ca = None;
    let mut backoff = Duration::from_secs(2);
    loop {
        let wait = match reconcile(&secrets, &configs, &cfg, &store, &metrics, &mut served_ca).await
        {
            Ok(ca_bundle) => {
                ca.send_replace(Some(ca_bundle));
                readiness.set_ready(true);
                backoff = Duration::from_secs(2);
                RECHECK
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "certificate set-up failed");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(300));
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = secret_changed.notified() => {}
        }
    }
}

/// One pass: the Secret current, the caBundle (current and previous CA) published, and only then the serving
/// certificate switched, so the API server never meets a certificate its caBundle lacks the CA of. Returns the
/// caBundle.
async fn reconcile(
    secrets: &Api<Secret>,
    configs: &Api<MutatingWebhookConfiguration>,
    cfg: &SelfManaged,
    store: &CertStore,
    metrics: &Metrics,
    served_ca: &mut Option<String>,
) -> Result<String, CertError> {
    let now = bundle::now_unix();
    let bundle = ensure_secret(secrets, cfg, now, served_ca.as_deref()).await?;
    let ca_bundle = bundle.ca_bundle(now);
    publish_ca_bundle(configs, &cfg.webhook_config, &ca_bundle).await?;
    let new_ca = served_ca
        .as_deref()
        .is_some_and(|served| served != bundle.ca_cert);
    if new_ca {
        tracing::info!(secret = %cfg.secret_name, "the CA was replaced; serving a certificate of the new one shortly");
        tokio::time::sleep(CA_BUNDLE_UPTAKE).await;
    }
    store.set_pem(bundle.cert.as_bytes(), bundle.key.as_bytes())?;
    metrics.set_cert_not_after(bundle.cert_not_after);
    *served_ca = Some(bundle.ca_cert);
    Ok(ca_bundle)
}
