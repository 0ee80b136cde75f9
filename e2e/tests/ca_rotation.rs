//! Self-managed CA rotation under load: an operator asks for a new CA (the Secret's `healthbridge.io/rotate-ca`
//! annotation) while admissions keep coming; the caBundle carries the old and the new CA, every replica switches
//! to a certificate of the new one, and not one admission goes uninjected.
//! (Its own test binary: it replaces the CA the other tests' admissions depend on.)

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use healthbridge_e2e::Scenario;
use healthbridge_e2e::admission::{AdmissionLoop, admit_once, ensure_all_injected};
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::webhook::{RELEASE, fingerprint, served_by_each_pod};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

/// The self-managed certificate Secret (`<fullname>-tls`).
const CERT_SECRET: &str = "healthbridge-tls";
/// Admissions the rotation must see at least, so "none failed" cannot be true of an empty loop.
const MIN_ADMISSIONS: usize = 40;
/// Admissions made one after another once every replica serves the new certificate.
const AFTER_SWITCH: usize = 40;

fn key(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|value| value.0.clone())
}

/// The base64 bodies of the certificates of a PEM text, whitespace removed: what "carries this CA" compares.
fn certificate_bodies(pem: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(pem)
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .map(|body| body.chars().filter(|c| !c.is_whitespace()).collect())
        .collect()
}

async fn ca_bundles(s: &Scenario) -> anyhow::Result<Vec<Vec<String>>> {
    let configs: Api<MutatingWebhookConfiguration> = Api::all(s.cluster.client.clone());
    let config = configs.get(RELEASE).await?;
    Ok(config
        .webhooks
        .unwrap_or_default()
        .iter()
        .map(|webhook| {
            certificate_bodies(
                &webhook
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .map(|b| b.0.clone())
                    .unwrap_or_default(),
            )
        })
        .collect())
}

async fn rotating_the_ca_under_load_fails_no_admission(s: &Scenario) -> anyhow::Result<()> {
    let cluster = &s.cluster;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.release_namespace);
    let before = secrets.get(CERT_SECRET).await?;
    let old_ca = key(&before, "ca.crt")
        .context("the self-managed Secret has no ca.crt: is the default install in place?")?;
    let server_name = format!("{RELEASE}.{}.svc", cluster.release_namespace);

    let admitting = AdmissionLoop::start(s.api(), "rotation", 6000);
    let started = Instant::now();
    cluster.kubectl(&[
        "annotate",
        "--overwrite",
        "-n",
        &cluster.release_namespace,
        "secret",
        CERT_SECRET,
        "healthbridge.io/rotate-ca=e2e",
    ])?;

    let outcome = async {
        let rotated = poll_until(
            "the webhook to replace the CA",
            Duration::from_secs(60),
            || async {
                let secret = secrets.get(CERT_SECRET).await?;
                Ok(key(&secret, "ca.crt")
                    .filter(|ca| *ca != old_ca)
                    .map(|_| secret))
            },
        )
        .await?;
        let new_ca = key(&rotated, "ca.crt").unwrap_or_default();
        ensure!(
            key(&rotated, "ca-previous.crt").as_deref() == Some(old_ca.as_slice()),
            "the rotated Secret does not keep the old CA as ca-previous.crt"
        );
        let (old_body, new_body) = (certificate_bodies(&old_ca), certificate_bodies(&new_ca));
        let both: Vec<String> = new_body.iter().chain(old_body.iter()).cloned().collect();
        poll_until(
            "every caBundle to carry the new CA, then the old",
            Duration::from_secs(60),
            || async {
                let bundles = ca_bundles(s).await?;
                Ok((!bundles.is_empty() && bundles.iter().all(|b| *b == both)).then_some(()))
            },
        )
        .await?;
        let new_leaf = fingerprint(&key(&rotated, "tls.crt").unwrap_or_default())?;
        poll_until(
            "every replica to serve the new certificate",
            Duration::from_secs(90),
            || async {
                let served = served_by_each_pod(cluster, &server_name).await?;
                Ok(
                    (!served.is_empty() && served.iter().all(|(_, f)| *f == new_leaf))
                        .then_some(served),
                )
            },
        )
        .await?;
        eprintln!(
            "CA rotation: every replica serves the new certificate {:?} after the request",
            started.elapsed()
        );
        let mut after = Vec::new();
        for n in 0..AFTER_SWITCH {
            after.push(admit_once(&s.api(), &format!("switched-{n}")).await);
        }
        ensure_all_injected(&after, AFTER_SWITCH, "the admissions after the switch")
    }
    .await;
    let admissions = admitting.stop().await?;
    outcome?;
    ensure_all_injected(&admissions, MIN_ADMISSIONS, "the CA rotation")
}

#[tokio::test]
async fn a_ca_rotation_under_load_keeps_every_admission_injected() -> anyhow::Result<()> {
    Scenario::run("ca-rotation", |s| async move {
        rotating_the_ca_under_load_fails_no_admission(&s).await
    })
    .await
}
