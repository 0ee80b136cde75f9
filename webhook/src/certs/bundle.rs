//! The certificate bundle, pure: a CA and a serving certificate made with rcgen, their validity dates, when they
//! need renewing, and how they are stored in a Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::CertError;
use crate::keys;

pub const DAY: i64 = 86_400;
/// The CA outlives many serving certificates so the caBundle rarely changes.
pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const CERT_VALIDITY_DAYS: i64 = 90;
/// A serving certificate with less than this left is renewed.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// A CA with less than this left is replaced (and with it the caBundle).
pub const CA_RENEW_BEFORE_DAYS: i64 = 365;
const CA_COMMON_NAME: &str = "healthbridge-webhook-ca";
/// The keys of a filled Secret.
/// The keys of a filled Secret.
pub(super) const SECRET_KEYS: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

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
        params.not_before = midnight_utc(now - DAY);
        params.not_after = midnight_utc(cert_not_after);
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
    params.not_before = midnight_utc(now - DAY);
    params.not_after = midnight_utc(not_after);
    Ok(params)
}

fn day_start(unix: i64) -> i64 {
    unix.div_euclid(DAY) * DAY
}

/// Midnight (UTC) of the day holding `unix`: certificates are valid from and to whole days.
pub fn midnight_utc(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(day_start(unix)).unwrap_or(if unix < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        // Beyond year 9999: no certificate lives that long, but do not panic on a bad clock.
        time::Date::MAX.midnight().assume_utc()
    })
}

/// Now, in unix seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::certs::SelfManaged;
    use crate::tls::CertStore;

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
    fn validity_starts_and_ends_at_midnight_utc() {
        assert_eq!(midnight_utc(0), OffsetDateTime::UNIX_EPOCH);
        let leap_day = midnight_utc(19_782 * DAY + 5_000);
        assert_eq!(
            (leap_day.year(), u8::from(leap_day.month()), leap_day.day()),
            (2024, 2, 29)
        );
        assert_eq!((leap_day.hour(), leap_day.minute()), (0, 0));
        assert_eq!(
            midnight_utc(-1),
            OffsetDateTime::UNIX_EPOCH - time::Duration::DAY
        );
    }
}
