//! Self-managed certificates: a CA and serving cert made with rcgen, shared by replicas through a Secret,
//! with the CA published in the MutatingWebhookConfiguration's caBundle.

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
    CA_RENEW_BEFORE_DAYS, CA_VALIDITY_DAYS, CERT_VALIDITY_DAYS, CertBundle, RENEW_BEFORE_DAYS,
    Renewal,
};
pub use self::ca_bundle::{ca_bundle_differs, guard_ca_bundle, publish_ca_bundle};
pub use self::secret::ensure_secret;
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

/// Keeps the serving certificate and caBundle current until `shutdown`; ready once both are in place.
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
    let mut backoff = Duration::from_secs(2);
    loop {
        let wait = match reconcile(&secrets, &configs, &cfg, &store, &metrics).await {
            Ok(ca_pem) => {
                ca.send_replace(Some(ca_pem));
                readiness.set_ready(true);
                backoff = Duration::from_secs(2);
                // Renewal is days ahead; a reset caBundle is seen by guard_ca_bundle at once, this is a backstop.
                Duration::from_secs(3600)
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
        }
    }
}

async fn reconcile(
    secrets: &Api<Secret>,
    configs: &Api<MutatingWebhookConfiguration>,
    cfg: &SelfManaged,
    store: &CertStore,
    metrics: &Metrics,
) -> Result<String, CertError> {
    let bundle = ensure_secret(secrets, cfg, bundle::now_unix()).await?;
    store.set_pem(bundle.cert.as_bytes(), bundle.key.as_bytes())?;
    metrics.set_cert_not_after(bundle.cert_not_after);
    publish_ca_bundle(configs, &cfg.webhook_config, &bundle.ca_cert).await?;
    Ok(bundle.ca_cert)
}
