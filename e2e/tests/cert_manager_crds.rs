//! The chart's cert-manager mode against cert-manager's real CustomResourceDefinitions (from the cert-manager Go
//! module, see e2e/cert-manager-crds): the Certificate and Issuer the chart renders are accepted by the API
//! server's schema validation (a server-side dry-run apply), and an invalid Certificate is not, so the check can fail.
//! cert-manager itself does not run here.

use std::process::Command;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use healthbridge_e2e::fixtures::repo_path;
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::webhook::{RELEASE, chart};
use healthbridge_e2e::{Cluster, Scenario};

const CRDS: [&str; 4] = [
    "certificates.cert-manager.io",
    "issuers.cert-manager.io",
    "clusterissuers.cert-manager.io",
    "certificaterequests.cert-manager.io",
];

fn crd_dir() -> anyhow::Result<String> {
    let output = Command::new(repo_path("e2e/cert-manager-crds"))
        .output()
        .context("running e2e/cert-manager-crds")?;
    if !output.status.success() {
        bail!(
            "e2e/cert-manager-crds failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The documents of `helm template` output whose kind is one of `kinds`.
fn documents_of_kind(rendered: &str, kinds: &[&str]) -> Vec<String> {
    rendered
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|line| kinds.iter().any(|kind| line == format!("kind: {kind}")))
        })
        .map(|doc| doc.trim().to_owned())
        .collect()
}

/// `kubectl apply --server-side --dry-run=server` of `yaml`: its output, or the API server's refusal.
fn dry_run_apply(cluster: &Cluster, yaml: &str) -> anyhow::Result<String> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), yaml)?;
    let path = file
        .path()
        .to_str()
        .context("temporary path is not UTF-8")?;
    cluster.kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=healthbridge-e2e",
        "-n",
        &cluster.release_namespace,
        "-f",
        path,
    ])
}

/// What `helm template` renders in cert-manager mode, for the cluster's Kubernetes version (helm template does
/// not ask the cluster, and its default version is below the chart's kubeVersion).
async fn rendered_cert_manager_objects(
    cluster: &Cluster,
    extra: &[&str],
) -> anyhow::Result<String> {
    let chart = chart()?;
    let version = cluster.client.apiserver_version().await?.git_version;
    let mut args = vec![
        "template",
        RELEASE,
        &chart,
        "--namespace",
        &cluster.release_namespace,
        "--kube-version",
        &version,
        "--set",
        "certs.mode=cert-manager",
    ];
    args.extend_from_slice(extra);
    let rendered = cluster.helm(&args)?;
    Ok(documents_of_kind(&rendered, &["Certificate", "Issuer"]).join("\n---\n"))
}

async fn the_charts_objects_pass_cert_managers_schemas(cluster: &Cluster) -> anyhow::Result<()> {
    let dir = crd_dir()?;
    cluster.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=healthbridge-e2e",
        "-f",
        &dir,
    ])?;
    // Polled, not `kubectl wait`: that fails on a CRD the API server has not given conditions yet.
    for crd in CRDS {
        poll_until(
            &format!("CRD {crd} to be Established"),
            Duration::from_secs(60),
            || async {
                let established = cluster.kubectl(&[
                    "get",
                    "crd",
                    crd,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ])?;
                Ok((established.trim() == "True").then_some(()))
            },
        )
        .await?;
    }

    // The default: a self-signed Issuer and a Certificate it signs.
    let objects = rendered_cert_manager_objects(cluster, &[]).await?;
    ensure!(
        objects.contains("kind: Issuer") && objects.contains("kind: Certificate"),
        "helm template in cert-manager mode rendered no Issuer and Certificate:\n{objects}"
    );
    let applied = dry_run_apply(cluster, &objects)?;
    eprintln!("{applied}");
    ensure!(
        applied.contains(&format!(
            "certificate.cert-manager.io/{RELEASE} serverside-applied"
        )) && applied.contains(&format!(
            "issuer.cert-manager.io/{RELEASE}-selfsigned serverside-applied"
        )),
        "the chart's Certificate and Issuer were not both accepted: {applied}"
    );

    // With the operator's ClusterIssuer: the Certificate alone, referring to it.
    let objects = rendered_cert_manager_objects(
        cluster,
        &[
            "--set",
            "certs.certManager.issuerRef.name=company-ca",
            "--set",
            "certs.certManager.issuerRef.kind=ClusterIssuer",
            "--set",
            "certs.certManager.issuerRef.group=cert-manager.io",
        ],
    )
    .await?;
    ensure!(
        !objects.contains("kind: Issuer"),
        "an issuerRef still renders the self-signed Issuer"
    );
    let applied = dry_run_apply(cluster, &objects)?;
    ensure!(
        applied.contains(&format!(
            "certificate.cert-manager.io/{RELEASE} serverside-applied"
        )),
        "the Certificate with an issuerRef was not accepted: {applied}"
    );

    // The schemas are really enforced: a private key algorithm cert-manager does not know is refused.
    let broken = objects.replace("algorithm: ECDSA", "algorithm: DSA");
    ensure!(
        broken != objects,
        "the rendered Certificate has no ECDSA private key to break"
    );
    match dry_run_apply(cluster, &broken) {
        Ok(out) => bail!("a Certificate with privateKey.algorithm DSA was accepted: {out}"),
        Err(error) => ensure!(
            format!("{error:#}").contains("algorithm"),
            "the broken Certificate was refused for another reason: {error:#}"
        ),
    }
    Ok(())
}

#[tokio::test]
async fn the_cert_manager_mode_renders_objects_that_cert_managers_crds_accept() -> anyhow::Result<()>
{
    Scenario::run("cert-manager", |s| async move {
        let outcome = the_charts_objects_pass_cert_managers_schemas(&s.cluster).await;
        // The CRDs go again (no objects were created: every apply was a dry run).
        let crds: Vec<String> = CRDS.iter().map(|crd| format!("crd/{crd}")).collect();
        let mut delete = vec![
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=60s",
        ];
        delete.extend(crds.iter().map(String::as_str));
        let removed = s.cluster.kubectl(&delete);
        outcome?;
        removed?;
        Ok(())
    })
    .await
}
