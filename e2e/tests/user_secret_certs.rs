//! The chart's user-provided certificate mode (`certs.mode=secret`): a CA and serving certificate made by the test,
//! in a Secret of its own, admit a pod; rotating the Secret's certificate under a steady admission load fails no
//! admission and every replica serves the new certificate soon after (kubelet's Secret propagation plus the
//! webhook's `--tls-reload-interval`). The default install is put back afterwards, also on failure.
//! (Its own test binary: it reinstalls the release the other tests use.)

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use healthbridge_e2e::admission::{AdmissionLoop, admit_once, ensure_all_injected};
use healthbridge_e2e::fixtures::has_agent;
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::webhook::{
    RELEASE, RestoreInstallOnDrop, fingerprint, install_with, served_by_each_pod,
    wait_until_injecting,
};
use healthbridge_e2e::{Scenario, demo_pod};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

/// The test's Secret, in the release namespace.
const USER_SECRET: &str = "healthbridge-e2e-user-tls";
/// Kubelet updates a mounted Secret within its sync period (1 min by default) plus its cache's time to live;
/// the webhook re-reads the files every 10 s. With room for a loaded machine.
const NEW_CERT_SERVED_WITHIN: Duration = Duration::from_secs(150);
const MIN_ADMISSIONS: usize = 40;
const AFTER_SWITCH: usize = 40;

/// A test CA and serving certificates it signs for the webhook Service's names.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    dns_names: Vec<String>,
}

impl TestCa {
    fn new(namespace: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "healthbridge e2e user CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
            dns_names: vec![
                format!("{RELEASE}.{namespace}.svc"),
                format!("{RELEASE}.{namespace}.svc.cluster.local"),
            ],
        })
    }

    /// A new serving certificate and key (PEM), each call with a key of its own.
    fn serving_cert(&self) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::new(self.dns_names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, self.dns_names[0].clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn tls_data((cert, key): &(String, String)) -> serde_json::Value {
    json!({
        "tls.crt": ByteString(cert.as_bytes().to_vec()),
        "tls.key": ByteString(key.as_bytes().to_vec()),
    })
}

async fn every_replica_serves(
    s: &Scenario,
    server_name: &str,
    wanted: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    poll_until(
        "every replica to serve the wanted certificate",
        timeout,
        || async {
            let served = served_by_each_pod(&s.cluster, server_name).await?;
            Ok((!served.is_empty() && served.iter().all(|(_, f)| f == wanted)).then_some(()))
        },
    )
    .await
}

async fn the_secret_mode_admits_and_rotates_without_a_failed_admission(
    s: &Scenario,
) -> anyhow::Result<()> {
    let cluster = &s.cluster;
    let namespace = cluster.release_namespace.clone();
    let server_name = format!("{RELEASE}.{namespace}.svc");
    let ca = TestCa::new(&namespace)?;
    let first = ca.serving_cert()?;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let _ = secrets.delete(USER_SECRET, &DeleteParams::default()).await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": { "name": USER_SECRET, "namespace": namespace },
        "data": tls_data(&first),
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;

    let ca_file = tempfile::NamedTempFile::new()?;
    std::fs::write(ca_file.path(), &ca.pem)?;
    let ca_path = ca_file
        .path()
        .to_str()
        .context("temporary path is not UTF-8")?;
    install_with(
        cluster,
        &[
            "--set",
            "certs.mode=secret",
            "--set",
            &format!("certs.secretName={USER_SECRET}"),
            "--set-file",
            &format!("certs.caBundle={ca_path}"),
        ],
    )?;
    wait_until_injecting(&s.api(), Duration::from_secs(120)).await?;
    every_replica_serves(
        s,
        &server_name,
        &fingerprint(first.0.as_bytes())?,
        Duration::from_secs(60),
    )
    .await?;

    // A real pod, created and running with the agent, admitted through the user's certificate.
    let pod = s
        .create_pod(&demo_pod("through-user-secret").opted_in())
        .await?;
    ensure!(
        has_agent(&pod),
        "the pod created in secret mode has no agent"
    );
    s.wait_for_ready_pod("app=through-user-secret", Duration::from_secs(120))
        .await?;

    let second = ca.serving_cert()?;
    let wanted = fingerprint(second.0.as_bytes())?;
    let admitting = AdmissionLoop::start(s.api(), "user-rotation", 8000);
    let started = Instant::now();
    let outcome = async {
        secrets
            .patch(
                USER_SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": tls_data(&second) })),
            )
            .await?;
        every_replica_serves(s, &server_name, &wanted, NEW_CERT_SERVED_WITHIN).await?;
        eprintln!(
            "secret mode: every replica serves the rotated certificate {:?} after the Secret changed",
            started.elapsed()
        );
        let mut after = Vec::new();
        for n in 0..AFTER_SWITCH {
            after.push(admit_once(&s.api(), &format!("user-switched-{n}")).await);
        }
        ensure_all_injected(&after, AFTER_SWITCH, "the admissions after the switch")
    }
    .await;
    let admissions = admitting.stop().await?;
    outcome?;
    ensure_all_injected(&admissions, MIN_ADMISSIONS, "the Secret's rotation")
}

#[tokio::test]
async fn a_user_provided_secret_admits_pods_and_rotates_under_load() -> anyhow::Result<()> {
    Scenario::run("user-secret", |s| async move {
        let guard = RestoreInstallOnDrop::new(s.cluster.clone());
        let outcome = the_secret_mode_admits_and_rotates_without_a_failed_admission(&s).await;
        let restored = guard.restore();
        let secrets: Api<Secret> =
            Api::namespaced(s.cluster.client.clone(), &s.cluster.release_namespace);
        let _ = secrets.delete(USER_SECRET, &DeleteParams::default()).await;
        outcome?;
        restored?;
        // The default install injects again before the next test binary runs.
        wait_until_injecting(&s.api(), Duration::from_secs(120)).await
    })
    .await
}
