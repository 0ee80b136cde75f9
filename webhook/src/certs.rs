//! Self-managed certificates: a CA and serving cert made with rcgen, shared by replicas through a Secret,
//! with the CA published in the MutatingWebhookConfiguration's caBundle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::metrics::Metrics;
use crate::server::Readiness;
use crate::tls::CertStore;

const DAY: i64 = 86_400;
/// The CA outlives many serving certificates so the caBundle rarely changes.
pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const CERT_VALIDITY_DAYS: i64 = 90;
/// A serving certificate with less than this left is renewed.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// A CA with less than this left is replaced (and with it the caBundle).
pub const CA_RENEW_BEFORE_DAYS: i64 = 365;
const CA_COMMON_NAME: &str = "healthbridge-webhook-ca";
/// The keys of a filled Secret.
const SECRET_KEYS: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

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

/// CA and serving certificate, PEM-encoded, with their expiry times (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    pub ca_not_after: i64,
    pub cert_not_after: i64,
    pub dns_names: Vec<String>,
}

/// What a bundle needs at time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Fine,
    ServingCert,
    Everything,
}

impl CertBundle {
    /// Makes a new CA and a serving certificate for `dns_names`, valid from `now` (unix seconds).
    pub fn generate(dns_names: &[String], now: i64) -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let ca_not_after = day_start(now) + CA_VALIDITY_DAYS * DAY;
        let ca_cert = ca_params(now, ca_not_after)?.self_signed(&ca_key)?;
        let mut bundle = Self {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            cert: String::new(),
            key: String::new(),
            ca_not_after,
            cert_not_after: 0,
            dns_names: Vec::new(),
        };
        bundle.reissue(dns_names, now)?;
        Ok(bundle)
    }

    /// Replaces the serving certificate with a new one signed by the same CA.
    pub fn reissue(&mut self, dns_names: &[String], now: i64) -> Result<(), CertError> {
        let ca_key = KeyPair::from_pem(&self.ca_key)?;
        // The issuer needs only the CA's subject and key, which are the same as when the CA was made.
        let issuer = Issuer::new(ca_params(now, self.ca_not_after)?, ca_key);
        let cert_not_after = (day_start(now) + CERT_VALIDITY_DAYS * DAY).min(self.ca_not_after);
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let (y, mo, d) = ymd(now - DAY);
        params.not_before = date_time_ymd(y, mo, d);
        let (y, mo, d) = ymd(cert_not_after);
        params.not_after = date_time_ymd(y, mo, d);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        self.cert = cert.pem();
        self.key = key.serialize_pem();
        self.cert_not_after = cert_not_after;
        self.dns_names = dns_names.to_vec();
        Ok(())
    }

    /// What must be renewed at `now` for a webhook answering on `dns_names`.
    pub fn renewal(&self, dns_names: &[String], now: i64) -> Renewal {
        if self.ca_not_after - now < CA_RENEW_BEFORE_DAYS * DAY {
            Renewal::Everything
        } else if self.cert_not_after - now < RENEW_BEFORE_DAYS * DAY || self.dns_names != dns_names
        {
            Renewal::ServingCert
        } else {
            Renewal::Fine
        }
    }

    /// The bundle as the Secret stores it.
    pub fn to_secret(&self, name: &str, namespace: &str) -> Secret {
        let data: BTreeMap<String, ByteString> = [
            ("ca.crt", &self.ca_cert),
            ("ca.key", &self.ca_key),
            ("tls.crt", &self.cert),
            ("tls.key", &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let annotations = [
            (keys::CA_NOT_AFTER, self.ca_not_after.to_string()),
            (keys::CERT_NOT_AFTER, self.cert_not_after.to_string()),
            (keys::CERT_DNS_NAMES, self.dns_names.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                annotations: Some(annotations),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// `existing` with this bundle's data and annotations, keeping its other metadata (Helm's labels and
    /// annotations, kubectl's last-applied) and its resourceVersion, so the write is optimistic.
    pub fn fill_secret(&self, existing: &Secret) -> Secret {
        let ours = self.to_secret(
            existing.metadata.name.as_deref().unwrap_or_default(),
            existing.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let mut annotations = existing.metadata.annotations.clone().unwrap_or_default();
        annotations.extend(ours.metadata.annotations.unwrap_or_default());
        let mut secret = existing.clone();
        secret.metadata.annotations = Some(annotations);
        secret.type_ = existing.type_.clone().or(ours.type_);
        secret.data = ours.data;
        secret.string_data = None;
        secret
    }

    /// Reads a bundle from its Secret; `Ok(None)` when the Secret holds none of the keys yet (as the chart ships it).
    pub fn from_secret_if_filled(secret: &Secret) -> Result<Option<Self>, CertError> {
        let unfilled = secret.data.as_ref().is_none_or(|data| {
            SECRET_KEYS
                .iter()
                .all(|key| data.get(*key).is_none_or(|value| value.0.is_empty()))
        });
        if unfilled {
            return Ok(None);
        }
        Self::from_secret(secret).map(Some)
    }

    /// Reads a bundle from its Secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, CertError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |key: &'static str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or_else(|| CertError::MissingKey(name.clone(), key))
        };
        let annotation = |key: &str| {
            secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
        };
        let number = |key: &str| annotation(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Self {
            ca_cert: text("ca.crt")?,
            ca_key: text("ca.key")?,
            cert: text("tls.crt")?,
            key: text("tls.key")?,
            ca_not_after: number(keys::CA_NOT_AFTER),
            cert_not_after: number(keys::CERT_NOT_AFTER),
            dns_names: annotation(keys::CERT_DNS_NAMES)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

fn ca_params(now: i64, not_after: i64) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (y, mo, d) = ymd(now - DAY);
    params.not_before = date_time_ymd(y, mo, d);
    let (y, mo, d) = ymd(not_after);
    params.not_after = date_time_ymd(y, mo, d);
    Ok(params)
}

fn day_start(unix: i64) -> i64 {
    unix.div_euclid(DAY) * DAY
}

/// Year, month and day (UTC) holding `unix`.
fn ymd(unix: i64) -> (i32, u8, u8) {
    civil_from_days(unix.div_euclid(DAY))
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

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
    let bundle = ensure_secret(secrets, cfg, now_unix()).await?;
    store.set_pem(bundle.cert.as_bytes(), bundle.key.as_bytes())?;
    metrics.set_cert_not_after(bundle.cert_not_after);
    publish_ca_bundle(configs, &cfg.webhook_config, &bundle.ca_cert).await?;
    Ok(bundle.ca_cert)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        SelfManaged {
            namespace: "healthbridge-system".into(),
            service_name: "healthbridge-webhook".into(),
            secret_name: "s".into(),
            webhook_config: "w".into(),
        }
        .dns_names()
    }

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn the_serving_cert_names_the_service() {
        assert_eq!(names()[0], "healthbridge-webhook.healthbridge-system.svc");
        assert!(
            names()
                .contains(&"healthbridge-webhook.healthbridge-system.svc.cluster.local".to_owned())
        );
    }

    #[test]
    fn a_fresh_bundle_needs_nothing_and_installs_into_rustls() {
        let bundle = CertBundle::generate(&names(), NOW).unwrap();
        assert_eq!(bundle.renewal(&names(), NOW), Renewal::Fine);
        CertStore::new()
            .set_pem(bundle.cert.as_bytes(), bundle.key.as_bytes())
            .unwrap();
    }

    #[test]
    fn the_serving_cert_is_renewed_a_month_before_expiry_with_the_same_ca() {
        let mut bundle = CertBundle::generate(&names(), NOW).unwrap();
        let later = bundle.cert_not_after - 29 * DAY;
        assert_eq!(bundle.renewal(&names(), later), Renewal::ServingCert);
        let ca = bundle.ca_cert.clone();
        bundle.reissue(&names(), later).unwrap();
        assert_eq!(bundle.ca_cert, ca);
        assert_eq!(bundle.renewal(&names(), later), Renewal::Fine);
    }

    #[test]
    fn a_new_service_name_or_an_old_ca_renews() {
        let bundle = CertBundle::generate(&names(), NOW).unwrap();
        assert_eq!(
            bundle.renewal(&["other.ns.svc".to_owned()], NOW),
            Renewal::ServingCert
        );
        assert_eq!(
            bundle.renewal(&names(), bundle.ca_not_after - 300 * DAY),
            Renewal::Everything
        );
    }

    #[test]
    fn the_secret_round_trips() {
        let bundle = CertBundle::generate(&names(), NOW).unwrap();
        let secret = bundle.to_secret("certs", "ns");
        assert_eq!(CertBundle::from_secret(&secret).unwrap(), bundle);
    }

    #[test]
    fn dates_are_computed_in_the_gregorian_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
