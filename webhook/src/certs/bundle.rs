//! The certificate bundle, pure: a CA and a serving certificate made with rcgen, their validity dates, when they
//! need renewing, the CA a rotation replaced (trusted a while longer), the caBundle, and how they are stored in a
//! Secret.

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
/// How long the CA a rotation replaced stays in the caBundle (never past its own expiry). Every replica re-reads the
/// Secret at once through its watch and at the latest by the hourly check, so after a rotation a replica may
/// serve a certificate of the old CA for up to an hour (longer only while it cannot reach the API server); a day
/// is that twice over with room for an outage, and short enough that a CA rotated away because it leaked stops
/// being trusted soon (or at once: delete `ca-previous.crt` from the Secret).
pub const CA_OVERLAP_SECONDS: i64 = DAY;
const CA_COMMON_NAME: &str = "healthbridge-webhook-ca";
/// The keys of a filled Secret.
pub(super) const SECRET_KEYS: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];
/// The key holding the CA the last rotation replaced, while it is still trusted.
pub const PREVIOUS_CA_KEY: &str = "ca-previous.crt";
const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// The CA a rotation replaced: kept in the caBundle until `until` (unix seconds), so replicas still serving a
/// certificate it signed are not rejected while they switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousCa {
    pub cert: String,
    pub until: i64,
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
    /// The CA the last rotation replaced, while it is trusted.
    pub previous_ca: Option<PreviousCa>,
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
            previous_ca: None,
        };
        bundle.reissue(dns_names, now)?;
        Ok(bundle)
    }

    /// Replaces the CA (and the serving certificate) with new ones, keeping the old CA trusted for
    /// [`CA_OVERLAP_SECONDS`], never past its expiry. An older previous CA is dropped: one rotation overlaps at a time.
    pub fn rotate_ca(&mut self, dns_names: &[String], now: i64) -> Result<(), CertError> {
        let old = PreviousCa {
            cert: self.ca_cert.clone(),
            until: (now + CA_OVERLAP_SECONDS).min(self.ca_not_after),
        };
        *self = Self::generate(dns_names, now)?;
        self.previous_ca = Some(old).filter(|previous| previous.until > now);
        Ok(())
    }

    /// Drops the previous CA once its overlap has passed; whether it did.
    pub fn prune_previous_ca(&mut self, now: i64) -> bool {
        let expired = self
            .previous_ca
            .as_ref()
            .is_some_and(|previous| previous.until <= now);
        if expired {
            self.previous_ca = None;
        }
        expired
    }

    /// The caBundle to publish at `now`: this CA, then the previous one while it is trusted.
    pub fn ca_bundle(&self, now: i64) -> String {
        let previous = self
            .previous_ca
            .as_ref()
            .filter(|previous| previous.until > now)
            .map(|previous| previous.cert.as_str());
        ca_bundle_pem([self.ca_cert.as_str()].into_iter().chain(previous))
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
        let previous = self.previous_ca.as_ref();
        let data: BTreeMap<String, ByteString> = [
            ("ca.crt", &self.ca_cert),
            ("ca.key", &self.ca_key),
            ("tls.crt", &self.cert),
            ("tls.key", &self.key),
        ]
        .into_iter()
        .chain(previous.map(|previous| (PREVIOUS_CA_KEY, &previous.cert)))
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let annotations = [
            (keys::CA_NOT_AFTER, self.ca_not_after.to_string()),
            (keys::CERT_NOT_AFTER, self.cert_not_after.to_string()),
            (keys::CERT_DNS_NAMES, self.dns_names.join(",")),
        ]
        .into_iter()
        .chain(previous.map(|previous| (keys::CA_PREVIOUS_UNTIL, previous.until.to_string())))
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
        // A rotation asked for is done by this write; a previous CA no longer kept has no expiry either.
        annotations.remove(keys::ROTATE_CA);
        annotations.remove(keys::CA_PREVIOUS_UNTIL);
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
        // Without its expiry (edited by hand) the previous CA is kept for one overlap from now at most: pruned at
        // the next renewal check, since 0 is long past.
        let previous_ca = data
            .get(PREVIOUS_CA_KEY)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|cert| !cert.trim().is_empty())
            .map(|cert| PreviousCa {
                cert,
                until: number(keys::CA_PREVIOUS_UNTIL),
            });
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
            previous_ca,
        })
    }
}

/// Whether an operator asked, by annotation, for the CA in this Secret to be replaced.
pub fn rotation_requested(secret: &Secret) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(keys::ROTATE_CA))
}

/// The caBundle holding every certificate of `pems` once, in order of first appearance, each block re-encoded the
/// same way (64-column base64, `\n` line ends), so the same CAs always give the same bytes and a steady state
/// never writes. Text outside CERTIFICATE blocks is dropped.
pub fn ca_bundle_pem<'a>(pems: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for pem in pems {
        for body in certificate_bodies(pem) {
            if !seen.contains(&body) {
                seen.push(body);
            }
        }
    }
    let mut out = String::new();
    for body in seen {
        out.push_str(PEM_BEGIN);
        out.push('\n');
        for line in body.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(PEM_END);
        out.push('\n');
    }
    out
}

/// The base64 bodies of the CERTIFICATE blocks of `pem`, whitespace removed.
fn certificate_bodies(pem: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let after = &rest[start + PEM_BEGIN.len()..];
        let Some(end) = after.find(PEM_END) else {
            break;
        };
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !body.is_empty() {
            bodies.push(body);
        }
        rest = &after[end + PEM_END.len()..];
    }
    bodies
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
    fn a_rotation_keeps_the_old_ca_in_the_ca_bundle_for_the_overlap_then_drops_it() {
        let mut bundle = CertBundle::generate(&names(), NOW).unwrap();
        let old_ca = bundle.ca_cert.clone();
        assert_eq!(bundle.ca_bundle(NOW), ca_bundle_pem([old_ca.as_str()]));
        bundle.rotate_ca(&names(), NOW).unwrap();
        assert_ne!(bundle.ca_cert, old_ca);
        let during = bundle.ca_bundle(NOW + CA_OVERLAP_SECONDS - 1);
        assert_eq!(
            during,
            ca_bundle_pem([bundle.ca_cert.as_str(), old_ca.as_str()]),
            "new CA first, then the old one"
        );
        assert_eq!(
            bundle.ca_bundle(NOW + CA_OVERLAP_SECONDS),
            ca_bundle_pem([bundle.ca_cert.as_str()])
        );
        assert!(!bundle.prune_previous_ca(NOW + CA_OVERLAP_SECONDS - 1));
        assert!(bundle.prune_previous_ca(NOW + CA_OVERLAP_SECONDS));
        assert_eq!(bundle.previous_ca, None);
    }

    #[test]
    fn the_old_ca_is_never_kept_past_its_own_expiry() {
        let mut bundle = CertBundle::generate(&names(), NOW).unwrap();
        let expires = bundle.ca_not_after;
        bundle.rotate_ca(&names(), expires - 3600).unwrap();
        assert_eq!(bundle.previous_ca.as_ref().unwrap().until, expires);
        let mut expired = CertBundle::generate(&names(), NOW).unwrap();
        expired.rotate_ca(&names(), expires + 1).unwrap();
        assert_eq!(expired.previous_ca, None);
    }

    #[test]
    fn the_ca_bundle_is_deduplicated_and_byte_stable() {
        let bundle = CertBundle::generate(&names(), NOW).unwrap();
        let other = CertBundle::generate(&names(), NOW).unwrap();
        let crlf = bundle.ca_cert.replace('\n', "\r\n");
        let once = ca_bundle_pem([bundle.ca_cert.as_str()]);
        assert_eq!(ca_bundle_pem([bundle.ca_cert.as_str(), &crlf]), once);
        assert_eq!(ca_bundle_pem([once.as_str()]), once, "idempotent");
        let both = ca_bundle_pem([other.ca_cert.as_str(), bundle.ca_cert.as_str()]);
        assert_eq!(
            ca_bundle_pem([both.as_str(), bundle.ca_cert.as_str()]),
            both
        );
        assert!(both.starts_with(&ca_bundle_pem([other.ca_cert.as_str()])));
        assert_eq!(ca_bundle_pem(["no certificate here"]), "");
    }

    #[test]
    fn the_previous_ca_round_trips_through_the_secret_and_a_rotation_request_is_cleared() {
        let mut bundle = CertBundle::generate(&names(), NOW).unwrap();
        bundle.rotate_ca(&names(), NOW).unwrap();
        let mut secret = bundle.to_secret("certs", "ns");
        assert_eq!(CertBundle::from_secret(&secret).unwrap(), bundle);
        secret
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(keys::ROTATE_CA.into(), "now".into());
        assert!(rotation_requested(&secret));
        bundle.prune_previous_ca(NOW + CA_OVERLAP_SECONDS);
        let written = bundle.fill_secret(&secret);
        assert!(!rotation_requested(&written));
        let annotations = written.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(keys::CA_PREVIOUS_UNTIL));
        assert!(!written.data.unwrap().contains_key(PREVIOUS_CA_KEY));
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
